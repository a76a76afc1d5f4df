/* JSON log lines in Cortex's shape, and where they go.  Pure C: both the Python-visible
 * logger (logger.c) and the access log of the server threads (server.c) build lines here,
 * so the two can never disagree on the format. */
#ifndef CX_LOG_H
#define CX_LOG_H

#include <stddef.h>

#include "buf.h"

/* Python's logging level numbers. */
enum { CX_LOG_DEBUG = 10, CX_LOG_INFO = 20, CX_LOG_WARNING = 30, CX_LOG_ERROR = 40 };

/* Every API served in this process owns a log slot (its level and where its lines go);
 * slots are numbered by the Python side, unique across all servers of the process. */
#define CX_LOG_MAX_SLOTS 256

/* Where lines go by default (a file descriptor; stdout at first). */
void cx_log_set_fd(int fd);
/* Where one slot's lines go; -1 = the default fd. */
void cx_log_set_slot_fd(int slot, int fd);
/* Default level, used outside any API (start-up) and for slots without their own. */
void cx_log_set_default_level(int level);
/* A slot's level; 0 = the default. */
void cx_log_set_slot_level(int slot, int level);
/* The slot whose code runs on this thread (-1 for none): its level and fd apply. */
void cx_log_set_current_slot(int slot);
int cx_log_current_slot(void);
/* 1 when a record of this level is written for this slot (-1: this thread's). */
int cx_log_enabled(int slot, int level);

/* Opens a line: {"asctime": "...", "levelname": "...", "message": "...", "process": N
 * `created` is seconds since the epoch (asctime is local time with milliseconds, like
 * logging's default).  message is UTF-8 of length message_len. */
int cx_log_begin(cx_buf *line, double created, const char *levelname, const char *message,
                 size_t message_len, long pid);
/* Appends , "key": to the open line; the caller appends the JSON value next. */
int cx_log_key(cx_buf *line, const char *key, size_t key_len);
/* Appends s (UTF-8) as a JSON string with ensure_ascii escaping, as json.dumps does. */
int cx_log_json_string(cx_buf *line, const char *s, size_t len);
/* Closes the line with "}\n". */
int cx_log_end(cx_buf *line);
/* Writes a whole line with one lock held, so lines from threads never interleave; to the
 * fd of this thread's slot. */
void cx_log_write(const cx_buf *line);
/* The same, to the fd of the given slot (-1: the default). */
void cx_log_write_slot(int slot, const cx_buf *line);

#endif
