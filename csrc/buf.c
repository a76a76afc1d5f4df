#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "alloc_count.h"

void cx_buf_init(cx_buf *buf, size_t limit)
{
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
    buf->limit = limit;
    buf->grow = NULL;
}

static int grow(cx_buf *buf, size_t needed)
{
    if (buf->grow != NULL)
        return buf->grow(buf, needed);
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap < needed) {
        if (cap > ((size_t)-1) / 2)
            return CX_BUF_NOMEM;
        cap *= 2;
    }
    char *data = CX_REALLOC(CX_ALLOC_BUF, buf->data, cap);
    if (data == NULL)
        return CX_BUF_NOMEM;
    buf->data = data;
    buf->cap = cap;
    return CX_BUF_OK;
}

int cx_buf_append(cx_buf *buf, const void *bytes, size_t n)
{
    if (n == 0)
        return CX_BUF_OK;
    if (buf->len + n < buf->len)
        return CX_BUF_NOMEM;
    if (buf->limit && buf->len + n > buf->limit)
        return CX_BUF_TOO_LARGE;
    /* keep one spare byte so callers may NUL-terminate without another realloc */
    if (buf->len + n + 1 > buf->cap) {
        int rc = grow(buf, buf->len + n + 1);
        if (rc != CX_BUF_OK)
            return rc;
    }
    memcpy(buf->data + buf->len, bytes, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
    return CX_BUF_OK;
}

int cx_buf_reserve(cx_buf *buf, size_t n)
{
    if (buf->len + n < buf->len)
        return CX_BUF_NOMEM;
    if (buf->limit && buf->len + n > buf->limit)
        return CX_BUF_TOO_LARGE;
    if (buf->len + n + 1 > buf->cap)
        return grow(buf, buf->len + n + 1);
    return CX_BUF_OK;
}

int cx_buf_append_str(cx_buf *buf, const char *s)
{
    return cx_buf_append(buf, s, strlen(s));
}

int cx_buf_append_char(cx_buf *buf, char c)
{
    return cx_buf_append(buf, &c, 1);
}

char *cx_buf_steal(cx_buf *buf, size_t *len)
{
    char *data = buf->data;
    CX_RETAG(CX_ALLOC_BUF, CX_ALLOC_BODY, data); /* what is stolen is always a response body */
    if (len)
        *len = buf->len;
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
    return data;
}

void cx_buf_free(cx_buf *buf)
{
    CX_FREE(CX_ALLOC_BUF, buf->data);
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
}
