#include "alloc_count.h"

#ifdef CORTEX_ALLOC_COUNTERS

#include <stdatomic.h>

/* allocations happen on the server's I/O thread and on worker threads alike */
static atomic_long live[CX_ALLOC_KINDS];

static const char *const names[CX_ALLOC_KINDS] = {
    [CX_ALLOC_BUF] = "buf",
    [CX_ALLOC_BODY] = "body",
    [CX_ALLOC_REQUEST] = "request",
    [CX_ALLOC_REQUEST_FIELD] = "request_field",
    [CX_ALLOC_KV] = "kv",
    [CX_ALLOC_CONNECTION] = "connection",
    [CX_ALLOC_SERVER] = "server",
    [CX_ALLOC_HANDLERS] = "handlers",
    [CX_ALLOC_SCRATCH] = "scratch",
};

void cx_alloc_note(cx_alloc_kind kind, long delta)
{
    atomic_fetch_add_explicit(&live[kind], delta, memory_order_relaxed);
}

long cx_alloc_live(cx_alloc_kind kind)
{
    return atomic_load_explicit(&live[kind], memory_order_relaxed);
}

const char *cx_alloc_kind_name(cx_alloc_kind kind)
{
    return names[kind];
}

#else

/* ISO C wants a translation unit to declare something */
typedef int cx_alloc_count_unused;

#endif
