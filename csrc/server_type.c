#include "server_type.h"

#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "log.h"
#include "payload.h"
#include "server.h"
#include "alloc_count.h"

typedef struct {
    PyObject_HEAD
    cx_server *server;
    Py_ssize_t n_apis;
    cx_handler *handlers;
    Py_buffer shared_ready; /* a view on the supervisor's shared flag, or .obj == NULL */
} CxServerObject;

static void server_shutdown(CxServerObject *self)
{
    cx_server *server = self->server;
    self->server = NULL;
    if (server == NULL)
        return;
    cx_bridge_destroy_server(server);
}

static int server_clear(CxServerObject *self)
{
    for (Py_ssize_t i = 0; i < self->n_apis && self->handlers; i++)
        cx_handler_clear(&self->handlers[i]);
    return 0;
}

static int server_traverse(CxServerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    for (Py_ssize_t i = 0; i < self->n_apis && self->handlers; i++) {
        Py_VISIT(self->handlers[i].predict);
        Py_VISIT(self->handlers[i].status);
        Py_VISIT(self->handlers[i].post_predict);
    }
    return 0;
}

static void server_dealloc(CxServerObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    server_shutdown(self);
    server_clear(self);
    if (self->shared_ready.obj)
        PyBuffer_Release(&self->shared_ready);
    CX_PYMEM_FREE(CX_ALLOC_HANDLERS, self->handlers);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static int get_item(PyObject *dict, const char *key, PyObject **out)
{
    *out = PyDict_GetItemString(dict, key); /* borrowed; the dict outlives its use here */
    if (*out == NULL) {
        PyErr_Format(PyExc_KeyError, "api entry has no %s", key);
        return -1;
    }
    return 0;
}

/* Server(host, port, max_body_size, idle_timeout, access_log, apis, listen_fd=-1,
 * request_timeout=0, max_connections=0, realtime_io=True): binds and starts.
 * apis: list of dicts with name, endpoint, get_body (bytes), max_concurrency,
 * predict_args (names), post_predict_args (names or None); optional: log_slot,
 * max_batch_size, batch_interval, async (AsyncAPI: its predict_args may name the internal
 * "body" and "content_type", and GET <endpoint>/<id> goes to set_async_handler's status). */
static PyObject *server_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"host", "port", "max_body_size", "idle_timeout", "access_log", "apis",
                             "listen_fd", "request_timeout", "max_connections", "realtime_io", NULL};
    const char *host;
    unsigned int port, idle_timeout;
    unsigned long long max_body;
    int access_log;
    int listen_fd = -1;
    double request_timeout = 0;
    unsigned int max_connections = 0;
    int realtime_io = 1;
    PyObject *apis;
    CxServerObject *self = NULL;
    cx_api_config *configs = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sIKIpO!|idIp", kwlist, &host, &port, &max_body,
                                     &idle_timeout, &access_log, &PyList_Type, &apis, &listen_fd,
                                     &request_timeout, &max_connections, &realtime_io))
        return NULL;
    if (!(request_timeout >= 0)) {
        PyErr_SetString(PyExc_ValueError, "request_timeout must be >= 0 (0 = none)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(apis);
    self = (CxServerObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->handlers = CX_PYMEM_CALLOC(CX_ALLOC_HANDLERS, n ? (size_t)n : 1, sizeof *self->handlers);
    configs = CX_PYMEM_CALLOC(CX_ALLOC_HANDLERS, n ? (size_t)n : 1, sizeof *configs);
    if (self->handlers == NULL || configs == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    self->n_apis = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyList_GET_ITEM(apis, i);
        PyObject *name, *endpoint, *get_body, *max_concurrency, *predict_args, *post_args;
        if (!PyDict_Check(entry)) {
            PyErr_SetString(PyExc_TypeError, "apis must be a list of dicts");
            goto error;
        }
        if (get_item(entry, "name", &name) || get_item(entry, "endpoint", &endpoint)
            || get_item(entry, "get_body", &get_body) || get_item(entry, "max_concurrency", &max_concurrency)
            || get_item(entry, "predict_args", &predict_args) || get_item(entry, "post_predict_args", &post_args))
            goto error;
        cx_api_config *c = &configs[i];
        if ((c->name = PyUnicode_AsUTF8(name)) == NULL || (c->endpoint = PyUnicode_AsUTF8(endpoint)) == NULL)
            goto error;
        char *body;
        Py_ssize_t body_len;
        if (PyBytes_AsStringAndSize(get_body, &body, &body_len) < 0)
            goto error;
        c->get_body = body;
        c->get_body_len = (size_t)body_len;
        c->max_concurrency = (unsigned)PyLong_AsUnsignedLong(max_concurrency);
        if (PyErr_Occurred())
            goto error;
        cx_handler *h = &self->handlers[i];
        PyObject *log_slot = PyDict_GetItemString(entry, "log_slot");
        h->log_slot = log_slot ? (int)PyLong_AsLong(log_slot) : (int)i;
        if (h->log_slot == -1 && PyErr_Occurred())
            goto error;
        c->log_slot = h->log_slot;
        if (cx_handler_set_args(h, predict_args, 0) < 0)
            goto error;
        PyObject *is_async = PyDict_GetItemString(entry, "async");
        if (is_async && (c->is_async = PyObject_IsTrue(is_async)) < 0)
            goto error;
        if (!c->is_async && (h->needs & CX_INTERNAL_ARGS)) {
            PyErr_SetString(PyExc_ValueError, "only an async api's handler takes body or content_type");
            goto error;
        }
        if (post_args != Py_None && cx_handler_set_args(h, post_args, 1) < 0)
            goto error;
        PyObject *batch_size = PyDict_GetItemString(entry, "max_batch_size");
        PyObject *batch_interval = PyDict_GetItemString(entry, "batch_interval");
        if (batch_size && batch_size != Py_None) {
            h->max_batch_size = PyLong_AsSize_t(batch_size);
            h->batch_interval = batch_interval ? PyFloat_AsDouble(batch_interval) : 0.0;
            if (PyErr_Occurred())
                goto error;
        }
        if (h->needs & (1u << CX_ARG_HEADERS))
            c->wants |= CX_WANT_HEADERS;
        if (h->needs & (1u << CX_ARG_QUERY_PARAMS))
            c->wants |= CX_WANT_QUERY;
    }
    cx_server_config config = {
        .host = host,
        .port = port,
        .max_body = (size_t)max_body,
        .idle_timeout = idle_timeout,
        .request_timeout = request_timeout,
        .access_log = access_log,
        .n_apis = (size_t)n,
        .apis = configs,
        .listen_fd = listen_fd,
        .max_connections = max_connections,
        .realtime_io = realtime_io,
    };
    char err[256] = "";
    if (cx_bridge_start_server(&config, &self->server, err, sizeof err) != 0) {
        PyErr_SetString(PyExc_OSError, err);
        goto error;
    }
    CX_PYMEM_FREE(CX_ALLOC_HANDLERS, configs);
    return (PyObject *)self;
error:
    CX_PYMEM_FREE(CX_ALLOC_HANDLERS, configs);
    Py_XDECREF(self);
    return NULL;
}

static int check_open(CxServerObject *self)
{
    if (self->server == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the server is closed");
        return -1;
    }
    return 0;
}

/* set_handler(index, predict, post_predict=None): the predictor is built; route to it. */
static PyObject *server_set_handler(CxServerObject *self, PyObject *args)
{
    Py_ssize_t index;
    PyObject *predict, *post_predict = Py_None;
    if (!PyArg_ParseTuple(args, "nO|O", &index, &predict, &post_predict))
        return NULL;
    if (index < 0 || index >= self->n_apis) {
        PyErr_SetString(PyExc_IndexError, "no api at that index");
        return NULL;
    }
    if (!PyCallable_Check(predict) || (post_predict != Py_None && !PyCallable_Check(post_predict))) {
        PyErr_SetString(PyExc_TypeError, "predict and post_predict must be callable");
        return NULL;
    }
    cx_handler *h = &self->handlers[index];
    Py_XSETREF(h->predict, Py_NewRef(predict));
    Py_XSETREF(h->post_predict, post_predict == Py_None ? NULL : Py_NewRef(post_predict));
    Py_RETURN_NONE;
}

/* set_async_handler(index, submit, status): an AsyncAPI's POST calls submit with its
 * predict_args; GET <endpoint>/<id> calls status(id).  Both return what predict would. */
static PyObject *server_set_async_handler(CxServerObject *self, PyObject *args)
{
    Py_ssize_t index;
    PyObject *submit, *status;
    if (!PyArg_ParseTuple(args, "nOO", &index, &submit, &status))
        return NULL;
    if (index < 0 || index >= self->n_apis) {
        PyErr_SetString(PyExc_IndexError, "no api at that index");
        return NULL;
    }
    if (!PyCallable_Check(submit) || !PyCallable_Check(status)) {
        PyErr_SetString(PyExc_TypeError, "submit and status must be callable");
        return NULL;
    }
    cx_handler *h = &self->handlers[index];
    Py_XSETREF(h->predict, Py_NewRef(submit));
    Py_XSETREF(h->status, Py_NewRef(status));
    Py_RETURN_NONE;
}

/* call_soon(callable) -> bool: the next free work() thread calls callable() (what it
 * raises is logged).  False, and nothing queued, once the workers are stopping. */
static PyObject *server_call_soon(CxServerObject *self, PyObject *callable)
{
    if (check_open(self) < 0)
        return NULL;
    if (!PyCallable_Check(callable)) {
        PyErr_SetString(PyExc_TypeError, "call_soon needs a callable");
        return NULL;
    }
    Py_INCREF(callable); /* the queued job owns this reference; bridge.c drops it */
    /* the server lock is never held by a thread that waits for the GIL: safe to take here */
    if (cx_server_enqueue_call(self->server, callable) != 0) {
        Py_DECREF(callable);
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* set_get_body(index, body): what GET on API `index` answers from now on. */
static PyObject *server_set_get_body(CxServerObject *self, PyObject *args)
{
    Py_ssize_t index;
    const char *body;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "ny#", &index, &body, &len))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (index < 0 || cx_server_set_get_body(self->server, (size_t)index, body, (size_t)len) != 0) {
        PyErr_SetString(PyExc_IndexError, "no api at that index");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *server_set_ready(CxServerObject *self, PyObject *arg)
{
    if (check_open(self) < 0)
        return NULL;
    int ready = PyObject_IsTrue(arg);
    if (ready < 0)
        return NULL;
    cx_server_set_ready(self->server, ready);
    Py_RETURN_NONE;
}

/* set_shared_ready(buffer): with worker processes, ready also needs byte 0 of this shared
 * writable buffer (an mmap the supervisor sets while every worker is ready). */
static PyObject *server_set_shared_ready(CxServerObject *self, PyObject *buffer)
{
    if (check_open(self) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (view.len < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "the shared ready flag needs at least one byte");
        return NULL;
    }
    if (self->shared_ready.obj)
        PyBuffer_Release(&self->shared_ready);
    self->shared_ready = view;
    cx_server_set_shared_ready(self->server, (const volatile unsigned char *)view.buf);
    Py_RETURN_NONE;
}

/* work(only_async=False): serve queued requests on this thread until the server stops.
 * Each thread that calls it is one of threads_per_process; with one, predict always runs on
 * the caller.  only_async: take only AsyncAPI submit/status jobs, which run no user code. */
static PyObject *server_work(CxServerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"only_async", NULL};
    int only_async = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p", kwlist, &only_async))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    cx_module_state *state = cx_state_from_type(Py_TYPE(self));
    Py_INCREF(self); /* close() from another thread must not free us mid-loop */
    PyObject *result = cx_bridge_work(state, self->server, self->handlers, only_async);
    Py_DECREF(self);
    return result;
}

static PyObject *server_begin_drain(CxServerObject *self, PyObject *arg)
{
    double grace = PyFloat_AsDouble(arg);
    if (grace == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->server)
        cx_server_begin_drain(self->server, grace);
    Py_RETURN_NONE;
}

static PyObject *server_wait_drained(CxServerObject *self, PyObject *arg)
{
    if (check_open(self) < 0)
        return NULL;
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(cx_bridge_wait_drained(self->server, timeout));
}

static PyObject *server_stop_workers(CxServerObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->server)
        cx_server_stop_workers(self->server);
    Py_RETURN_NONE;
}

static PyObject *server_close(CxServerObject *self, PyObject *Py_UNUSED(ignored))
{
    server_shutdown(self);
    Py_RETURN_NONE;
}

static PyObject *server_get_port(CxServerObject *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(cx_server_port(self->server));
}

static PyMethodDef server_methods[] = {
    {"set_handler", (PyCFunction)server_set_handler, METH_VARARGS,
     "set_handler(index, predict, post_predict=None): route API `index` to these callables."},
    {"set_async_handler", (PyCFunction)server_set_async_handler, METH_VARARGS,
     "set_async_handler(index, submit, status): an AsyncAPI's POST and GET <endpoint>/<id>."},
    {"call_soon", (PyCFunction)server_call_soon, METH_O,
     "call_soon(callable) -> bool: run callable() on the next free work() thread."},
    {"set_get_body", (PyCFunction)server_set_get_body, METH_VARARGS,
     "set_get_body(index, body): what GET on API `index` answers from now on."},
    {"set_ready", (PyCFunction)server_set_ready, METH_O, "set_ready(flag): /healthz and predictions open."},
    {"set_shared_ready", (PyCFunction)server_set_shared_ready, METH_O,
     "set_shared_ready(buffer): also require byte 0 of a shared buffer to be set."},
    {"work", (PyCFunction)(void (*)(void))server_work, METH_VARARGS | METH_KEYWORDS,
     "work(only_async=False): serve requests on this thread until stopped."},
    {"begin_drain", (PyCFunction)server_begin_drain, METH_O,
     "begin_drain(grace): stop accepting; work() returns once nothing is in flight or after grace s."},
    {"wait_drained", (PyCFunction)server_wait_drained, METH_O,
     "wait_drained(timeout) -> bool: wait until no request is in flight."},
    {"stop_workers", (PyCFunction)server_stop_workers, METH_NOARGS, "Make every work() return."},
    {"close", (PyCFunction)server_close, METH_NOARGS, "Stop the server threads and close connections."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef server_getset[] = {
    {"port", (getter)server_get_port, NULL, "The bound port.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot server_slots[] = {
    {Py_tp_new, server_new},
    {Py_tp_dealloc, server_dealloc},
    {Py_tp_traverse, server_traverse},
    {Py_tp_clear, server_clear},
    {Py_tp_methods, server_methods},
    {Py_tp_getset, server_getset},
    {Py_tp_doc, "Server(host, port, max_body_size, idle_timeout, access_log, apis, listen_fd=-1, "
                "request_timeout=0, max_connections=0, realtime_io=True)"},
    {0, NULL},
};

PyType_Spec cx_server_type_spec = {
    .name = "cortex_runtime._core.Server",
    .basicsize = sizeof(CxServerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = server_slots,
};

/* The request path without HTTP, for `python -m cortex_runtime predict`. */
PyObject *cx_call_predictor(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"predict", "arg_names", "content_type", "body", "request_id", NULL};
    PyObject *predict, *arg_names, *content_type;
    const char *body, *request_id;
    Py_ssize_t body_len;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOy#s", kwlist, &predict, &arg_names,
                                     &content_type, &body, &body_len, &request_id))
        return NULL;
    cx_module_state *state = cx_state_from_module(module);
    cx_handler h = {0};
    PyObject *result = NULL;
    cx_request *req = cx_request_new();
    if (req == NULL)
        return PyErr_NoMemory();
    if (cx_handler_set_args(&h, arg_names, 0) < 0)
        goto done;
    h.predict = Py_NewRef(predict);
    h.log_slot = cx_log_current_slot();
    req->api = 0;
    snprintf(req->request_id, sizeof req->request_id, "%s", request_id);
    if (content_type != Py_None) {
        const char *ct = PyUnicode_AsUTF8(content_type);
        if (ct == NULL || (req->content_type = CX_STRDUP(CX_ALLOC_REQUEST_FIELD, ct)) == NULL)
            goto done;
    }
    cx_buf_init(&req->body, 0);
    if (cx_buf_append(&req->body, body, (size_t)body_len) != 0) {
        PyErr_NoMemory();
        goto done;
    }
    cx_bridge_predict(state, &h, req);
    const char *type = req->response_type;
    if (type == NULL)
        type = "application/json";
    result = Py_BuildValue("(iNy#)", req->status, type[0] ? PyUnicode_FromString(type) : Py_NewRef(Py_None),
                           req->response_body ? req->response_body : "", (Py_ssize_t)req->response_len);
done:
    cx_handler_clear(&h);
    cx_request_free(req);
    return result;
}
