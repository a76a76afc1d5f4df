#include "statsd.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"

#define DATAGRAM_MAX 1432 /* fits one Ethernet frame, as DogStatsD clients keep to */

/* Process-wide on purpose: one socket per process tree, inherited across fork(). */
static int statsd_fd = -1;

static int split_address(const char *addr, char *host, size_t host_cap, const char **port)
{
    const char *colon;
    size_t n;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        n = (size_t)(end - addr - 1);
        colon = end + 1;
        addr++;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return -1;
        n = (size_t)(colon - addr);
    }
    if (n == 0 || n >= host_cap || colon[1] == '\0')
        return -1;
    memcpy(host, addr, n);
    host[n] = '\0';
    *port = colon + 1;
    return 0;
}

void cx_statsd_open_from_env(void)
{
    char host[256];
    const char *port = "9125";
    const char *addr = getenv("CORTEX_STATSD_ADDR");
    const char *shown = addr;
    if (addr && addr[0]) {
        if (split_address(addr, host, sizeof host, &port) != 0) {
            cx_metrics_warn("CORTEX_STATSD_ADDR must be host:port: statsd is off", addr);
            return;
        }
    } else {
        const char *host_ip = getenv("HOST_IP");
        if (host_ip == NULL || host_ip[0] == '\0' || strlen(host_ip) >= sizeof host)
            return;
        snprintf(host, sizeof host, "%s", host_ip);
        shown = host_ip;
    }
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(host, port, &hints, &found) != 0 || found == NULL) {
        cx_metrics_warn("cannot resolve the statsd address: statsd is off", shown);
        return;
    }
    for (struct addrinfo *ai = found; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            statsd_fd = fd;
            break;
        }
        close(fd);
    }
    freeaddrinfo(found);
    if (statsd_fd < 0)
        cx_metrics_warn("cannot open a UDP socket to the statsd address: statsd is off", shown);
}

int cx_statsd_enabled(void)
{
    return statsd_fd >= 0;
}

static void append_value(char *out, size_t cap, double v)
{
    if (v == (double)(long long)v && v > -1e15 && v < 1e15)
        snprintf(out, cap, "%lld", (long long)v);
    else
        snprintf(out, cap, "%.15g", v);
}

void cx_statsd_send(const char *name, size_t name_len, double value, char type, const char *tags,
                    size_t tags_len)
{
    if (statsd_fd < 0)
        return;
    char datagram[DATAGRAM_MAX];
    char number[40];
    append_value(number, sizeof number, value);
    size_t n = 0;
    for (size_t i = 0; i < name_len && n < sizeof datagram; i++) {
        unsigned char c = (unsigned char)name[i];
        datagram[n++] = (c == ':' || c == '|' || c == '@' || c == '#' || c < 0x20) ? '_' : (char)c;
    }
    int rest = snprintf(datagram + n, sizeof datagram - n, ":%s|%c%s%.*s", number, type,
                        tags_len ? "|#" : "", (int)tags_len, tags ? tags : "");
    if (rest < 0 || n + (size_t)rest >= sizeof datagram)
        return; /* too long for one datagram: dropped, as a full network would */
    n += (size_t)rest;
    /* MSG_DONTWAIT: a full socket buffer drops the datagram instead of waiting */
    while (send(statsd_fd, datagram, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static int tag_byte_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
           || c == '-' || c == ':' || c == '/' || c == '.' || c >= 0x80;
}

static int append_normalised(cx_buf *tags, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (cx_buf_append_char(tags, tag_byte_ok((unsigned char)s[i]) ? s[i] : '_'))
            return -1;
    return 0;
}

int cx_statsd_tag_append(cx_buf *tags, const char *key, size_t key_len, const char *value,
                         size_t value_len)
{
    if ((tags->len && cx_buf_append_char(tags, ',')) || append_normalised(tags, key, key_len)
        || cx_buf_append_char(tags, ':') || append_normalised(tags, value, value_len))
        return -1;
    return 0;
}
