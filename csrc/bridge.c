#include "bridge.h"

#include <string.h>

#include "log.h"
#include "payload.h"
#include "server.h"
#include "alloc_count.h"

static const char *const arg_names[CX_N_ARGS] = {"payload", "request_id", "query_params", "headers",
                                                 "response",  "body",       "content_type"};

int cx_handler_set_args(cx_handler *h, PyObject *names, int for_post)
{
    PyObject *tuple = PySequence_Tuple(names);
    if (tuple == NULL)
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    if (n > CX_MAX_CALL_ARGS) {
        PyErr_SetString(PyExc_ValueError, "too many predictor arguments");
        goto error;
    }
    unsigned char *codes = for_post ? h->post_args : h->predict_args;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(tuple, i));
        if (name == NULL)
            goto error;
        int code = -1;
        for (int c = 0; c < CX_N_ARGS; c++)
            if (strcmp(name, arg_names[c]) == 0)
                code = c;
        if (code < 0 || (code == CX_ARG_RESPONSE && !for_post) || (for_post && ((1u << code) & CX_INTERNAL_ARGS))) {
            PyErr_Format(PyExc_ValueError, "unsupported predictor argument %R", PyTuple_GET_ITEM(tuple, i));
            goto error;
        }
        codes[i] = (unsigned char)code;
        h->needs |= 1u << code;
    }
    if (for_post) {
        Py_XSETREF(h->post_kwnames, n ? Py_NewRef(tuple) : NULL);
        h->n_post_args = n;
    } else {
        Py_XSETREF(h->predict_kwnames, n ? Py_NewRef(tuple) : NULL);
        h->n_predict_args = n;
    }
    Py_DECREF(tuple);
    return 0;
error:
    Py_DECREF(tuple);
    return -1;
}

void cx_handler_clear(cx_handler *h)
{
    Py_CLEAR(h->predict);
    Py_CLEAR(h->predict_kwnames);
    Py_CLEAR(h->status);
    Py_CLEAR(h->post_predict);
    Py_CLEAR(h->post_kwnames);
}

/* Logs the pending exception (cleared) with its traceback through the Python logger. */
static void log_exception(cx_module_state *state, PyObject *message, const char *request_id)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
        PyException_SetTraceback(value, tb);
    PyObject *done = NULL;
    if (message != NULL)
        done = PyObject_CallFunction(state->log_exception, "OOs", message, value ? value : Py_None,
                                     request_id);
    if (done == NULL)
        PyErr_WriteUnraisable(state->log_exception);
    Py_XDECREF(done);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* predict() returned something we cannot send: say which type and what Cortex asked for. */
static void log_unencodable(cx_module_state *state, cx_request *req, PyObject *result)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *message = PyUnicode_FromFormat(
        "the return value of predict() (type %s) could not be sent: %S: please return an object "
        "that is JSON serializable (including its nested fields), a bytes object, a string, or a "
        "Response object",
        Py_TYPE(result)->tp_name, value ? value : Py_None);
    PyErr_Restore(type, value, tb);
    log_exception(state, message, req->request_id);
    Py_XDECREF(message);
}

static void internal_error(cx_request *req)
{
    static const char body[] = "internal server error";
    cx_response_set(req, 500, "text/plain; charset=utf-8", body, sizeof body - 1);
}

static PyObject *text_from(const char *s, size_t n)
{
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "replace");
}

static PyObject *query_dict(const cx_kv_list *query)
{
    PyObject *dict = PyDict_New();
    for (size_t i = 0; dict && i < query->len; i++) {
        PyObject *k = text_from(query->items[i].key, query->items[i].key_len);
        PyObject *v = text_from(query->items[i].value, query->items[i].value_len);
        /* later values replace earlier ones: Cortex's last-value-wins */
        if (k == NULL || v == NULL || PyDict_SetItem(dict, k, v) < 0)
            Py_CLEAR(dict);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return dict;
}

static PyObject *headers_mapping(cx_module_state *state, const cx_kv_list *headers)
{
    PyObject *pairs = PyList_New((Py_ssize_t)headers->len);
    if (pairs == NULL)
        return NULL;
    for (size_t i = 0; i < headers->len; i++) {
        /* HTTP header bytes are ISO-8859-1 by definition */
        PyObject *pair = Py_BuildValue("(NN)",
                                       PyUnicode_DecodeLatin1(headers->items[i].key, (Py_ssize_t)headers->items[i].key_len, NULL),
                                       PyUnicode_DecodeLatin1(headers->items[i].value, (Py_ssize_t)headers->items[i].value_len, NULL));
        if (pair == NULL) {
            Py_DECREF(pairs);
            return NULL;
        }
        PyList_SET_ITEM(pairs, (Py_ssize_t)i, pair);
    }
    PyObject *mapping = PyObject_CallOneArg(state->make_headers, pairs);
    Py_DECREF(pairs);
    return mapping;
}

static PyObject *call_with(PyObject *callable, PyObject *kwnames, const unsigned char *codes,
                           Py_ssize_t n, PyObject *const *values)
{
    PyObject *args[CX_MAX_CALL_ARGS];
    for (Py_ssize_t i = 0; i < n; i++)
        args[i] = values[codes[i]];
    return PyObject_Vectorcall(callable, args, 0, kwnames);
}

/* Builds the values the calls of h take for req.  0; 1 when req already holds a client
 * error (a 400); -1 with an exception set.  values[] entries are new references or NULL. */
static int build_values(cx_module_state *state, const cx_handler *h, cx_request *req, PyObject **values)
{
    if (h->needs & (1u << CX_ARG_PAYLOAD)) {
        values[CX_ARG_PAYLOAD] = cx_payload_decode(state, req);
        if (values[CX_ARG_PAYLOAD] == NULL)
            return PyErr_Occurred() ? -1 : 1;
    }
    if ((h->needs & (1u << CX_ARG_REQUEST_ID))
        && (values[CX_ARG_REQUEST_ID] = PyUnicode_FromString(req->request_id)) == NULL)
        return -1;
    if ((h->needs & (1u << CX_ARG_QUERY_PARAMS)) && (values[CX_ARG_QUERY_PARAMS] = query_dict(&req->query)) == NULL)
        return -1;
    if ((h->needs & (1u << CX_ARG_HEADERS))
        && (values[CX_ARG_HEADERS] = headers_mapping(state, &req->headers)) == NULL)
        return -1;
    if ((h->needs & (1u << CX_ARG_BODY))
        && (values[CX_ARG_BODY] = PyBytes_FromStringAndSize(req->body.data ? req->body.data : "",
                                                            (Py_ssize_t)req->body.len)) == NULL)
        return -1;
    if (h->needs & (1u << CX_ARG_CONTENT_TYPE)) {
        values[CX_ARG_CONTENT_TYPE] = req->content_type ? PyUnicode_DecodeLatin1(req->content_type,
                                                                                 (Py_ssize_t)strlen(req->content_type), NULL)
                                                        : Py_NewRef(Py_None);
        if (values[CX_ARG_CONTENT_TYPE] == NULL)
            return -1;
    }
    return 0;
}

static void clear_values(PyObject **values)
{
    for (int i = 0; i < CX_N_ARGS; i++)
        Py_CLEAR(values[i]);
}

static void predict_failed(cx_module_state *state, cx_request *req)
{
    PyObject *message = PyUnicode_FromString("exception in predict(): internal server error");
    log_exception(state, message, req->request_id);
    Py_XDECREF(message);
    internal_error(req);
}

static int not_ready(const cx_handler *h, cx_request *req)
{
    if (h->predict != NULL)
        return 0;
    static const char body[] = "{\"error\":\"the api is not ready yet\"}";
    cx_response_set(req, 503, NULL, body, sizeof body - 1);
    return 1;
}

/* Encodes result into req and, with a post_predict, keeps what it will be called with.
 * Steals the references in values[]. */
static void answer(cx_module_state *state, const cx_handler *h, cx_request *req, PyObject *result,
                   PyObject **values)
{
    if (cx_response_encode(state, req, result) < 0) {
        log_unencodable(state, req, result);
        internal_error(req);
        clear_values(values);
        return;
    }
    if (h->post_predict == NULL) {
        clear_values(values);
        return;
    }
    Py_XSETREF(values[CX_ARG_RESPONSE], Py_NewRef(result));
    PyObject *kept = PyTuple_New(CX_N_ARGS);
    if (kept == NULL) {
        PyErr_Clear();
        clear_values(values);
        return;
    }
    for (int i = 0; i < CX_N_ARGS; i++) {
        PyTuple_SET_ITEM(kept, i, values[i] ? values[i] : Py_NewRef(Py_None));
        values[i] = NULL; /* the tuple owns them now */
    }
    req->post_state = kept;
}

void cx_bridge_predict(cx_module_state *state, const cx_handler *h, cx_request *req)
{
    PyObject *values[CX_N_ARGS] = {NULL};
    cx_log_set_current_slot(h->log_slot);
    if (not_ready(h, req))
        goto done;
    int rc = build_values(state, h, req, values);
    if (rc != 0) {
        if (rc < 0)
            predict_failed(state, req);
        goto done;
    }
    PyObject *result = call_with(h->predict, h->predict_kwnames, h->predict_args, h->n_predict_args, values);
    if (result == NULL) {
        predict_failed(state, req);
        goto done;
    }
    answer(state, h, req, result, values);
    Py_DECREF(result);
done:
    clear_values(values);
    cx_log_set_current_slot(-1);
}

/* Every request of a batch whose predict() broke the list contract gets this. */
static void batch_contract_error(cx_module_state *state, PyObject *result, Py_ssize_t expected,
                                 cx_request **reqs, const size_t *live, size_t n_live)
{
    PyObject *type_text = PyObject_Str((PyObject *)Py_TYPE(result));
    PyObject *message = NULL;
    if (type_text == NULL)
        PyErr_Clear();
    else if (PyList_Check(result))
        message = PyUnicode_FromFormat("error: please return a list when using server side batching, got %U "
                                       "of length %zd for a batch of %zd: runtime exception",
                                       type_text, PyList_GET_SIZE(result), expected);
    else
        message = PyUnicode_FromFormat("error: please return a list when using server side batching, "
                                       "got %U: runtime exception", type_text);
    Py_XDECREF(type_text);
    Py_ssize_t len = 0;
    const char *text = message ? PyUnicode_AsUTF8AndSize(message, &len) : NULL;
    if (text == NULL) {
        PyErr_Clear();
        text = "error: please return a list when using server side batching: runtime exception";
        len = (Py_ssize_t)strlen(text);
    }
    /* the log line first, as Cortex logged the error */
    PyObject *exc = PyObject_CallFunction(PyExc_RuntimeError, "s#", text, len);
    if (exc) {
        PyErr_SetObject(PyExc_RuntimeError, exc);
        Py_DECREF(exc);
        PyObject *log_message = PyUnicode_FromStringAndSize(text, len);
        log_exception(state, log_message, n_live ? reqs[live[0]]->request_id : "");
        Py_XDECREF(log_message);
    } else {
        PyErr_Clear();
    }
    for (size_t j = 0; j < n_live; j++)
        cx_response_set(reqs[live[j]], 500, "text/plain; charset=utf-8", text, (size_t)len);
    Py_XDECREF(message);
}

void cx_bridge_predict_batch(cx_module_state *state, const cx_handler *h, cx_request **reqs, size_t n)
{
    PyObject *lists[CX_N_ARGS] = {NULL};
    PyObject *result = NULL;
    size_t *live = CX_PYMEM_MALLOC(CX_ALLOC_SCRATCH, n * sizeof *live);
    size_t n_live = 0;
    cx_log_set_current_slot(h->log_slot);
    if (live == NULL) {
        PyErr_Clear();
        for (size_t i = 0; i < n; i++)
            internal_error(reqs[i]);
        goto done;
    }
    for (int a = 0; a < CX_N_ARGS; a++) {
        if (a != CX_ARG_RESPONSE && (h->needs & (1u << a)) && (lists[a] = PyList_New(0)) == NULL) {
            PyErr_Clear();
            for (size_t i = 0; i < n; i++)
                internal_error(reqs[i]);
            goto done;
        }
    }
    /* a request whose payload does not decode is answered alone; the rest form the batch */
    for (size_t i = 0; i < n; i++) {
        PyObject *values[CX_N_ARGS] = {NULL};
        if (not_ready(h, reqs[i]))
            continue;
        int rc = build_values(state, h, reqs[i], values);
        for (int a = 0; rc == 0 && a < CX_N_ARGS; a++)
            if (lists[a] && PyList_Append(lists[a], values[a]) < 0)
                rc = -1;
        clear_values(values);
        if (rc < 0)
            predict_failed(state, reqs[i]);
        if (rc == 0)
            live[n_live++] = i;
    }
    if (n_live == 0)
        goto done;
    result = call_with(h->predict, h->predict_kwnames, h->predict_args, h->n_predict_args, lists);
    if (result == NULL) {
        predict_failed(state, reqs[live[0]]); /* logged once, with the first request's id */
        for (size_t j = 1; j < n_live; j++)
            internal_error(reqs[live[j]]);
        goto done;
    }
    if (!PyList_Check(result) || PyList_GET_SIZE(result) != (Py_ssize_t)n_live) {
        batch_contract_error(state, result, (Py_ssize_t)n_live, reqs, live, n_live);
        goto done;
    }
    for (size_t j = 0; j < n_live; j++) {
        PyObject *values[CX_N_ARGS] = {NULL};
        for (int a = 0; a < CX_N_ARGS; a++)
            if (lists[a])
                values[a] = Py_NewRef(PyList_GET_ITEM(lists[a], (Py_ssize_t)j));
        PyObject *item = Py_NewRef(PyList_GET_ITEM(result, (Py_ssize_t)j));
        answer(state, h, reqs[live[j]], item, values);
        Py_DECREF(item);
    }
done:
    for (int a = 0; a < CX_N_ARGS; a++)
        Py_XDECREF(lists[a]);
    Py_XDECREF(result);
    CX_PYMEM_FREE(CX_ALLOC_SCRATCH, live);
    cx_log_set_current_slot(-1);
}

/* AsyncAPI GET <endpoint>/<id>: status(<the path's last segment, as sent>) answers it.  The
 * segment is not percent-decoded: valid ids never need escaping, and the callable refuses
 * anything that is not an id shape before any lookup. */
static void bridge_status(cx_module_state *state, const cx_handler *h, cx_request *req)
{
    cx_log_set_current_slot(h->log_slot);
    PyObject *id = NULL, *result = NULL;
    if (h->status == NULL) {
        static const char body[] = "{\"error\":\"the api is not ready yet\"}";
        cx_response_set(req, 503, NULL, body, sizeof body - 1);
        goto done;
    }
    size_t start = req->path_len;
    while (start > 0 && req->uri[start - 1] != '/')
        start--;
    id = text_from(req->uri + start, req->path_len - start);
    if (id != NULL)
        result = PyObject_CallOneArg(h->status, id);
    if (result == NULL) {
        PyObject *message = PyUnicode_FromString("exception in the workload status lookup: internal server error");
        log_exception(state, message, req->request_id);
        Py_XDECREF(message);
        internal_error(req);
    } else if (cx_response_encode(state, req, result) < 0) {
        log_unencodable(state, req, result);
        internal_error(req);
    }
done:
    Py_XDECREF(id);
    Py_XDECREF(result);
    cx_log_set_current_slot(-1);
}

/* A job without a connection (Server.call_soon): call it, log what it raises, free it. */
static void bridge_call(cx_module_state *state, cx_server *server, cx_request *req)
{
    PyObject *callable = req->post_state;
    req->post_state = NULL;
    PyObject *result = PyObject_CallNoArgs(callable);
    if (result == NULL) {
        PyObject *message = PyUnicode_FromString("exception in a background call");
        log_exception(state, message, NULL);
        Py_XDECREF(message);
    }
    Py_XDECREF(result);
    Py_DECREF(callable);
    cx_log_set_current_slot(-1);
    cx_server_release(server, req);
}

void cx_bridge_post_predict(cx_module_state *state, const cx_handler *h, cx_request *req)
{
    PyObject *kept = req->post_state;
    req->post_state = NULL;
    if (kept == NULL || h->post_predict == NULL) {
        Py_XDECREF(kept);
        return;
    }
    cx_log_set_current_slot(h->log_slot);
    PyObject *values[CX_N_ARGS];
    for (int i = 0; i < CX_N_ARGS; i++)
        values[i] = PyTuple_GET_ITEM(kept, i);
    PyObject *result = call_with(h->post_predict, h->post_kwnames, h->post_args, h->n_post_args, values);
    if (result == NULL) {
        PyObject *message = PyUnicode_FromString("exception in post_predict()");
        log_exception(state, message, req->request_id);
        Py_XDECREF(message);
    }
    Py_XDECREF(result);
    Py_DECREF(kept);
    cx_log_set_current_slot(-1);
}

/* ---- the only places the GIL is released -------------------------------------------- */

/* Idle workers wake this often to let Python run signal handlers on the main thread. */
#define WORKER_WAKE_MS 100
/* A predict quicker than this may have its response held while the next one runs. */
#define QUICK_PREDICT_S 50e-6

/* Hands a job's answer to the server; when the request timeout answered it first, drops
 * the late answer (and what post_predict would have got). */
static void complete(cx_server *server, cx_request *req, int defer_wake)
{
    if (cx_server_complete(server, req, defer_wake)) {
        Py_CLEAR(req->post_state);
        cx_server_release(server, req);
    }
}

/* Gathers more requests of req's API (without the GIL) until the batch is full or
 * batch_interval has passed since req was queued, then runs them as one predict(). */
static void work_batch(cx_module_state *state, cx_server *server, const cx_handler *h, cx_request *req)
{
    cx_request *stack_batch[64];
    cx_request **batch = h->max_batch_size <= 64 ? stack_batch : CX_PYMEM_MALLOC(CX_ALLOC_SCRATCH, h->max_batch_size * sizeof *batch);
    if (batch == NULL) {
        PyErr_Clear();
        cx_bridge_predict(state, h, req);
        complete(server, req, 0);
        return;
    }
    batch[0] = req;
    size_t n;
    Py_BEGIN_ALLOW_THREADS
    n = 1 + cx_server_take_batch(server, req->api, batch + 1, h->max_batch_size - 1,
                                 req->queued + h->batch_interval);
    Py_END_ALLOW_THREADS
    cx_bridge_predict_batch(state, h, batch, n);
    for (size_t i = 0; i < n; i++)
        complete(server, batch[i], 0);
    if (batch != stack_batch)
        CX_PYMEM_FREE(CX_ALLOC_SCRATCH, batch);
}

PyObject *cx_bridge_work(cx_module_state *state, cx_server *server, const cx_handler *handlers, int only_async)
{
    for (;;) {
        cx_request *req;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = cx_server_next(server, &req, WORKER_WAKE_MS, only_async);
        Py_END_ALLOW_THREADS
        if (rc == CX_NEXT_STOP)
            break;
        if (rc == CX_NEXT_TIMEOUT) {
            if (PyErr_CheckSignals() < 0)
                return NULL;
            continue;
        }
        if (req->job == CX_JOB_CALL) {
            bridge_call(state, server, req);
            continue;
        }
        const cx_handler *h = &handlers[req->api];
        if (req->job == CX_JOB_POST_PREDICT) {
            cx_bridge_post_predict(state, h, req);
            cx_server_release(server, req);
        } else if (req->job == CX_JOB_STATUS) {
            bridge_status(state, h, req);
            complete(server, req, 0);
        } else if (h->max_batch_size > 1) {
            work_batch(state, server, h, req);
        } else {
            double started = cx_monotonic_seconds();
            cx_bridge_predict(state, h, req);
            /* after a quick predict, the next queued one is likely quick too: send both
             * with one wake-up of the I/O thread (a context switch) instead of two */
            int quick = cx_monotonic_seconds() - started < QUICK_PREDICT_S;
            complete(server, req, quick && cx_server_has_queued(server));
        }
    }
    Py_RETURN_NONE;
}

int cx_bridge_start_server(const cx_server_config *config, cx_server **out, char *err, size_t errlen)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cx_server_start(config, out, err, errlen);
    Py_END_ALLOW_THREADS
    return rc;
}

void cx_bridge_destroy_server(cx_server *server)
{
    /* server threads may be waiting to finish a request; never join them holding the GIL */
    Py_BEGIN_ALLOW_THREADS
    cx_server_destroy(server);
    Py_END_ALLOW_THREADS
}

int cx_bridge_wait_drained(cx_server *server, double timeout_s)
{
    int drained;
    Py_BEGIN_ALLOW_THREADS
    drained = cx_server_wait_drained(server, timeout_s);
    Py_END_ALLOW_THREADS
    return drained;
}

void cx_bridge_write_log(const cx_buf *line)
{
    /* a full stdout pipe blocks the write: let other threads run meanwhile */
    Py_BEGIN_ALLOW_THREADS
    cx_log_write(line);
    Py_END_ALLOW_THREADS
}
