#include "bridge.h"

#include <string.h>

#include "log.h"
#include "payload.h"
#include "server.h"

static const char *const arg_names[CX_N_ARGS] = {"payload", "request_id", "query_params", "headers",
                                                 "response"};

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
        if (code < 0 || (code == CX_ARG_RESPONSE && !for_post)) {
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

void cx_bridge_predict(cx_module_state *state, const cx_handler *h, cx_request *req)
{
    PyObject *values[CX_N_ARGS] = {NULL};
    PyObject *result = NULL;
    cx_log_set_current_api(req->api);

    if (h->predict == NULL) {
        static const char body[] = "{\"error\":\"the api is not ready yet\"}";
        cx_response_set(req, 503, NULL, body, sizeof body - 1);
        goto done;
    }
    if (h->needs & (1u << CX_ARG_PAYLOAD)) {
        values[CX_ARG_PAYLOAD] = cx_payload_decode(state, req);
        if (values[CX_ARG_PAYLOAD] == NULL) {
            if (PyErr_Occurred())
                goto failed;
            goto done; /* a client error: the 400 is already set */
        }
    }
    if ((h->needs & (1u << CX_ARG_REQUEST_ID))
        && (values[CX_ARG_REQUEST_ID] = PyUnicode_FromString(req->request_id)) == NULL)
        goto failed;
    if ((h->needs & (1u << CX_ARG_QUERY_PARAMS)) && (values[CX_ARG_QUERY_PARAMS] = query_dict(&req->query)) == NULL)
        goto failed;
    if ((h->needs & (1u << CX_ARG_HEADERS))
        && (values[CX_ARG_HEADERS] = headers_mapping(state, &req->headers)) == NULL)
        goto failed;

    result = call_with(h->predict, h->predict_kwnames, h->predict_args, h->n_predict_args, values);
    if (result == NULL)
        goto failed;
    if (cx_response_encode(state, req, result) < 0) {
        log_unencodable(state, req, result);
        internal_error(req);
        goto done;
    }
    goto post;

failed : {
    PyObject *message = PyUnicode_FromString("exception in predict(): internal server error");
    log_exception(state, message, req->request_id);
    Py_XDECREF(message);
    internal_error(req);
    goto done;
}
post:
    if (h->post_predict != NULL) {
        values[CX_ARG_RESPONSE] = Py_NewRef(result);
        PyObject *kept = PyTuple_New(CX_N_ARGS);
        if (kept == NULL) {
            PyErr_Clear();
            goto done;
        }
        for (int i = 0; i < CX_N_ARGS; i++) {
            PyTuple_SET_ITEM(kept, i, values[i] ? values[i] : Py_NewRef(Py_None));
            values[i] = NULL; /* the tuple owns them now */
        }
        req->post_state = kept;
    }
done:
    for (int i = 0; i < CX_N_ARGS; i++)
        Py_XDECREF(values[i]);
    Py_XDECREF(result);
    cx_log_set_current_api(-1);
}

void cx_bridge_post_predict(cx_module_state *state, const cx_handler *h, cx_request *req)
{
    PyObject *kept = req->post_state;
    req->post_state = NULL;
    if (kept == NULL || h->post_predict == NULL) {
        Py_XDECREF(kept);
        return;
    }
    cx_log_set_current_api(req->api);
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
    cx_log_set_current_api(-1);
}

/* ---- the only places the GIL is released -------------------------------------------- */

/* Idle workers wake this often to let Python run signal handlers on the main thread. */
#define WORKER_WAKE_MS 100

PyObject *cx_bridge_work(cx_module_state *state, cx_server *server, const cx_handler *handlers)
{
    for (;;) {
        cx_request *req;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = cx_server_next(server, &req, WORKER_WAKE_MS);
        Py_END_ALLOW_THREADS
        if (rc == CX_NEXT_STOP)
            break;
        if (rc == CX_NEXT_TIMEOUT) {
            if (PyErr_CheckSignals() < 0)
                return NULL;
            continue;
        }
        const cx_handler *h = &handlers[req->api];
        if (req->job == CX_JOB_POST_PREDICT) {
            cx_bridge_post_predict(state, h, req);
            cx_server_release(server, req);
        } else {
            cx_bridge_predict(state, h, req);
            cx_server_complete(server, req);
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
