/* The HTTP side: libmicrohttpd options, routing, limits and the fixed responses, all
 * decided on the server's own threads without Python.  Requests that need the predictor
 * are suspended and queued; workers (bridge.c) take them with cx_server_next() and hand
 * them back with cx_server_complete().  Only this file includes microhttpd.h. */
#ifndef CX_SERVER_H
#define CX_SERVER_H

#include <stddef.h>

#include "request.h"

typedef struct cx_server cx_server;

enum { CX_WANT_HEADERS = 1, CX_WANT_QUERY = 2 };

typedef struct {
    const char *name;
    const char *endpoint; /* "/name" or networking.endpoint, no trailing slash */
    const char *get_body; /* the JSON answered to GET */
    size_t get_body_len;
    unsigned max_concurrency;
    unsigned wants; /* CX_WANT_* : what the worker needs copied out of the connection */
    int log_slot;   /* the API's log slot (log.h), for its access lines */
    int is_async;   /* AsyncAPI: GET <endpoint>/<id> is a CX_JOB_STATUS for the workers */
} cx_api_config;

typedef struct {
    const char *host;
    unsigned port; /* 0 = any free port */
    size_t max_body;
    unsigned idle_timeout; /* seconds */
    double request_timeout; /* seconds from the first header byte to the response; 0 = none */
    int access_log;
    size_t n_apis;
    const cx_api_config *apis;
    int listen_fd; /* >= 0: serve on (a dup of) this bound, listening socket; -1: bind our own */
    /* connections open at once; those beyond wait in the listen backlog until one closes
     * (libmicrohttpd stops accepting: it has an ITC with suspend/resume).  0: its default */
    unsigned max_connections;
    /* try to make the I/O thread real-time (SCHED_FIFO 1), so /healthz is answered at once
     * while predict() holds the core; falls back to a short fair-class slice */
    int realtime_io;
} cx_server_config;

/* Binds and starts the server threads; copies the config.  0, or -1 with err filled. */
int cx_server_start(const cx_server_config *config, cx_server **out, char *err, size_t errlen);
unsigned cx_server_port(const cx_server *server);
/* Replaces what GET on an API answers (TensorFlow's model_metadata changes when model
 * versions come and go).  Copies body.  0, or -1 (no such API, out of memory). */
int cx_server_set_get_body(cx_server *server, size_t api, const char *body, size_t len);
/* /healthz and predictions answer 503 until ready. */
void cx_server_set_ready(cx_server *server, int ready);
/* With worker processes: a flag in memory shared by all of them, set by the supervisor
 * while every worker is ready; /healthz is 200 only when it is set too (predictions need
 * only this process to be ready).  The memory must outlive the server. */
void cx_server_set_shared_ready(cx_server *server, const volatile unsigned char *flag);

enum { CX_NEXT_JOB = 0, CX_NEXT_TIMEOUT = 1, CX_NEXT_STOP = 2 };
/* Blocks (call without the GIL) up to timeout_ms for a job; CX_NEXT_STOP once the server
 * is draining and nothing is left for workers to do.  only_async: take only AsyncAPI
 * submit and status jobs (which run no user code), leaving the rest to other workers. */
int cx_server_next(cx_server *server, cx_request **out, int timeout_ms, int only_async);
/* Moves up to max more predict jobs of this API from the queue into out, waiting (call
 * without the GIL) until there are max of them or the monotonic deadline passes.  Returns
 * how many it took. */
size_t cx_server_take_batch(cx_server *server, int api, cx_request **out, size_t max, double deadline);
/* A predict job's response half is set: send it.  defer_wake lets the worker answer a run
 * of quick jobs before the I/O thread is woken (once) to send them all; the wake-up owed is
 * paid at the latest when the worker finds the queue empty.  Returns 1 when the request
 * timeout answered it first: nothing is sent and req is the caller's to release (its
 * post_state cleared) with cx_server_release(). */
int cx_server_complete(cx_server *server, cx_request *req, int defer_wake);
/* 1 when jobs are waiting for a worker (a hint: read without the lock). */
int cx_server_has_queued(cx_server *server);
/* A post-predict or call job is done (post_state cleared): free it. */
void cx_server_release(cx_server *server, cx_request *req);
/* Queues a CX_JOB_CALL carrying state (opaque here; the bridge runs and owns it) for the
 * next free worker.  0; -1 once the workers are stopping (or out of memory): not queued. */
int cx_server_enqueue_call(cx_server *server, void *state);

/* Stops accepting new connections; in-flight requests go on for up to grace_s seconds,
 * after which cx_server_next() reports CX_NEXT_STOP regardless.  Idempotent. */
void cx_server_begin_drain(cx_server *server, double grace_s);
/* Waits (without the GIL) until nothing is in flight or timeout_s passes; 1 when drained. */
int cx_server_wait_drained(cx_server *server, double timeout_s);
/* Makes every cx_server_next() return CX_NEXT_STOP. */
void cx_server_stop_workers(cx_server *server);
/* Joins the server threads and closes every connection, then frees.  With requests still
 * held by a worker it only closes the sockets, leaving the memory to the process exit. */
void cx_server_destroy(cx_server *server);

#endif
