/* Growable byte buffer with a hard cap, so a request body can never grow memory past
 * --max-body-size.  Pure C: no Python, no libmicrohttpd. */
#ifndef CX_BUF_H
#define CX_BUF_H

#include <stddef.h>

typedef struct cx_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t limit; /* 0 = no limit */
    /* NULL: data is ours (realloc).  Otherwise data lives in someone else's object and this
     * makes cap at least needed (CX_BUF_OK or CX_BUF_NOMEM), moving data as it must; such a
     * buffer is never stolen or freed through these functions. */
    int (*grow)(struct cx_buf *buf, size_t needed);
} cx_buf;

enum { CX_BUF_OK = 0, CX_BUF_NOMEM = -1, CX_BUF_TOO_LARGE = -2 };

/* Starts empty; owns nothing until the first append. */
void cx_buf_init(cx_buf *buf, size_t limit);
/* Appends n bytes; CX_BUF_TOO_LARGE leaves the buffer unchanged. */
int cx_buf_append(cx_buf *buf, const void *bytes, size_t n);
int cx_buf_append_str(cx_buf *buf, const char *s);
/* Makes room for n more bytes (and the spare one) without adding any, so a writer can
 * fill data + len directly and then add n to len.  Same errors as cx_buf_append. */
int cx_buf_reserve(cx_buf *buf, size_t n);
int cx_buf_append_char(cx_buf *buf, char c);
/* Hands the bytes to the caller (free() them); the buffer is empty afterwards. */
char *cx_buf_steal(cx_buf *buf, size_t *len);
void cx_buf_free(cx_buf *buf);

#endif
