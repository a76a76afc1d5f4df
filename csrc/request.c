#include "request.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "alloc_count.h"

static char *copy_bytes(const char *s, size_t n)
{
    char *copy = CX_MALLOC(CX_ALLOC_KV, n + 1);
    if (copy) {
        memcpy(copy, s, n);
        copy[n] = '\0';
    }
    return copy;
}

int cx_kv_list_add(cx_kv_list *list, const char *key, size_t key_len, const char *value,
                   size_t value_len)
{
    if (list->len == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 8;
        cx_kv *items = CX_REALLOC(CX_ALLOC_KV, list->items, cap * sizeof *items);
        if (items == NULL)
            return -1;
        list->items = items;
        list->cap = cap;
    }
    cx_kv *kv = &list->items[list->len];
    kv->key = copy_bytes(key, key_len);
    kv->value = copy_bytes(value, value_len);
    if (kv->key == NULL || kv->value == NULL) {
        CX_FREE(CX_ALLOC_KV, kv->key);
        CX_FREE(CX_ALLOC_KV, kv->value);
        return -1;
    }
    kv->key_len = key_len;
    kv->value_len = value_len;
    list->len++;
    return 0;
}

void cx_kv_list_free(cx_kv_list *list)
{
    for (size_t i = 0; i < list->len; i++) {
        CX_FREE(CX_ALLOC_KV, list->items[i].key);
        CX_FREE(CX_ALLOC_KV, list->items[i].value);
    }
    CX_FREE(CX_ALLOC_KV, list->items);
    list->items = NULL;
    list->len = list->cap = 0;
}

cx_request *cx_request_new(void)
{
    cx_request *req = CX_CALLOC(CX_ALLOC_REQUEST, 1, sizeof *req);
    if (req) {
        req->api = -1;
        req->started = cx_monotonic_seconds();
    }
    return req;
}

void cx_request_free(cx_request *req)
{
    if (req == NULL)
        return;
    CX_FREE(CX_ALLOC_REQUEST_FIELD, req->uri);
    CX_FREE(CX_ALLOC_REQUEST_FIELD, req->content_type);
    cx_buf_free(&req->body);
    cx_kv_list_free(&req->headers);
    cx_kv_list_free(&req->query);
    CX_FREE(CX_ALLOC_BODY, req->response_body);
    CX_FREE(CX_ALLOC_REQUEST_FIELD, req->response_type);
    cx_kv_list_free(&req->response_headers);
    CX_FREE(CX_ALLOC_REQUEST, req);
}

/* getrandom() per request would be a syscall each time; a per-thread pool amortises it. */
static _Thread_local unsigned char random_pool[16 * 64];
static _Thread_local size_t random_left;

static void random_bytes16(unsigned char out[16])
{
    if (random_left < 16) {
        size_t got = 0;
        while (got < sizeof random_pool) {
            ssize_t n = getrandom(random_pool + got, sizeof random_pool - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got < sizeof random_pool) {
            /* no entropy source: still unique enough per process for an id */
            unsigned long long seed = (unsigned long long)time(NULL) ^ (unsigned long long)(size_t)out;
            for (size_t i = got; i < sizeof random_pool; i++) {
                seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
                random_pool[i] = (unsigned char)(seed >> 56);
            }
        }
        random_left = sizeof random_pool;
    }
    random_left -= 16;
    memcpy(out, random_pool + random_left, 16);
}

void cx_request_id_new(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    random_bytes16(b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 0xf];
    }
    out[o] = '\0';
}

int cx_request_id_acceptable(const char *value)
{
    if (value == NULL)
        return 0;
    size_t n = 0;
    for (; value[n]; n++) {
        unsigned char c = (unsigned char)value[n];
        if (c < 0x20 || c > 0x7e || n >= CX_REQUEST_ID_MAX)
            return 0;
    }
    return n >= 1;
}

double cx_monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double cx_wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
