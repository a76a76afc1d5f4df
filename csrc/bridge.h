/* The GIL boundary: a queued request -> payload -> predict() -> response half, and the
 * post_predict call after the response is sent.  Callers hold the GIL; these functions
 * never leave a Python exception set: whatever fails becomes a response and a log line. */
#ifndef CX_BRIDGE_H
#define CX_BRIDGE_H

#include "buf.h"
#include "module.h"
#include "request.h"
#include "server.h"

/* Which value each keyword argument of predict/post_predict takes. */
typedef enum {
    CX_ARG_PAYLOAD = 0,
    CX_ARG_REQUEST_ID,
    CX_ARG_QUERY_PARAMS,
    CX_ARG_HEADERS,
    CX_ARG_RESPONSE,
    CX_ARG_BODY,         /* the raw body as bytes: AsyncAPI's internal submit only */
    CX_ARG_CONTENT_TYPE, /* the Content-Type header, str or None: likewise */
    CX_N_ARGS
} cx_arg;

/* The arguments a user's predict can never take (predictor.py validates it). */
#define CX_INTERNAL_ARGS ((1u << CX_ARG_BODY) | (1u << CX_ARG_CONTENT_TYPE))

#define CX_MAX_CALL_ARGS CX_N_ARGS

typedef struct {
    PyObject *predict;        /* bound method, owned; NULL until the predictor is built */
    PyObject *predict_kwnames; /* tuple of str, owned; NULL when predict takes none */
    unsigned char predict_args[CX_MAX_CALL_ARGS];
    Py_ssize_t n_predict_args;
    PyObject *status;       /* AsyncAPI: status(workload_id) for GET <endpoint>/<id>; owned or NULL */
    PyObject *post_predict; /* owned or NULL */
    PyObject *post_kwnames;
    unsigned char post_args[CX_MAX_CALL_ARGS];
    Py_ssize_t n_post_args;
    unsigned needs; /* bit (1 << cx_arg) for each value some call takes */
    int log_slot;          /* whose log level and sink apply (log.h) */
    size_t max_batch_size; /* server_side_batching; 0 or 1 = off */
    double batch_interval; /* seconds */
} cx_handler;

/* Parses names like ("payload", "request_id") into the handler's predict or post list.
 * 0, or -1 with ValueError for a name the bridge does not know. */
int cx_handler_set_args(cx_handler *h, PyObject *names, int for_post);
void cx_handler_clear(cx_handler *h);

/* Runs predict for req and fills its response half (also on failure: 400/500). */
void cx_bridge_predict(cx_module_state *state, const cx_handler *h, cx_request *req);
/* Runs predict once for n requests of one API, each argument a list in arrival order, and
 * answers request i with element i of the returned list (SPEC's errors otherwise). */
void cx_bridge_predict_batch(cx_module_state *state, const cx_handler *h, cx_request **reqs, size_t n);
/* Runs post_predict with what cx_bridge_predict kept, logs its exception, clears post_state. */
void cx_bridge_post_predict(cx_module_state *state, const cx_handler *h, cx_request *req);

/* The GIL is released only in the functions below (and taken back before they return). */

/* The worker loop of Server.work(): NULL with an exception when a signal handler raised.
 * only_async: this thread takes AsyncAPI submit/status jobs only (cx_server_next). */
PyObject *cx_bridge_work(cx_module_state *state, cx_server *server, const cx_handler *handlers, int only_async);
int cx_bridge_start_server(const cx_server_config *config, cx_server **out, char *err, size_t errlen);
void cx_bridge_destroy_server(cx_server *server);
int cx_bridge_wait_drained(cx_server *server, double timeout_s);
void cx_bridge_write_log(const cx_buf *line);

#endif
