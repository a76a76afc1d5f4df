/* Live-allocation counters for debug builds (setup.py with CORTEX_DEBUG_ALLOC=1 defines
 * CORTEX_ALLOC_COUNTERS): every allocation the C core makes is counted up under its kind
 * when made and down when freed or handed to libmicrohttpd, which frees it itself; a test
 * checks every count is back where it was once a server has come and gone.  In other builds
 * the macros are the plain calls, so the counted code is the code that ships. */
#ifndef CX_ALLOC_COUNT_H
#define CX_ALLOC_COUNT_H

#include <stdlib.h>
#include <string.h>

typedef enum {
    CX_ALLOC_BUF,          /* a cx_buf's storage (buf.c) */
    CX_ALLOC_BODY,         /* response bodies: copies, stolen buffers, until libmicrohttpd has them */
    CX_ALLOC_REQUEST,      /* cx_request itself */
    CX_ALLOC_REQUEST_FIELD, /* a request's uri, content types */
    CX_ALLOC_KV,           /* header and query lists: the arrays and every key and value */
    CX_ALLOC_CONNECTION,   /* server.c's record of an open connection */
    CX_ALLOC_SERVER,       /* cx_server and its copy of the API configs */
    CX_ALLOC_HANDLERS,     /* the Server object's handler and config arrays (server_type.c) */
    CX_ALLOC_SCRATCH,      /* short-lived work arrays: JSON codec buffers, worker batches */
    CX_ALLOC_KINDS
} cx_alloc_kind;

#ifdef CORTEX_ALLOC_COUNTERS

void cx_alloc_note(cx_alloc_kind kind, long delta);
long cx_alloc_live(cx_alloc_kind kind);
const char *cx_alloc_kind_name(cx_alloc_kind kind);

/* the result, counted when the allocation succeeded */
static inline void *cx_alloc_counted(cx_alloc_kind kind, void *p)
{
    if (p != NULL)
        cx_alloc_note(kind, 1);
    return p;
}

/* realloc: a new block only when there was none before (and the call succeeded) */
static inline void *cx_alloc_recounted(cx_alloc_kind kind, int was_null, void *p)
{
    if (was_null && p != NULL)
        cx_alloc_note(kind, 1);
    return p;
}

/* free(NULL) frees nothing, so counts nothing */
static inline void *cx_alloc_uncounted(cx_alloc_kind kind, void *p)
{
    if (p != NULL)
        cx_alloc_note(kind, -1);
    return p;
}

#define CX_MALLOC(kind, n) cx_alloc_counted((kind), malloc(n))
#define CX_CALLOC(kind, n, size) cx_alloc_counted((kind), calloc((n), (size)))
#define CX_REALLOC(kind, p, n) cx_alloc_recounted((kind), (p) == NULL, realloc((p), (n)))
#define CX_STRDUP(kind, s) ((char *)cx_alloc_counted((kind), strdup(s)))
#define CX_FREE(kind, p) free(cx_alloc_uncounted((kind), (void *)(p)))
/* memory that stops being ours without being freed here (libmicrohttpd frees it) */
#define CX_HANDOFF(kind, p) ((void)cx_alloc_uncounted((kind), (void *)(p)))
/* memory that changes hands inside the core: a stolen cx_buf becomes a response body */
#define CX_RETAG(from, to, p) ((void)cx_alloc_counted((to), cx_alloc_uncounted((from), (void *)(p))))
#ifdef Py_PYTHON_H
#define CX_PYMEM_MALLOC(kind, n) cx_alloc_counted((kind), PyMem_Malloc(n))
#define CX_PYMEM_CALLOC(kind, n, size) cx_alloc_counted((kind), PyMem_Calloc((n), (size)))
#define CX_PYMEM_FREE(kind, p) PyMem_Free(cx_alloc_uncounted((kind), (void *)(p)))
#endif

#else

#define CX_MALLOC(kind, n) malloc(n)
#define CX_CALLOC(kind, n, size) calloc((n), (size))
#define CX_REALLOC(kind, p, n) realloc((p), (n))
#define CX_STRDUP(kind, s) strdup(s)
#define CX_FREE(kind, p) free((void *)(p))
#define CX_HANDOFF(kind, p) ((void)0)
#define CX_RETAG(from, to, p) ((void)0)
#ifdef Py_PYTHON_H
#define CX_PYMEM_MALLOC(kind, n) PyMem_Malloc(n)
#define CX_PYMEM_CALLOC(kind, n, size) PyMem_Calloc((n), (size))
#define CX_PYMEM_FREE(kind, p) PyMem_Free((void *)(p))
#endif

#endif
#endif
