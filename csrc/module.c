/* cortex_runtime._core: module state, type registration, helper installation. */
#include "module.h"

#include <string.h>

#include "alloc_count.h"
#include "buf.h"
#include "json_decode.h"
#include "json_encode.h"
#include "logger.h"
#include "metrics_client.h"
#include "pow10.h"
#include "server_type.h"
#include "tensor_convert.h"

cx_module_state *cx_state_from_module(PyObject *module)
{
    return (cx_module_state *)PyModule_GetState(module);
}

cx_module_state *cx_state_from_type(PyTypeObject *type)
{
    return (cx_module_state *)PyType_GetModuleState(type);
}

#define STATE_HELPERS(X)                                                                      \
    X(decode_form) X(response_parts) X(make_headers) X(log_exception) X(format_exception)

/* install_helpers(**callables): the Python side hands over what the slow paths call. */
static PyObject *install_helpers(PyObject *module, PyObject *args, PyObject *kwargs)
{
    cx_module_state *st = cx_state_from_module(module);
    if (PyTuple_GET_SIZE(args) != 0 || kwargs == NULL) {
        PyErr_SetString(PyExc_TypeError, "install_helpers takes keyword arguments only");
        return NULL;
    }
    PyObject *value;
#define INSTALL(name)                                                                         \
    value = PyDict_GetItemString(kwargs, #name);                                              \
    if (value == NULL || !PyCallable_Check(value)) {                                          \
        PyErr_SetString(PyExc_TypeError, "install_helpers needs a callable " #name);          \
        return NULL;                                                                          \
    }                                                                                         \
    Py_XSETREF(st->name, Py_NewRef(value));
    STATE_HELPERS(INSTALL)
#undef INSTALL
    Py_RETURN_NONE;
}

/* json_loads(bytes | str) -> value; JSONDecodeError (a ValueError) saying what and where. */
static PyObject *json_loads(PyObject *module, PyObject *data)
{
    cx_module_state *st = cx_state_from_module(module);
    const char *bytes;
    Py_ssize_t len;
    PyObject *encoded = NULL; /* the surrogatepass UTF-8 of a str with lone surrogates */
    int surrogates = 0;
    if (PyUnicode_Check(data)) {
        bytes = PyUnicode_AsUTF8AndSize(data, &len);
        if (bytes == NULL) {
            /* only surrogates make a str unencodable; json.loads keeps them as they are */
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
                return NULL;
            PyErr_Clear();
            encoded = PyUnicode_AsEncodedString(data, "utf-8", "surrogatepass");
            if (encoded == NULL)
                return NULL;
            bytes = PyBytes_AS_STRING(encoded);
            len = PyBytes_GET_SIZE(encoded);
            surrogates = 1;
        }
    } else if (PyBytes_Check(data)) {
        bytes = PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
    } else if (PyByteArray_Check(data)) {
        bytes = PyByteArray_AS_STRING(data);
        len = PyByteArray_GET_SIZE(data);
    } else {
        return PyErr_Format(PyExc_TypeError, "the JSON object must be str, bytes or bytearray, not %.100s",
                            Py_TYPE(data)->tp_name);
    }
    cx_json_error error;
    PyObject *value = cx_json_decode_ex(&st->key_cache, bytes, (size_t)len, surrogates, &error);
    Py_XDECREF(encoded);
    if (value == NULL && !PyErr_Occurred()) {
        PyObject *exc = PyObject_CallFunction(st->json_decode_error, "s", error.message);
        if (exc != NULL) {
            PyObject *pos = PyLong_FromSize_t(error.position);
            if (pos == NULL || PyObject_SetAttrString(exc, "pos", pos) < 0) {
                Py_XDECREF(pos);
                Py_DECREF(exc);
                return NULL;
            }
            Py_DECREF(pos);
            PyErr_SetObject(st->json_decode_error, exc);
            Py_DECREF(exc);
        }
    }
    return value;
}

/* Scratch memory json_dumps keeps between calls; a bigger document's is given back. */
#define DUMPS_SCRATCH_KEEP (1u << 20)

/* From this size of the last result on, json_dumps writes straight into the str it returns:
 * one of the size guessed from the last result, grown if need be and shrunk in place at the
 * end, which costs less than copying a big text out of the scratch buffer; below it, the
 * copy is the cheaper of the two. */
#define DUMPS_DIRECT_MIN (16u << 10)

/* a cx_buf whose data is the text of a str (maxchar 127, refcount 1) */
typedef struct {
    cx_buf buf; /* first, so a cx_buf pointer to it is one to this */
    PyObject *text;
} str_buf;

static int grow_text(cx_buf *buf, size_t needed)
{
    str_buf *sb = (str_buf *)buf;
    size_t cap = buf->cap;
    while (cap < needed) {
        if (cap > (size_t)PY_SSIZE_T_MAX / 2)
            return CX_BUF_NOMEM;
        cap *= 2;
    }
    /* the str's length covers all it has room for; the end is set right when done */
    if (PyUnicode_Resize(&sb->text, (Py_ssize_t)(cap - 1)) < 0)
        return CX_BUF_NOMEM;
    buf->data = (char *)PyUnicode_1BYTE_DATA(sb->text);
    buf->cap = cap;
    return CX_BUF_OK;
}

static PyObject *dumps_direct(cx_module_state *st, PyObject *obj)
{
    size_t guess = st->dumps_last_len + st->dumps_last_len / 8 + 256;
    str_buf sb;
    sb.text = PyUnicode_New((Py_ssize_t)guess, 127); /* ensure_ascii: always ASCII */
    if (sb.text == NULL)
        return NULL;
    cx_buf_init(&sb.buf, 0);
    sb.buf.data = (char *)PyUnicode_1BYTE_DATA(sb.text);
    sb.buf.cap = guess + 1; /* the str's own terminating byte is the spare one */
    sb.buf.grow = grow_text;
    if (cx_json_encode_keyed(obj, &sb.buf, &st->dumps_keys) < 0
        || PyUnicode_Resize(&sb.text, (Py_ssize_t)sb.buf.len) < 0) {
        Py_DECREF(sb.text);
        return NULL;
    }
    st->dumps_last_len = sb.buf.len;
    return sb.text;
}

/* json_dumps(obj) -> str, byte-identical to json.dumps(obj). */
static PyObject *json_dumps(PyObject *module, PyObject *obj)
{
    cx_module_state *st = cx_state_from_module(module);
    if (st->dumps_last_len >= DUMPS_DIRECT_MIN)
        return dumps_direct(st, obj);
    cx_buf local;
    cx_buf *out = &local;
    if (st->dumps_busy) {
        cx_buf_init(&local, 0);
    } else {
        out = &st->dumps_scratch;
        out->len = 0;
        st->dumps_busy = 1;
    }
    PyObject *text = NULL;
    if (cx_json_encode_keyed(obj, out, &st->dumps_keys) == 0) {
        st->dumps_last_len = out->len;
        text = PyUnicode_New((Py_ssize_t)out->len, 127); /* ensure_ascii: always ASCII */
        if (text != NULL && out->len)
            memcpy(PyUnicode_1BYTE_DATA(text), out->data, out->len);
    }
    if (out == &local) {
        cx_buf_free(&local);
    } else {
        st->dumps_busy = 0;
        if (out->cap > DUMPS_SCRATCH_KEEP)
            cx_buf_free(out);
    }
    return text;
}

#ifdef CORTEX_ALLOC_COUNTERS
/* _alloc_counts() -> {kind: live allocations}: only in builds with the counters. */
static PyObject *alloc_counts(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *counts = PyDict_New();
    if (counts == NULL)
        return NULL;
    for (int kind = 0; kind < CX_ALLOC_KINDS; kind++) {
        PyObject *live = PyLong_FromLong(cx_alloc_live((cx_alloc_kind)kind));
        /* SetItemString does not steal: live is ours to release either way */
        int rc = live ? PyDict_SetItemString(counts, cx_alloc_kind_name((cx_alloc_kind)kind), live) : -1;
        Py_XDECREF(live);
        if (rc < 0) {
            Py_DECREF(counts);
            return NULL;
        }
    }
    return counts;
}
#endif

static PyMethodDef module_methods[] = {
#ifdef CORTEX_ALLOC_COUNTERS
    {"_alloc_counts", alloc_counts, METH_NOARGS,
     "_alloc_counts() -> {kind: live count} of the C core's allocations (debug builds only)."},
#endif
    {"json_loads", (PyCFunction)json_loads, METH_O, "json_loads(bytes | str) -> value (strict RFC 8259)."},
    {"json_dumps", (PyCFunction)json_dumps, METH_O, "json_dumps(obj) -> str, as json.dumps(obj)."},
    {"install_helpers", (PyCFunction)(void (*)(void))install_helpers, METH_VARARGS | METH_KEYWORDS,
     "Install the Python callables used on slow paths."},
    {"emit", (PyCFunction)cx_logger_emit, METH_O, "emit(record): write a LogRecord as a JSON line."},
    {"emit_unfiltered", (PyCFunction)cx_logger_emit_unfiltered, METH_O,
     "emit_unfiltered(record): write a LogRecord whatever the level."},
    {"format_record", (PyCFunction)cx_logger_format, METH_O, "format_record(record) -> str."},
    {"set_log_level", (PyCFunction)cx_logger_set_level, METH_VARARGS,
     "set_log_level(slot, levelno); slot -1 is the default."},
    {"set_log_fd", (PyCFunction)cx_logger_set_fd, METH_VARARGS,
     "set_log_fd(fd, slot=-1): where log lines go, by default or for one API's slot."},
    {"set_current_api", (PyCFunction)cx_logger_set_current_api, METH_O,
     "set_current_api(slot) -> previous: whose log level and sink apply on this thread."},
    {"call_predictor", (PyCFunction)(void (*)(void))cx_call_predictor, METH_VARARGS | METH_KEYWORDS,
     "call_predictor(predict, arg_names, content_type, body, request_id) -> (status, media_type, body)."},
    {"metrics_setup", cx_metrics_setup_py, METH_NOARGS,
     "metrics_setup(): map the metrics registry shared by the worker processes forked after it."},
    {"metrics_text", cx_metrics_text_py, METH_NOARGS, "metrics_text() -> str: the /metrics exposition."},
    {"float_list", (PyCFunction)(void (*)(void))cx_float_list, METH_FASTCALL,
     "float_list(buffer, exact=False) -> list: float32/float64 values as Cortex's client gave them."},
    {NULL, NULL, 0, NULL},
};

static const char *const standard_attrs[] = {
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module", "exc_info",
    "exc_text", "stack_info", "lineno", "funcName", "created", "msecs", "relativeCreated", "thread",
    "threadName", "processName", "process", "message", "asctime", "taskName", NULL,
};

static int module_exec(PyObject *module)
{
    cx_module_state *st = cx_state_from_module(module);
    cx_pow10_init(); /* the JSON codec's float tables, before any call can need them */
    st->json_decode_error = PyErr_NewExceptionWithDoc(
        "cortex_runtime.json.JSONDecodeError", "Invalid JSON; .pos is the byte offset of the problem.",
        PyExc_ValueError, NULL);
    if (st->json_decode_error == NULL || PyModule_AddObjectRef(module, "JSONDecodeError", st->json_decode_error) < 0)
        return -1;
    st->server_type = PyType_FromModuleAndSpec(module, &cx_server_type_spec, NULL);
    if (st->server_type == NULL || PyModule_AddObjectRef(module, "Server", st->server_type) < 0)
        return -1;
    st->metrics_client_type = PyType_FromModuleAndSpec(module, &cx_metrics_client_type_spec, NULL);
    if (st->metrics_client_type == NULL
        || PyModule_AddObjectRef(module, "MetricsClient", st->metrics_client_type) < 0)
        return -1;
    PyObject *names = PyList_New(0);
    if (names == NULL)
        return -1;
    for (const char *const *p = standard_attrs; *p; p++) {
        PyObject *s = PyUnicode_InternFromString(*p);
        if (s == NULL || PyList_Append(names, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(names);
            return -1;
        }
        Py_DECREF(s);
    }
    st->standard_record_attrs = PyFrozenSet_New(names);
    Py_DECREF(names);
    if (st->standard_record_attrs == NULL)
        return -1;
#define INTERN(field, text)                                                                   \
    if ((st->field = PyUnicode_InternFromString(text)) == NULL)                                \
        return -1;
    INTERN(str_levelno, "levelno")
    INTERN(str_levelname, "levelname")
    INTERN(str_created, "created")
    INTERN(str_process, "process")
    INTERN(str_exc_info, "exc_info")
    INTERN(str_exc_text, "exc_text")
    INTERN(str_getMessage, "getMessage")
    INTERN(str_dict, "__dict__")
#undef INTERN
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    cx_module_state *st = cx_state_from_module(module);
    Py_VISIT(st->server_type);
    Py_VISIT(st->metrics_client_type);
    Py_VISIT(st->json_decode_error);
    for (size_t i = 0; i < CX_JSON_KEY_CACHE_SIZE; i++)
        Py_VISIT(st->key_cache.keys[i]);
#define VISIT(name) Py_VISIT(st->name);
    STATE_HELPERS(VISIT)
#undef VISIT
    return 0;
}

static int module_clear(PyObject *module)
{
    cx_module_state *st = cx_state_from_module(module);
    Py_CLEAR(st->server_type);
    Py_CLEAR(st->metrics_client_type);
    Py_CLEAR(st->json_decode_error);
    cx_json_key_cache_clear(&st->key_cache);
    cx_json_key_texts_clear(&st->dumps_keys);
    cx_buf_free(&st->dumps_scratch);
#define CLEAR(name) Py_CLEAR(st->name);
    STATE_HELPERS(CLEAR)
#undef CLEAR
    Py_CLEAR(st->standard_record_attrs);
    Py_CLEAR(st->str_levelno);
    Py_CLEAR(st->str_levelname);
    Py_CLEAR(st->str_created);
    Py_CLEAR(st->str_process);
    Py_CLEAR(st->str_exc_info);
    Py_CLEAR(st->str_exc_text);
    Py_CLEAR(st->str_getMessage);
    Py_CLEAR(st->str_dict);
    return 0;
}

static void module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cortex_runtime._core",
    .m_doc = "The C core of cortex_runtime: HTTP server, payloads, JSON log lines.",
    .m_size = sizeof(cx_module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void);

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
