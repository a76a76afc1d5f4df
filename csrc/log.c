#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Process-wide on purpose: there is one stdout and one logger per process. */
static _Atomic int log_fd = 1;
static _Atomic int default_level = CX_LOG_INFO;
static _Atomic int slot_levels[CX_LOG_MAX_SLOTS]; /* 0 = use the default */
static _Atomic int slot_fds[CX_LOG_MAX_SLOTS];    /* 0 = unset (fd 0 is never a log sink) */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int current_slot = -1;

static int in_range(int slot)
{
    return slot >= 0 && slot < CX_LOG_MAX_SLOTS;
}

void cx_log_set_fd(int fd)
{
    log_fd = fd;
}

void cx_log_set_slot_fd(int slot, int fd)
{
    if (in_range(slot))
        slot_fds[slot] = fd < 0 ? 0 : fd;
}

void cx_log_set_default_level(int level)
{
    default_level = level;
}

void cx_log_set_slot_level(int slot, int level)
{
    if (in_range(slot))
        slot_levels[slot] = level;
}

void cx_log_set_current_slot(int slot)
{
    current_slot = slot;
}

int cx_log_current_slot(void)
{
    return current_slot;
}

int cx_log_enabled(int slot, int level)
{
    if (slot < 0)
        slot = current_slot;
    int threshold = default_level;
    if (in_range(slot) && slot_levels[slot] != 0)
        threshold = slot_levels[slot];
    return level >= threshold;
}

static const char hex_digits[] = "0123456789abcdef";

static int append_u_escape(cx_buf *line, unsigned cp)
{
    char esc[6] = {'\\', 'u', hex_digits[(cp >> 12) & 0xf], hex_digits[(cp >> 8) & 0xf],
                   hex_digits[(cp >> 4) & 0xf], hex_digits[cp & 0xf]};
    return cx_buf_append(line, esc, sizeof esc);
}

/* Decodes one UTF-8 sequence at s[0..len); returns its length, or 0 when invalid (the byte
 * is then written as U+FFFD, like Python's "replace" would show it). */
static size_t utf8_decode(const unsigned char *s, size_t len, unsigned *cp)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        n = 2, min = 0x80, c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, min = 0x800, c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, min = 0x10000, c &= 0x07;
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

int cx_log_json_string(cx_buf *line, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    if (cx_buf_append_char(line, '"') != 0)
        return -1;
    size_t i = 0;
    while (i < len) {
        /* copy the longest run that needs no escaping in one go */
        size_t run = i;
        while (run < len && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i) {
            if (cx_buf_append(line, s + i, run - i) != 0)
                return -1;
            i = run;
            continue;
        }
        unsigned char c = s[i];
        const char *short_esc = NULL;
        switch (c) {
        case '"': short_esc = "\\\""; break;
        case '\\': short_esc = "\\\\"; break;
        case '\n': short_esc = "\\n"; break;
        case '\r': short_esc = "\\r"; break;
        case '\t': short_esc = "\\t"; break;
        case '\b': short_esc = "\\b"; break;
        case '\f': short_esc = "\\f"; break;
        default: break;
        }
        int rc;
        if (short_esc) {
            rc = cx_buf_append(line, short_esc, 2);
            i++;
        } else {
            unsigned cp;
            size_t n = utf8_decode(s + i, len - i, &cp);
            if (n == 0) {
                cp = 0xfffd;
                n = 1;
            }
            if (cp >= 0x10000) {
                cp -= 0x10000;
                rc = append_u_escape(line, 0xd800 | (cp >> 10));
                if (rc == 0)
                    rc = append_u_escape(line, 0xdc00 | (cp & 0x3ff));
            } else {
                rc = append_u_escape(line, cp);
            }
            i += n;
        }
        if (rc != 0)
            return -1;
    }
    return cx_buf_append_char(line, '"');
}

int cx_log_key(cx_buf *line, const char *key, size_t key_len)
{
    if (cx_buf_append(line, ", ", 2) != 0 || cx_log_json_string(line, key, key_len) != 0)
        return -1;
    return cx_buf_append(line, ": ", 2);
}

int cx_log_begin(cx_buf *line, double created, const char *levelname, const char *message,
                 size_t message_len, long pid)
{
    time_t seconds = (time_t)created;
    int millis = (int)((created - (double)seconds) * 1000.0);
    if (millis > 999)
        millis = 999;
    if (millis < 0)
        millis = 0;
    struct tm tm;
    localtime_r(&seconds, &tm);
    char stamp[64];
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ",%03d", millis);
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%ld", pid);

    if (cx_buf_append_str(line, "{\"asctime\": \"") != 0 || cx_buf_append_str(line, stamp) != 0
        || cx_buf_append_str(line, "\", \"levelname\": ") != 0
        || cx_log_json_string(line, levelname, strlen(levelname)) != 0
        || cx_buf_append_str(line, ", \"message\": ") != 0
        || cx_log_json_string(line, message, message_len) != 0
        || cx_buf_append_str(line, ", \"process\": ") != 0 || cx_buf_append_str(line, pid_text) != 0)
        return -1;
    return 0;
}

int cx_log_end(cx_buf *line)
{
    return cx_buf_append(line, "}\n", 2);
}

void cx_log_write(const cx_buf *line)
{
    cx_log_write_slot(current_slot, line);
}

void cx_log_write_slot(int slot, const cx_buf *line)
{
    int fd = in_range(slot) && slot_fds[slot] != 0 ? slot_fds[slot] : log_fd;
    pthread_mutex_lock(&write_lock);
    size_t done = 0;
    while (done < line->len) {
        ssize_t n = write(fd, line->data + done, line->len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break; /* a closed stdout must not take the server down */
        }
        done += (size_t)n;
    }
    pthread_mutex_unlock(&write_lock);
}
