#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc_count.h"
#include "log.h"
#include "metrics.h"
#include "statsd.h"

enum {
    STAGE_NEW = 0,   /* headers seen, nothing decided */
    STAGE_NO_BODY,   /* a request without a body: decided at the next call */
    STAGE_RECEIVING, /* a POST to an API: collecting the body */
    STAGE_QUEUED,    /* suspended, with a worker or waiting for one */
    STAGE_DONE,      /* the worker set the response half; resumed */
    STAGE_ANSWERED,  /* a response was queued with libmicrohttpd */
    STAGE_TIMED_OUT, /* a stand-in for a request its worker did not answer in time: 504 */
};

/* Per-connection memory for the request line, headers and buffering. */
#define CONNECTION_MEMORY (16 * 1024)

/* Response-code classes counted per API for /metrics: 1XX..5XX. */
#define N_STATUS_CLASSES 5

/* Every open connection, so a drain can close the idle keep-alive ones at once:
 * libmicrohttpd has no call for that, but a shutdown() of the socket makes it close. */
typedef struct open_connection {
    struct open_connection *prev, *next;
    int fd;
    atomic_int busy; /* a request is being received or answered */
    /* I/O thread only: libmicrohttpd's timeout is per byte, so a client trickling its
     * headers would never time out; these give the headers a deadline of their own */
    double waiting_since; /* connected, or the last response finished */
    int headers_done;
    int cut;
    /* I/O thread only: the 504 stand-in for a timed-out request.  From then on the
     * connection's con_cls is stale (the worker frees that request), so the callbacks
     * look here first. */
    struct cx_request *timeout_reply;
} open_connection;

typedef struct {
    cx_api_config config; /* strings owned here */
    atomic_uint in_flight;
    /* this API's built-in series in the shared registry (metrics.c), resolved on first use;
     * a negative handle (built-in metrics off, registry full) makes every update a no-op */
    atomic_int metrics_resolved;
    atomic_int m_status[N_STATUS_CLASSES], m_latency, m_in_flight;
} api_state;

struct cx_server {
    struct MHD_Daemon *daemon;
    int listen_fd;
    unsigned port;
    size_t max_body;
    unsigned idle_timeout;
    double request_timeout;
    int realtime_io;
    cx_request *held_head; /* I/O thread only: requests with the workers (request timeout) */
    int access_log;
    long pid;
    size_t n_apis;
    api_state *apis;

    atomic_int ready;
    atomic_int draining;

    /* Our own I/O thread runs libmicrohttpd's loop, so we know when a round of events is
     * done: workers are woken once per round instead of once per request (each wake-up of
     * a thread on the same core is a context switch). */
    pthread_t io_thread;
    int io_started;
    int wake_fd;  /* eventfd: a worker resumed a connection, run a round now */
    int io_epoll; /* waits on libmicrohttpd's epoll fd and wake_fd */
    atomic_int io_stop;
    atomic_int wake_pending;     /* jobs were queued this round */
    atomic_int wake_owed;        /* a worker resumed connections without poking wake_fd yet */
    atomic_long queued_jobs;     /* length of the queue, readable without the lock */
    atomic_int quiesce_pending;  /* a drain began: stop listening, on the I/O thread */
    const volatile unsigned char *shared_ready; /* NULL without worker processes */

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t work_ready;
    pthread_cond_t drained;
    cx_request *queue_head;
    cx_request *queue_tail;
    int idle_workers;       /* workers waiting on work_ready: only then is a signal needed */
    /* atomics, so the per-request path takes the lock only to queue and dequeue */
    atomic_long in_flight;       /* requests accepted for an API and not yet finished */
    atomic_long held_by_workers; /* predict jobs queued or running: the daemon must outlive them */
    int stopping;
    double drain_deadline;  /* monotonic; 0 = none */
    open_connection *connections;
};

static const char GET_CONTENT_TYPE[] = "application/json";
static const char TEXT_PLAIN[] = "text/plain; charset=utf-8";

/* ---- responses ------------------------------------------------------------------------- */

static void add_common_headers(cx_server *s, struct MHD_Response *r, const cx_request *req,
                               unsigned status)
{
    MHD_add_response_header(r, "X-Request-ID", req->request_id);
    /* Cortex's front proxy added these to successful responses; browsers rely on them */
    if (status >= 200 && status < 300) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Credentials", "true");
    }
    if (atomic_load(&s->draining))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
}

static enum MHD_Result send_response(cx_server *s, struct MHD_Connection *conn, cx_request *req,
                                     unsigned status, const char *content_type, const char *body,
                                     size_t len, enum MHD_ResponseMemoryMode mode)
{
    if (mode == MHD_RESPMEM_MUST_FREE)
        CX_HANDOFF(CX_ALLOC_BODY, body); /* libmicrohttpd frees it, or we do below, uncounted */
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free((void *)body);
        return MHD_NO;
    }
    if (content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    add_common_headers(s, r, req, status);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, POST, OPTIONS");
    req->status = (int)status;
    req->stage = STAGE_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

#define SEND_STATIC(s, conn, req, status, type, literal)                                       \
    send_response(s, conn, req, status, type, literal, sizeof(literal) - 1, MHD_RESPMEM_PERSISTENT)

static enum MHD_Result send_json_error(cx_server *s, struct MHD_Connection *conn, cx_request *req,
                                       unsigned status, const char *message)
{
    cx_buf body;
    cx_buf_init(&body, 0);
    if (cx_buf_append_str(&body, "{\"error\":") != 0
        || cx_log_json_string(&body, message, strlen(message)) != 0
        || cx_buf_append_char(&body, '}') != 0) {
        cx_buf_free(&body);
        return MHD_NO;
    }
    size_t len;
    char *data = cx_buf_steal(&body, &len);
    return send_response(s, conn, req, status, GET_CONTENT_TYPE, data, len, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result send_worker_response(cx_server *s, struct MHD_Connection *conn,
                                            cx_request *req)
{
    char *body = req->response_body ? req->response_body : CX_STRDUP(CX_ALLOC_BODY, "");
    req->response_body = NULL; /* libmicrohttpd frees it from here on */
    CX_HANDOFF(CX_ALLOC_BODY, body);
    if (body == NULL)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(req->response_len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    unsigned status = req->status > 0 ? (unsigned)req->status : 200;
    int has_type = 0;
    for (size_t i = 0; i < req->response_headers.len; i++) {
        const cx_kv *h = &req->response_headers.items[i];
        /* libmicrohttpd owns framing; a user's Content-Length would be refused or wrong */
        if (strcasecmp(h->key, "Content-Length") == 0 || strcasecmp(h->key, "Transfer-Encoding") == 0)
            continue;
        if (strcasecmp(h->key, "Content-Type") == 0)
            has_type = 1;
        MHD_add_response_header(r, h->key, h->value);
    }
    /* NULL means JSON; "" means the user's Response asked for no Content-Type */
    if (!has_type && !(req->response_type && req->response_type[0] == '\0'))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                req->response_type ? req->response_type : GET_CONTENT_TYPE);
    add_common_headers(s, r, req, status);
    req->status = (int)status;
    req->stage = STAGE_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- /metrics: the built-in series live in the shared registry (metrics.c) ------------- */

static const char *const status_class_names[N_STATUS_CLASSES] = {"1XX", "2XX", "3XX", "4XX", "5XX"};

/* Resolves this API's built-in series once; safe to race (the registry hands out the same
 * handles).  Nothing is created when CORTEX_DISABLE_BUILTIN_METRICS=1. */
static void builtin_series(api_state *a)
{
    if (atomic_load_explicit(&a->metrics_resolved, memory_order_acquire))
        return;
    int enabled = cx_metrics_builtin_enabled();
    const char *name = a->config.name;
    cx_buf labels;
    cx_buf_init(&labels, 0);
    int base_len = -1;
    if (enabled && cx_metrics_label_append(&labels, "api_name", 8, name, strlen(name)) == 0)
        base_len = (int)labels.len;
    for (int c = 0; c < N_STATUS_CLASSES; c++) {
        int h = -1;
        if (base_len >= 0) {
            labels.len = (size_t)base_len;
            if (cx_metrics_label_append(&labels, "response_code", 13, status_class_names[c], 3) == 0)
                h = cx_metrics_series(CX_METRIC_COUNTER, CX_GAUGE_LAST, CX_BUCKETS_USER, "cortex_status_code", 18,
                                      "Responses by API and status class.", labels.data, labels.len);
        }
        atomic_store(&a->m_status[c], h);
    }
    int latency = -1, in_flight = -1;
    if (base_len >= 0) {
        latency = cx_metrics_series(CX_METRIC_HISTOGRAM, CX_GAUGE_LAST, CX_BUCKETS_LATENCY_MS, "cortex_latency", 14,
                                    "Time from the request's first byte to its response, in milliseconds.",
                                    labels.data, (size_t)base_len);
        in_flight = cx_metrics_series(CX_METRIC_GAUGE, CX_GAUGE_SUM, CX_BUCKETS_USER, "cortex_in_flight_requests", 25,
                                      "Requests accepted and not yet answered, summed over worker processes.",
                                      labels.data, (size_t)base_len);
    }
    atomic_store(&a->m_latency, latency);
    atomic_store(&a->m_in_flight, in_flight);
    cx_buf_free(&labels);
    atomic_store_explicit(&a->metrics_resolved, 1, memory_order_release);
}

static int builtin_in_flight(api_state *a)
{
    builtin_series(a);
    return atomic_load_explicit(&a->m_in_flight, memory_order_relaxed);
}

/* Built-in metrics of one finished request: counted, timed, and sent to statsd as Cortex did. */
static void record_request_metrics(api_state *a, const cx_request *req)
{
    builtin_series(a);
    int status_class = req->status / 100 - 1;
    if (status_class < 0 || status_class >= N_STATUS_CLASSES || atomic_load(&a->m_latency) < 0)
        return;
    double latency_ms = (cx_monotonic_seconds() - req->started) * 1000.0;
    cx_metrics_add(atomic_load_explicit(&a->m_status[status_class], memory_order_relaxed), 1);
    cx_metrics_observe(atomic_load_explicit(&a->m_latency, memory_order_relaxed), latency_ms);
    if (cx_statsd_enabled()) {
        cx_buf tags;
        cx_buf_init(&tags, 0);
        const char *name = a->config.name;
        if (cx_statsd_tag_append(&tags, "api_name", 8, name, strlen(name)) == 0) {
            cx_statsd_send("cortex_latency", 14, latency_ms, 'h', tags.data, tags.len);
            if (cx_statsd_tag_append(&tags, "response_code", 13, status_class_names[status_class], 3) == 0)
                cx_statsd_send("cortex_status_code", 18, 1, 'c', tags.data, tags.len);
        }
        cx_buf_free(&tags);
    }
}

static enum MHD_Result send_metrics(cx_server *s, struct MHD_Connection *conn, cx_request *req)
{
    for (size_t i = 0; i < s->n_apis; i++)
        builtin_series(&s->apis[i]); /* every API's series shows, zeros included */
    cx_buf out;
    cx_buf_init(&out, 0);
    if (cx_metrics_render(&out) != 0) {
        cx_buf_free(&out);
        return MHD_NO;
    }
    size_t len;
    char *data = cx_buf_steal(&out, &len);
    if (data == NULL && (data = CX_STRDUP(CX_ALLOC_BODY, "")) == NULL)
        return MHD_NO;
    return send_response(s, conn, req, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", data,
                         len, MHD_RESPMEM_MUST_FREE);
}

/* ---- routing --------------------------------------------------------------------------- */

/* "api-<name>" or "api-<name>:<port>" names an API, as the in-cluster DNS name did. */
static int api_from_host(const cx_server *s, const char *host)
{
    if (host == NULL || strncasecmp(host, "api-", 4) != 0)
        return -1;
    const char *name = host + 4;
    size_t n = strcspn(name, ":");
    for (size_t i = 0; i < s->n_apis; i++) {
        const char *candidate = s->apis[i].config.name;
        if (strlen(candidate) == n && strncasecmp(candidate, name, n) == 0)
            return (int)i;
    }
    return -1;
}

static int route(const cx_server *s, const char *path, size_t len, const char *host)
{
    for (size_t i = 0; i < s->n_apis; i++) {
        const char *endpoint = s->apis[i].config.endpoint;
        if (strlen(endpoint) == len && memcmp(endpoint, path, len) == 0)
            return (int)i;
    }
    if ((len == 8 && memcmp(path, "/predict", 8) == 0) || (len == 1 && path[0] == '/')) {
        if (s->n_apis == 1)
            return 0;
        return api_from_host(s, host);
    }
    return -1;
}

/* AsyncAPI: "<endpoint>/<id>", and "/predict/<id>" or "/<id>" where "/predict" and "/" route
 * to the API.  The id is whatever follows the last '/'; the status callable checks it. */
static int route_status(const cx_server *s, const char *path, size_t len, const char *host)
{
    size_t slash = len;
    while (slash > 0 && path[slash - 1] != '/')
        slash--;
    if (slash == 0 || slash == len)
        return -1; /* no '/' at all, or nothing after it */
    size_t prefix = slash - 1;
    int api = prefix == 0 ? route(s, "/", 1, host) : route(s, path, prefix, host);
    if (api < 0 || !s->apis[api].config.is_async)
        return -1;
    return api;
}

/* ---- the access handler ---------------------------------------------------------------- */

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    cx_kv_list *list = cls;
    if (key == NULL)
        return MHD_YES;
    if (value == NULL)
        value = "";
    return cx_kv_list_add(list, key, strlen(key), value, strlen(value)) == 0 ? MHD_YES : MHD_NO;
}

static enum MHD_Result redirect_without_slash(cx_server *s, struct MHD_Connection *conn,
                                              cx_request *req, const char *url, size_t len)
{
    const char *query = req->uri ? req->uri + req->path_len : "";
    cx_buf location;
    cx_buf_init(&location, 0);
    if (cx_buf_append(&location, url, len - 1) != 0 || cx_buf_append_str(&location, query) != 0) {
        cx_buf_free(&location);
        return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (r == NULL) {
        cx_buf_free(&location);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location.data);
    cx_buf_free(&location);
    add_common_headers(s, r, req, MHD_HTTP_TEMPORARY_REDIRECT);
    req->status = MHD_HTTP_TEMPORARY_REDIRECT;
    req->stage = STAGE_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_TEMPORARY_REDIRECT, r);
    MHD_destroy_response(r);
    return ret;
}

static int is_ready(const cx_server *s)
{
    return atomic_load(&s->ready) && (s->shared_ready == NULL || *s->shared_ready);
}

/* Reserves one of the API's max_concurrency slots for req: 1, or 0 when they are all taken. */
static int take_slot(cx_server *s, api_state *a, cx_request *req)
{
    /* reserve a slot first so two racing requests cannot both take the last one */
    if (atomic_fetch_add(&a->in_flight, 1) >= a->config.max_concurrency) {
        atomic_fetch_sub(&a->in_flight, 1);
        return 0;
    }
    req->counted_in_flight = 1;
    cx_metrics_gauge_add(builtin_in_flight(a), 1);
    atomic_fetch_add(&s->in_flight, 1);
    return 1;
}

/* AsyncAPI GET <endpoint>/<id>: counted like a prediction, answered by a worker. */
static enum MHD_Result accept_status(cx_server *s, struct MHD_Connection *conn, cx_request *req, int api)
{
    req->api = api;
    if (!atomic_load(&s->ready))
        return send_json_error(s, conn, req, MHD_HTTP_SERVICE_UNAVAILABLE, "the api is not ready yet");
    if (!take_slot(s, &s->apis[api], req))
        return send_json_error(s, conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
                               "too many requests in flight: try again later");
    req->job = CX_JOB_STATUS;
    cx_buf_init(&req->body, s->max_body);
    req->stage = STAGE_RECEIVING;
    return MHD_YES;
}

static enum MHD_Result on_headers(cx_server *s, struct MHD_Connection *conn, cx_request *req,
                                  const char *url, const char *method)
{
    snprintf(req->method, sizeof req->method, "%s", method);
    const char *given_id = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-ID");
    if (cx_request_id_acceptable(given_id))
        snprintf(req->request_id, sizeof req->request_id, "%s", given_id);
    else
        cx_request_id_new(req->request_id);

    int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    size_t len = strlen(url);
    if (is_get && strcmp(url, "/healthz") == 0) {
        if (is_ready(s))
            return SEND_STATIC(s, conn, req, MHD_HTTP_OK, TEXT_PLAIN, "ok");
        return SEND_STATIC(s, conn, req, MHD_HTTP_SERVICE_UNAVAILABLE, TEXT_PLAIN, "starting");
    }
    if (is_get && strcmp(url, "/metrics") == 0)
        return send_metrics(s, conn, req);

    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    int api = route(s, url, len, host);
    if (api < 0 && is_get && (api = route_status(s, url, len, host)) >= 0)
        return accept_status(s, conn, req, api);
    if (api < 0) {
        if (len > 1 && url[len - 1] == '/' && route(s, url, len - 1, host) >= 0)
            return redirect_without_slash(s, conn, req, url, len);
        return SEND_STATIC(s, conn, req, MHD_HTTP_NOT_FOUND, TEXT_PLAIN, "Not Found");
    }
    req->api = api;
    api_state *a = &s->apis[api];

    if (is_get) {
        /* copied under the lock: set_get_body may replace it from another thread */
        pthread_mutex_lock(&s->lock);
        enum MHD_Result ret = send_response(s, conn, req, MHD_HTTP_OK, GET_CONTENT_TYPE, a->config.get_body,
                                            a->config.get_body_len, MHD_RESPMEM_MUST_COPY);
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0)
        return send_response(s, conn, req, MHD_HTTP_NO_CONTENT, NULL, "", 0, MHD_RESPMEM_PERSISTENT);
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        return SEND_STATIC(s, conn, req, MHD_HTTP_METHOD_NOT_ALLOWED, TEXT_PLAIN, "Method Not Allowed");

    /* only this process's own readiness: survivors serve while a dead worker is replaced */
    if (!atomic_load(&s->ready))
        return send_json_error(s, conn, req, MHD_HTTP_SERVICE_UNAVAILABLE, "the api is not ready yet");
    const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length != NULL && strtoull(length, NULL, 10) > s->max_body) {
        char message[96];
        snprintf(message, sizeof message, "request body too large: the limit is %zu bytes", s->max_body);
        return send_json_error(s, conn, req, MHD_HTTP_CONTENT_TOO_LARGE, message);
    }
    if (!take_slot(s, a, req))
        return send_json_error(s, conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
                               "too many requests in flight: try again later");

    const char *content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (content_type != NULL && (req->content_type = CX_STRDUP(CX_ALLOC_REQUEST_FIELD, content_type)) == NULL)
        return MHD_NO;
    cx_buf_init(&req->body, s->max_body);
    req->stage = STAGE_RECEIVING;
    return MHD_YES;
}

/* Appends a job for the workers; the I/O loop wakes one when this round of events ends. */
static void enqueue(cx_server *s, cx_request *req)
{
    pthread_mutex_lock(&s->lock);
    req->next = NULL;
    if (s->queue_tail)
        s->queue_tail->next = req;
    else
        s->queue_head = req;
    s->queue_tail = req;
    atomic_fetch_add(&s->queued_jobs, 1);
    pthread_mutex_unlock(&s->lock);
    atomic_store(&s->wake_pending, 1);
}

static open_connection *connection_entry(struct MHD_Connection *conn);

static void hold(cx_server *s, cx_request *req)
{
    req->held = 1;
    req->held_prev = NULL;
    req->held_next = s->held_head;
    if (s->held_head)
        s->held_head->held_prev = req;
    s->held_head = req;
}

static void unhold(cx_server *s, cx_request *req)
{
    if (!req->held)
        return;
    if (req->held_prev)
        req->held_prev->held_next = req->held_next;
    else
        s->held_head = req->held_next;
    if (req->held_next)
        req->held_next->held_prev = req->held_prev;
    req->held = 0;
}

static enum MHD_Result dispatch(cx_server *s, struct MHD_Connection *conn, cx_request *req)
{
    unsigned wants = s->apis[req->api].config.wants;
    if ((wants & CX_WANT_HEADERS)
        && MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_kv, &req->headers) < 0)
        return MHD_NO;
    if ((wants & CX_WANT_QUERY)
        && MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_kv, &req->query) < 0)
        return MHD_NO;
    req->connection = conn;
    if (req->job != CX_JOB_STATUS)
        req->job = CX_JOB_PREDICT;
    req->stage = STAGE_QUEUED;
    req->queued = cx_monotonic_seconds();
    /* suspend before a worker can see it, so its resume can never come first */
    MHD_suspend_connection(conn);
    atomic_fetch_add(&s->held_by_workers, 1);
    if (s->request_timeout > 0 && connection_entry(conn) != NULL)
        hold(s, req);
    enqueue(s, req);
    return MHD_YES;
}

static open_connection *connection_entry(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

static void mark_headers_done(struct MHD_Connection *conn)
{
    open_connection *c = connection_entry(conn);
    if (c)
        c->headers_done = 1;
}

static int has_body(struct MHD_Connection *conn)
{
    const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length != NULL)
        return strtoull(length, NULL, 10) > 0;
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    cx_server *s = cls;
    if (s->request_timeout > 0) {
        open_connection *c = connection_entry(conn);
        if (c && c->timeout_reply) {
            *con_cls = c->timeout_reply;
            c->timeout_reply = NULL;
        }
    }
    cx_request *req = *con_cls;
    if (req == NULL)
        return MHD_NO; /* the URI callback could not allocate: drop the connection */
    switch (req->stage) {
    case STAGE_NEW:
        mark_headers_done(conn);
        /* libmicrohttpd closes the connection after a response queued on the first call, so
         * bodiless requests are answered on the second to keep their connection alive.
         * Requests with a body are decided now: a 413 or 503 must not read it first. */
        if (has_body(conn))
            return on_headers(s, conn, req, url, method);
        req->stage = STAGE_NO_BODY;
        return MHD_YES;
    case STAGE_NO_BODY: {
        enum MHD_Result ret = on_headers(s, conn, req, url, method);
        if (ret != MHD_YES || req->stage != STAGE_RECEIVING)
            return ret;
        return dispatch(s, conn, req);
    }
    case STAGE_RECEIVING:
        if (*upload_data_size != 0) {
            if (!req->too_large) {
                int rc = cx_buf_append(&req->body, upload_data, *upload_data_size);
                if (rc == CX_BUF_NOMEM)
                    return MHD_NO;
                if (rc == CX_BUF_TOO_LARGE) {
                    req->too_large = 1;
                    cx_buf_free(&req->body);
                }
            }
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (req->too_large) {
            char message[96];
            snprintf(message, sizeof message, "request body too large: the limit is %zu bytes", s->max_body);
            return send_json_error(s, conn, req, MHD_HTTP_CONTENT_TOO_LARGE, message);
        }
        return dispatch(s, conn, req);
    case STAGE_DONE:
        return send_worker_response(s, conn, req);
    case STAGE_TIMED_OUT: {
        char message[128];
        snprintf(message, sizeof message, "request timed out: no response from the predictor within %g s",
                 s->request_timeout);
        return send_json_error(s, conn, req, MHD_HTTP_GATEWAY_TIMEOUT, message);
    }
    default:
        return MHD_YES;
    }
}


static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    cx_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        open_connection *c = CX_CALLOC(CX_ALLOC_CONNECTION, 1, sizeof *c);
        *socket_context = c;
        if (c == NULL || info == NULL)
            return;
        c->fd = info->connect_fd;
        c->waiting_since = cx_monotonic_seconds();
        pthread_mutex_lock(&s->lock);
        c->next = s->connections;
        if (c->next)
            c->next->prev = c;
        s->connections = c;
        if (atomic_load(&s->draining))
            shutdown(c->fd, SHUT_RDWR);
        pthread_mutex_unlock(&s->lock);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        /* called before libmicrohttpd closes the fd: once unlinked, nobody shuts it down */
        open_connection *c = *socket_context;
        *socket_context = NULL;
        if (c == NULL)
            return;
        pthread_mutex_lock(&s->lock);
        if (c->prev)
            c->prev->next = c->next;
        else if (s->connections == c)
            s->connections = c->next;
        if (c->next)
            c->next->prev = c->prev;
        pthread_mutex_unlock(&s->lock);
        CX_FREE(CX_ALLOC_CONNECTION, c);
    }
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    open_connection *c = connection_entry(conn);
    if (c)
        atomic_store(&c->busy, 1);
    cx_request *req = cx_request_new();
    if (req == NULL)
        return NULL;
    req->uri = CX_STRDUP(CX_ALLOC_REQUEST_FIELD, uri ? uri : "");
    if (req->uri == NULL) {
        cx_request_free(req);
        return NULL;
    }
    req->path_len = strcspn(req->uri, "?");
    return req;
}

static void access_log(cx_server *s, const cx_request *req)
{
    int slot = req->api < 0 ? -1 : s->apis[req->api].config.log_slot;
    if (!cx_log_enabled(slot < 0 ? CX_LOG_MAX_SLOTS : slot, CX_LOG_INFO)) /* out of range: the default */
        return;
    const char *reason = MHD_get_reason_phrase_for((unsigned)req->status);
    char status_text[80];
    snprintf(status_text, sizeof status_text, "%d %s", req->status, reason ? reason : "");
    char message[160];
    int path_shown = req->path_len > 64 ? 64 : (int)req->path_len;
    snprintf(message, sizeof message, "%s %.*s%s %d", req->method, path_shown, req->uri,
             req->path_len > 64 ? "..." : "", req->status);
    double latency_ms = (cx_monotonic_seconds() - req->started) * 1000.0;
    char latency[32];
    snprintf(latency, sizeof latency, "%.3f", latency_ms);

    cx_buf line;
    cx_buf_init(&line, 0);
    int bad = cx_log_begin(&line, cx_wall_seconds(), "INFO", message, strlen(message), s->pid)
              || cx_log_key(&line, "status_code", 11) || cx_log_json_string(&line, status_text, strlen(status_text))
              || cx_log_key(&line, "method", 6) || cx_log_json_string(&line, req->method, strlen(req->method))
              || cx_log_key(&line, "path", 4) || cx_log_json_string(&line, req->uri, req->path_len)
              || cx_log_key(&line, "request_id", 10)
              || cx_log_json_string(&line, req->request_id, strlen(req->request_id))
              || cx_log_key(&line, "latency_ms", 10) || cx_buf_append_str(&line, latency)
              || cx_log_end(&line);
    if (!bad)
        cx_log_write_slot(slot, &line);
    cx_buf_free(&line);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    cx_server *s = cls;
    open_connection *c = connection_entry(conn);
    cx_request *req = *con_cls;
    *con_cls = NULL;
    if (c) {
        atomic_store(&c->busy, 0);
        c->waiting_since = cx_monotonic_seconds();
        c->headers_done = 0;
        if (c->timeout_reply) { /* closed before the 504 went out: con_cls is stale */
            req = c->timeout_reply;
            c->timeout_reply = NULL;
        }
    }
    if (req == NULL)
        return;
    unhold(s, req);
    if (req->status > 0) {
        if (req->api >= 0)
            record_request_metrics(&s->apis[req->api], req);
        if (s->access_log)
            access_log(s, req);
    }
    if (req->counted_in_flight) {
        atomic_fetch_sub(&s->apis[req->api].in_flight, 1);
        cx_metrics_gauge_add(atomic_load(&s->apis[req->api].m_in_flight), -1);
        /* the last one out during a drain wakes whoever waits for it */
        if (atomic_fetch_sub(&s->in_flight, 1) == 1 && atomic_load(&s->draining)) {
            pthread_mutex_lock(&s->lock);
            pthread_cond_broadcast(&s->drained);
            pthread_cond_broadcast(&s->work_ready);
            pthread_mutex_unlock(&s->lock);
        }
    }
    if (req->post_state != NULL) {
        req->job = CX_JOB_POST_PREDICT;
        enqueue(s, req);
        return;
    }
    cx_request_free(req);
}

static void on_mhd_error(void *cls, const char *fmt, va_list ap)
{
    cx_server *s = cls;
    char message[512];
    vsnprintf(message, sizeof message, fmt, ap);
    size_t n = strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == '\r'))
        message[--n] = '\0';
    if (!cx_log_enabled(-1, CX_LOG_WARNING))
        return;
    cx_buf line;
    cx_buf_init(&line, 0);
    if (cx_log_begin(&line, cx_wall_seconds(), "WARNING", message, n, s->pid) == 0 && cx_log_end(&line) == 0)
        cx_log_write(&line);
    cx_buf_free(&line);
}

/* ---- the I/O thread -------------------------------------------------------------------- */

static void poke_io(cx_server *s)
{
    uint64_t one = 1;
    if (write(s->wake_fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, so a wake-up is pending anyway */
    }
}

/* How long one round may wait for events; bounds how late a stop or a drain is seen. */
#define IO_WAIT_MS 50

/* Signalled after unlocking: on a shared core the woken worker preempts this thread at
 * once, and if the lock were still held it would block on it and hand the core straight
 * back (two extra context switches per round).  A worker counted idle here is already
 * waiting, so it cannot miss the jobs enqueued before. */
static void wake_workers(cx_server *s)
{
    pthread_mutex_lock(&s->lock);
    int idle = s->idle_workers;
    pthread_mutex_unlock(&s->lock);
    if (idle > 1)
        pthread_cond_broadcast(&s->work_ready);
    else if (idle == 1)
        pthread_cond_signal(&s->work_ready);
}

/* With an external loop, libmicrohttpd does not notice resumed connections by itself:
 * the resuming worker pokes wake_fd and the next round picks them up. */
static void wait_for_events(cx_server *s)
{
    int timeout = IO_WAIT_MS;
    MHD_UNSIGNED_LONG_LONG mhd_timeout;
    if (MHD_get_timeout(s->daemon, &mhd_timeout) == MHD_YES && mhd_timeout < (MHD_UNSIGNED_LONG_LONG)timeout)
        timeout = (int)mhd_timeout;
    struct epoll_event events[2];
    int n = epoll_wait(s->io_epoll, events, 2, timeout);
    for (int i = 0; i < n; i++) {
        if (events[i].data.fd == s->wake_fd) {
            uint64_t count;
            if (read(s->wake_fd, &count, sizeof count) < 0 && errno != EAGAIN)
                break;
        }
    }
}

/* Cuts connections whose request headers did not arrive within the idle timeout. */
static void cut_stalled_headers(cx_server *s, double now)
{
    pthread_mutex_lock(&s->lock);
    for (open_connection *c = s->connections; c; c = c->next) {
        if (!c->headers_done && !c->cut && now - c->waiting_since > s->idle_timeout) {
            shutdown(c->fd, SHUT_RDWR);
            c->cut = 1;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* What answers a timed-out request in its place: copies of what the response, the access
 * line and the metrics need, and its in-flight slot.  Made before the request is claimed,
 * since once claimed its worker may free it at any moment. */
static cx_request *timeout_stand_in(const cx_request *req)
{
    cx_request *reply = cx_request_new();
    if (reply == NULL || (reply->uri = CX_STRDUP(CX_ALLOC_REQUEST_FIELD, req->uri)) == NULL) {
        cx_request_free(reply);
        return NULL;
    }
    reply->api = req->api;
    reply->job = req->job;
    memcpy(reply->method, req->method, sizeof reply->method);
    memcpy(reply->request_id, req->request_id, sizeof reply->request_id);
    reply->path_len = req->path_len;
    reply->started = req->started;
    reply->queued = req->queued;
    reply->counted_in_flight = req->counted_in_flight;
    reply->connection = req->connection;
    reply->stage = STAGE_TIMED_OUT;
    return reply;
}

static void log_timeout(cx_server *s, const cx_request *reply)
{
    int slot = reply->api < 0 ? -1 : s->apis[reply->api].config.log_slot;
    if (!cx_log_enabled(slot < 0 ? CX_LOG_MAX_SLOTS : slot, CX_LOG_WARNING))
        return;
    char message[160];
    snprintf(message, sizeof message,
             "request timed out after %g s (--request-timeout): answered 504; its predict() call is "
             "not interrupted", s->request_timeout);
    cx_buf line;
    cx_buf_init(&line, 0);
    if (cx_log_begin(&line, cx_wall_seconds(), "WARNING", message, strlen(message), s->pid) == 0
        && cx_log_key(&line, "request_id", 10) == 0
        && cx_log_json_string(&line, reply->request_id, strlen(reply->request_id)) == 0
        && cx_log_end(&line) == 0)
        cx_log_write_slot(slot, &line);
    cx_buf_free(&line);
}

/* Answers 504 for every request its worker has not answered within the request timeout.
 * The worker is not interrupted (Python code cannot be); its late answer is dropped. */
static void expire_requests(cx_server *s, double now)
{
    int resumed = 0;
    for (cx_request *req = s->held_head, *next; req; req = next) {
        next = req->held_next;
        if (now - req->queued < s->request_timeout || atomic_load(&req->claim) != CX_CLAIM_PENDING)
            continue;
        struct MHD_Connection *conn = req->connection;
        open_connection *c = connection_entry(conn);
        cx_request *reply = c ? timeout_stand_in(req) : NULL;
        if (reply == NULL)
            continue; /* out of memory: the next sweep tries again */
        /* unlinked before the claim: once claimed, req is the worker's to free */
        unhold(s, req);
        int expected = CX_CLAIM_PENDING;
        if (!atomic_compare_exchange_strong(&req->claim, &expected, CX_CLAIM_TIMED_OUT)) {
            hold(s, req); /* its worker answered just now: on_completed unlinks it */
            reply->counted_in_flight = 0;
            cx_request_free(reply);
            continue;
        }
        c->timeout_reply = reply;
        log_timeout(s, reply);
        MHD_resume_connection(conn);
        resumed = 1;
    }
    if (resumed)
        poke_io(s);
}

/* EEVDF (Linux 6.12 and later) lets a task ask for a shorter time slice; a woken task with
 * a shorter slice preempts the running one at once.  Without it, a request arriving while
 * predict() spins on the same core waits out predict's whole slice (~3 ms) before this
 * thread may answer it, /healthz included.  Older kernels refuse or ignore it: harmless. */
#define IO_THREAD_SLICE_NS 100000

static void ask_for_short_slice(void)
{
#ifdef SYS_sched_setattr
    struct { /* the kernel's struct sched_attr, first version (48 bytes); <linux/sched/types.h>
              * clashes with <sched.h> */
        uint32_t size, sched_policy;
        uint64_t sched_flags;
        int32_t sched_nice;
        uint32_t sched_priority;
        uint64_t sched_runtime, sched_deadline, sched_period;
    } attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.sched_policy = SCHED_OTHER;
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0); /* this thread's: keep it */
    attr.sched_nice = errno == 0 ? nice : 0;
    attr.sched_runtime = IO_THREAD_SLICE_NS;
    (void)syscall(SYS_sched_setattr, 0, &attr, 0);
#endif
}

/* A real-time I/O thread runs the moment its socket is readable, even while predict() spins
 * on the same core: the slice above only shortens that wait, and not below the scheduler's
 * tick on every kernel.  It is the lowest real-time priority, this thread never runs Python,
 * and it blocks in epoll_wait whenever it has nothing to read or send, so it takes from
 * predict only what its own I/O costs (a flood of such I/O is what the budget below is
 * for).  Needs CAP_SYS_NICE or a nonzero RLIMIT_RTPRIO; refused otherwise. */
static int ask_for_realtime(void)
{
    struct sched_param param = { .sched_priority = 1 };
    return pthread_setschedparam(pthread_self(), SCHED_FIFO, &param);
}

/* Real-time, but on a budget: a flood of requests this thread answers by itself (GETs,
 * 404s, /healthz) would otherwise keep it running and leave predict() only what the kernel's
 * real-time throttling spares (5% of the core, in 50 ms gaps).  Busy for more than
 * BUSY_HIGH of a window, it joins the fair class; below BUSY_LOW it is real-time again. */
#define BUDGET_WINDOW_S 0.05
#define BUSY_HIGH 0.6
#define BUSY_LOW 0.3

typedef struct {
    int allowed; /* real-time was granted at start */
    int realtime;
    double window_start, busy, woke;
} io_budget;

static void start_budget(io_budget *b, int want_realtime)
{
    b->allowed = b->realtime = want_realtime && ask_for_realtime() == 0;
    if (!b->realtime)
        ask_for_short_slice();
    b->window_start = b->woke = cx_monotonic_seconds();
    b->busy = 0;
}

/* now: the start of a round, so the last round's work since it woke counts as busy */
static void account_io_time(io_budget *b, double now)
{
    if (!b->allowed)
        return;
    b->busy += now - b->woke;
    double span = now - b->window_start;
    if (span < BUDGET_WINDOW_S)
        return;
    double share = b->busy / span;
    if (b->realtime && share > BUSY_HIGH) {
        ask_for_short_slice(); /* also the move back to SCHED_OTHER */
        b->realtime = 0;
    } else if (!b->realtime && share < BUSY_LOW && ask_for_realtime() == 0) {
        b->realtime = 1;
    }
    b->window_start = now;
    b->busy = 0;
}

static void *io_loop(void *arg)
{
    cx_server *s = arg;
    io_budget budget;
    start_budget(&budget, s->realtime_io);
    double next_sweep = 0, next_expiry = 0;
    while (!atomic_load(&s->io_stop)) {
        double now = cx_monotonic_seconds();
        account_io_time(&budget, now);
        if (now >= next_sweep) {
            cut_stalled_headers(s, now);
            next_sweep = now + 0.5;
        }
        if (s->held_head && now >= next_expiry) {
            expire_requests(s, now);
            next_expiry = now + 0.01;
        }
        wait_for_events(s);
        if (budget.allowed)
            budget.woke = cx_monotonic_seconds();
        MHD_run(s->daemon);
        if (atomic_exchange(&s->wake_pending, 0))
            wake_workers(s);
        if (atomic_exchange(&s->quiesce_pending, 0)) {
            /* libmicrohttpd's loop state is this thread's alone: quiesce from here */
            MHD_socket fd = MHD_quiesce_daemon(s->daemon);
            if (fd != MHD_INVALID_SOCKET)
                close(fd);
        }
    }
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/* Our own socket, so a busy port is a clear errno and not a NULL daemon. */
static int open_listener(const char *host, unsigned port, int *is_v6, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%u", port);
    int rc = getaddrinfo(host, port_text, &hints, &found);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve host %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    int saved_errno = 0;
    for (struct addrinfo *ai = found; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0) {
            *is_v6 = ai->ai_family == AF_INET6;
            break;
        }
        saved_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    if (fd < 0) {
        if (saved_errno == EADDRINUSE)
            snprintf(err, errlen, "cannot listen on %s:%u: the port is already in use", host, port);
        else
            snprintf(err, errlen, "cannot listen on %s:%u: %s", host, port, strerror(saved_errno));
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* A socket the supervisor bound before forking workers: each worker polls its own dup,
 * and the kernel hands every new connection to one of them. */
static int adopt_listener(int fd, int *is_v6, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        snprintf(err, errlen, "the inherited listening socket is unusable: %s", strerror(errno));
        return -1;
    }
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
        snprintf(err, errlen, "cannot use the inherited listening socket: %s", strerror(errno));
        return -1;
    }
    *is_v6 = addr.ss_family == AF_INET6;
    fcntl(copy, F_SETFL, fcntl(copy, F_GETFL) | O_NONBLOCK);
    return copy;
}

static int setup_io_wait(cx_server *s)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL)
        return -1;
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->io_epoll = epoll_create1(EPOLL_CLOEXEC);
    if (s->wake_fd < 0 || s->io_epoll < 0)
        return -1;
    struct epoll_event mhd_event = {.events = EPOLLIN, .data.fd = info->epoll_fd};
    struct epoll_event wake_event = {.events = EPOLLIN, .data.fd = s->wake_fd};
    if (epoll_ctl(s->io_epoll, EPOLL_CTL_ADD, info->epoll_fd, &mhd_event) != 0
        || epoll_ctl(s->io_epoll, EPOLL_CTL_ADD, s->wake_fd, &wake_event) != 0)
        return -1;
    return 0;
}

static void close_io_wait(cx_server *s)
{
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    if (s->io_epoll >= 0)
        close(s->io_epoll);
    s->wake_fd = s->io_epoll = -1;
}

static void free_apis(cx_server *s)
{
    for (size_t i = 0; i < s->n_apis && s->apis; i++) {
        CX_FREE(CX_ALLOC_SERVER, s->apis[i].config.name);
        CX_FREE(CX_ALLOC_SERVER, s->apis[i].config.endpoint);
        CX_FREE(CX_ALLOC_SERVER, s->apis[i].config.get_body);
    }
    CX_FREE(CX_ALLOC_SERVER, s->apis);
    s->apis = NULL;
}

static int copy_apis(cx_server *s, const cx_server_config *config)
{
    s->apis = CX_CALLOC(CX_ALLOC_SERVER, config->n_apis ? config->n_apis : 1, sizeof *s->apis);
    if (s->apis == NULL)
        return -1;
    s->n_apis = config->n_apis;
    for (size_t i = 0; i < config->n_apis; i++) {
        const cx_api_config *src = &config->apis[i];
        cx_api_config *dst = &s->apis[i].config;
        *dst = *src;
        dst->name = CX_STRDUP(CX_ALLOC_SERVER, src->name);
        dst->endpoint = CX_STRDUP(CX_ALLOC_SERVER, src->endpoint);
        char *body = CX_MALLOC(CX_ALLOC_SERVER, src->get_body_len + 1);
        if (body) {
            memcpy(body, src->get_body, src->get_body_len);
            body[src->get_body_len] = '\0';
        }
        dst->get_body = body;
        if (dst->name == NULL || dst->endpoint == NULL || body == NULL)
            return -1;
        if (dst->max_concurrency == 0)
            dst->max_concurrency = 1;
    }
    return 0;
}

int cx_server_start(const cx_server_config *config, cx_server **out, char *err, size_t errlen)
{
    *out = NULL;
    cx_server *s = CX_CALLOC(CX_ALLOC_SERVER, 1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work_ready, NULL);
    pthread_cond_init(&s->drained, NULL);
    s->listen_fd = -1;
    s->wake_fd = -1;
    s->io_epoll = -1;
    s->max_body = config->max_body;
    s->idle_timeout = config->idle_timeout;
    s->request_timeout = config->request_timeout;
    s->realtime_io = config->realtime_io;
    s->access_log = config->access_log;
    s->pid = (long)getpid();
    if (copy_apis(s, config) != 0) {
        snprintf(err, errlen, "out of memory");
        goto error;
    }
    int is_v6 = 0;
    if (config->listen_fd >= 0)
        s->listen_fd = adopt_listener(config->listen_fd, &is_v6, err, errlen);
    else
        s->listen_fd = open_listener(config->host, config->port, &is_v6, err, errlen);
    if (s->listen_fd < 0)
        goto error;

    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME
                     | MHD_USE_ERROR_LOG | (is_v6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)config->port, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_error, s, /* first, or MHD logs to stderr itself */
        MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)config->idle_timeout,
        MHD_OPTION_CONNECTION_LIMIT, config->max_connections ? config->max_connections : (unsigned)FD_SETSIZE - 4,
        /* libmicrohttpd zeroes a connection's pool for every request: keep it to what
         * headers need (larger headers get 431) */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_END);
    if (s->daemon == NULL) {
        snprintf(err, errlen, "cannot start the HTTP server on %s:%u", config->host, config->port);
        goto error;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : config->port;
    if (setup_io_wait(s) != 0 || pthread_create(&s->io_thread, NULL, io_loop, s) != 0) {
        snprintf(err, errlen, "cannot start the server thread: %s", strerror(errno));
        MHD_stop_daemon(s->daemon);
        s->listen_fd = -1; /* MHD closed it */
        close_io_wait(s);
        goto error;
    }
    s->io_started = 1;
    *out = s;
    return 0;

error:
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    free_apis(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work_ready);
    pthread_cond_destroy(&s->drained);
    CX_FREE(CX_ALLOC_SERVER, s);
    return -1;
}

unsigned cx_server_port(const cx_server *s)
{
    return s->port;
}

int cx_server_set_get_body(cx_server *s, size_t api, const char *body, size_t len)
{
    if (api >= s->n_apis)
        return -1;
    char *copy = CX_MALLOC(CX_ALLOC_SERVER, len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, body, len);
    copy[len] = '\0';
    pthread_mutex_lock(&s->lock);
    char *old = (char *)s->apis[api].config.get_body;
    s->apis[api].config.get_body = copy;
    s->apis[api].config.get_body_len = len;
    pthread_mutex_unlock(&s->lock);
    CX_FREE(CX_ALLOC_SERVER, old);
    return 0;
}

void cx_server_set_ready(cx_server *s, int ready)
{
    atomic_store(&s->ready, ready);
}

void cx_server_set_shared_ready(cx_server *s, const volatile unsigned char *flag)
{
    s->shared_ready = flag;
}


static void deadline_from_now(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_REALTIME, ts);
    long long nanos = (long long)ts->tv_nsec + (long long)(seconds * 1e9);
    ts->tv_sec += (time_t)(nanos / 1000000000LL);
    ts->tv_nsec = (long)(nanos % 1000000000LL);
}

/* Whether an only_async worker may take req: an AsyncAPI's POST (submit) or status GET. */
static int is_async_job(const cx_server *s, const cx_request *req)
{
    return (req->job == CX_JOB_PREDICT || req->job == CX_JOB_STATUS) && req->api >= 0
           && s->apis[req->api].config.is_async;
}

/* A job just taken off the queue that the request timeout answered with a 504 while it
 * waited: nothing is left to do for it, so it is freed here.  1 when it was. */
static int drop_if_timed_out(cx_server *s, cx_request *req)
{
    if (atomic_load(&req->claim) != CX_CLAIM_TIMED_OUT)
        return 0;
    atomic_fetch_sub(&s->held_by_workers, 1);
    cx_request_free(req);
    return 1;
}

int cx_server_next(cx_server *s, cx_request **out, int timeout_ms, int only_async)
{
    *out = NULL;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        cx_request *prev = NULL, *req = s->queue_head;
        while (only_async && req && !is_async_job(s, req)) {
            prev = req;
            req = req->next;
        }
        if (req) {
            if (prev)
                prev->next = req->next;
            else
                s->queue_head = req->next;
            if (s->queue_tail == req)
                s->queue_tail = prev;
            req->next = NULL;
            atomic_fetch_sub(&s->queued_jobs, 1);
            if (drop_if_timed_out(s, req))
                continue;
            pthread_mutex_unlock(&s->lock);
            *out = req;
            return CX_NEXT_JOB;
        }
        if (atomic_exchange(&s->wake_owed, 0)) {
            /* nothing more to do: send what was answered before sleeping */
            poke_io(s);
            continue;
        }
        if (!s->stopping && atomic_load(&s->draining)
            && (s->in_flight == 0 || (s->drain_deadline > 0 && cx_monotonic_seconds() >= s->drain_deadline))) {
            s->stopping = 1;
            pthread_cond_broadcast(&s->work_ready);
        }
        if (s->stopping) {
            pthread_mutex_unlock(&s->lock);
            return CX_NEXT_STOP;
        }
        struct timespec ts;
        deadline_from_now(&ts, timeout_ms / 1000.0);
        s->idle_workers++;
        int rc = pthread_cond_timedwait(&s->work_ready, &s->lock, &ts);
        s->idle_workers--;
        if (rc == ETIMEDOUT && (s->queue_head == NULL || only_async)) {
            pthread_mutex_unlock(&s->lock);
            return CX_NEXT_TIMEOUT;
        }
    }
}

size_t cx_server_take_batch(cx_server *s, int api, cx_request **out, size_t max, double deadline)
{
    size_t taken = 0;
    pthread_mutex_lock(&s->lock);
    while (taken < max) {
        /* unlink this API's predict jobs in arrival order; others keep their places */
        cx_request *prev = NULL;
        for (cx_request *req = s->queue_head; req && taken < max;) {
            cx_request *next = req->next;
            if (req->api == api && req->job == CX_JOB_PREDICT) {
                if (prev)
                    prev->next = next;
                else
                    s->queue_head = next;
                if (s->queue_tail == req)
                    s->queue_tail = prev;
                req->next = NULL;
                atomic_fetch_sub(&s->queued_jobs, 1);
                if (!drop_if_timed_out(s, req))
                    out[taken++] = req;
            } else {
                prev = req;
            }
            req = next;
        }
        if (taken >= max || s->stopping || cx_monotonic_seconds() >= deadline)
            break;
        struct timespec ts;
        deadline_from_now(&ts, deadline - cx_monotonic_seconds());
        s->idle_workers++;
        pthread_cond_timedwait(&s->work_ready, &s->lock, &ts);
        s->idle_workers--;
    }
    pthread_mutex_unlock(&s->lock);
    return taken;
}

int cx_server_complete(cx_server *s, cx_request *req, int defer_wake)
{
    int expected = CX_CLAIM_PENDING;
    if (!atomic_compare_exchange_strong(&req->claim, &expected, CX_CLAIM_ANSWERED)) {
        atomic_fetch_sub(&s->held_by_workers, 1);
        return 1;
    }
    struct MHD_Connection *conn = req->connection;
    req->stage = STAGE_DONE;
    atomic_fetch_sub(&s->held_by_workers, 1);
    MHD_resume_connection(conn);
    if (defer_wake)
        atomic_store(&s->wake_owed, 1);
    else
        poke_io(s);
    return 0;
}

int cx_server_has_queued(cx_server *s)
{
    return atomic_load(&s->queued_jobs) > 0;
}

void cx_server_release(cx_server *s, cx_request *req)
{
    (void)s;
    cx_request_free(req);
}

int cx_server_enqueue_call(cx_server *s, void *state)
{
    cx_request *req = cx_request_new();
    if (req == NULL)
        return -1;
    req->job = CX_JOB_CALL;
    req->post_state = state;
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        req->post_state = NULL;
        cx_request_free(req);
        return -1;
    }
    req->next = NULL;
    if (s->queue_tail)
        s->queue_tail->next = req;
    else
        s->queue_head = req;
    s->queue_tail = req;
    atomic_fetch_add(&s->queued_jobs, 1);
    /* not from the I/O thread: wake the workers here rather than at the end of a round (all
     * of them: an only_async one cannot take this job) */
    if (s->idle_workers > 0)
        pthread_cond_broadcast(&s->work_ready);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void cx_server_begin_drain(cx_server *s, double grace_s)
{
    if (atomic_exchange(&s->draining, 1))
        return;
    pthread_mutex_lock(&s->lock);
    s->drain_deadline = cx_monotonic_seconds() + grace_s;
    for (open_connection *c = s->connections; c; c = c->next)
        if (!atomic_load(&c->busy))
            shutdown(c->fd, SHUT_RDWR);
    pthread_cond_broadcast(&s->work_ready);
    pthread_mutex_unlock(&s->lock);
    atomic_store(&s->quiesce_pending, 1);
}

int cx_server_wait_drained(cx_server *s, double timeout_s)
{
    struct timespec ts;
    deadline_from_now(&ts, timeout_s);
    pthread_mutex_lock(&s->lock);
    while (s->in_flight > 0) {
        if (pthread_cond_timedwait(&s->drained, &s->lock, &ts) == ETIMEDOUT)
            break;
    }
    int drained = s->in_flight == 0;
    pthread_mutex_unlock(&s->lock);
    return drained;
}

void cx_server_stop_workers(cx_server *s)
{
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_broadcast(&s->work_ready);
    pthread_mutex_unlock(&s->lock);
}

void cx_server_destroy(cx_server *s)
{
    if (s == NULL)
        return;
    cx_server_stop_workers(s);
    if (atomic_load(&s->held_by_workers) > 0) {
        /* a worker still runs predict on a suspended connection: stopping the daemon now
         * would free what it will touch.  Close the doors and let the process exit. */
        if (!atomic_load(&s->draining))
            cx_server_begin_drain(s, 0);
        return;
    }
    if (s->io_started) {
        atomic_store(&s->io_stop, 1);
        pthread_join(s->io_thread, NULL);
    }
    /* quiesced: the listening socket is closed already; otherwise the daemon closes it */
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    close_io_wait(s);
    /* post-predict jobs never run: their Python state is the bridge's to drop first */
    for (cx_request *req = s->queue_head; req;) {
        cx_request *next = req->next;
        if (req->post_state == NULL)
            cx_request_free(req);
        req = next;
    }
    free_apis(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work_ready);
    pthread_cond_destroy(&s->drained);
    CX_FREE(CX_ALLOC_SERVER, s);
}
