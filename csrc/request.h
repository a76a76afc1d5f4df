/* One HTTP request as the server hands it to a worker and gets it back.  Pure C: the
 * server threads fill the request half, a worker (bridge.c) fills the response half. */
#ifndef CX_REQUEST_H
#define CX_REQUEST_H

#include <stdatomic.h>
#include <stddef.h>

#include "buf.h"

typedef struct {
    char *key;
    char *value;
    size_t key_len;
    size_t value_len;
} cx_kv;

typedef struct {
    cx_kv *items;
    size_t len;
    size_t cap;
} cx_kv_list;

/* Copies both strings; 0 or -1 (out of memory). */
int cx_kv_list_add(cx_kv_list *list, const char *key, size_t key_len, const char *value,
                   size_t value_len);
void cx_kv_list_free(cx_kv_list *list);

typedef enum {
    CX_JOB_PREDICT = 0,      /* answer the request: the worker sets the response half */
    CX_JOB_POST_PREDICT = 1, /* the response is sent; run post_predict, then release */
    CX_JOB_STATUS = 2,       /* AsyncAPI GET <endpoint>/<id>: answered by the status callable */
    CX_JOB_CALL = 3          /* no connection: run the callable in post_state, then release */
} cx_job_kind;

#define CX_REQUEST_ID_MAX 128

/* Who answers a request handed to the workers: its worker, or the I/O thread with a 504
 * once the request timeout passes first.  Whoever moves `claim` off PENDING answers. */
enum { CX_CLAIM_PENDING = 0, CX_CLAIM_ANSWERED = 1, CX_CLAIM_TIMED_OUT = 2 };

typedef struct cx_request {
    struct cx_request *next; /* queue link, owned by the server */
    cx_job_kind job;
    int api; /* index into the served APIs, -1 when the request matched none */
    char method[16];
    char *uri;       /* path and query as received, NUL-terminated */
    size_t path_len; /* bytes of uri before '?' */
    char request_id[CX_REQUEST_ID_MAX + 1];
    char *content_type; /* NULL when absent */
    cx_buf body;
    cx_kv_list headers; /* filled only when the API's predictor asks for headers */
    cx_kv_list query;   /* filled only when it asks for query_params */
    double started;     /* CLOCK_MONOTONIC seconds at the first byte of headers */
    double queued;      /* CLOCK_MONOTONIC seconds when handed to the workers */

    /* the response half, set by the worker */
    int status;
    char *response_body; /* malloc'd, handed to libmicrohttpd */
    size_t response_len;
    char *response_type; /* malloc'd, or NULL for application/json */
    cx_kv_list response_headers;
    /* Python state kept for post_predict; the bridge owns it and clears it before release */
    void *post_state;

    /* server bookkeeping */
    void *connection;
    int stage;
    int counted_in_flight;
    int too_large;
    atomic_int claim;
    /* I/O thread only: the requests with the workers, walked for the request timeout */
    struct cx_request *held_prev, *held_next;
    int held;
} cx_request;

cx_request *cx_request_new(void);
/* Frees everything but post_state, which must already be NULL. */
void cx_request_free(cx_request *req);

/* A fresh UUID4 in canonical form into out (37 bytes with the NUL). */
void cx_request_id_new(char out[37]);
/* 1 when a client-sent X-Request-ID may be used as is: 1-128 printable ASCII characters. */
int cx_request_id_acceptable(const char *value);

double cx_monotonic_seconds(void);
double cx_wall_seconds(void);

#endif
