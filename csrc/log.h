/* JSON log lines in Cortex's shape, and where they go.  Pure C: both the Python-visible
 * logger (logger.c) and the access log of the server threads (server.c) build lines here,
 * so the two can never disagree on the format. */
#ifndef CX_LOG_H
#define CX_LOG_H

#include <stddef.h>

#include "buf.h"

/* Python's logging level numbers. */
enum { CX_LOG_DEBUG = 10, CX_LOG_INFO = 20, CX_LOG_WARNING = 30, CX_LOG_ERROR = 40 };

#define CX_LOG_MAX_APIS 256

/* Where lines go (a file descriptor; stdout by default).  Not thread-safe to change while
 * serving: set it before. */
void cx_log_set_fd(int fd);
/* Default level, used outside any API (start-up) and for APIs without their own. */
void cx_log_set_default_level(int level);
/* Per-API level; api is the index in the served config. */
void cx_log_set_api_level(int api, int level);
/* The API whose code runs on this thread (-1 for none); decides which level applies. */
void cx_log_set_current_api(int api);
int cx_log_current_api(void);
/* 1 when a record of this level for this API (-1: the current one) is written. */
int cx_log_enabled(int api, int level);

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
/* Writes a whole line with one lock held, so lines from threads never interleave. */
void cx_log_write(const cx_buf *line);

#endif
