#include "logger.h"

#include <limits.h>

#include "bridge.h"
#include "json_encode.h"
#include "log.h"

static int as_int(PyObject *arg, int *out)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value out of range");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Builds the whole line for record into line.  0, or -1 with an exception set. */
static int format_record(cx_module_state *st, PyObject *record, cx_buf *line)
{
    int rc = -1;
    PyObject *levelname = NULL, *created = NULL, *process = NULL, *message = NULL, *exc_info = NULL,
             *exc_text = NULL, *attrs = NULL;
    if ((levelname = PyObject_GetAttr(record, st->str_levelname)) == NULL
        || (created = PyObject_GetAttr(record, st->str_created)) == NULL
        || (process = PyObject_GetAttr(record, st->str_process)) == NULL
        || (message = PyObject_CallMethodNoArgs(record, st->str_getMessage)) == NULL
        || (attrs = PyObject_GetAttr(record, st->str_dict)) == NULL)
        goto done;
    const char *level_text = PyUnicode_AsUTF8(levelname);
    Py_ssize_t message_len;
    const char *message_text = PyUnicode_AsUTF8AndSize(message, &message_len);
    double created_s = PyFloat_AsDouble(created);
    long pid = process == Py_None ? 0 : PyLong_AsLong(process);
    if (level_text == NULL || message_text == NULL || PyErr_Occurred())
        goto done;
    if (cx_log_begin(line, created_s, level_text, message_text, (size_t)message_len, pid) != 0)
        goto nomem;

    exc_info = PyObject_GetAttr(record, st->str_exc_info);
    if (exc_info == NULL)
        goto done;
    if (PyTuple_Check(exc_info) && PyTuple_GET_SIZE(exc_info) == 3 && PyTuple_GET_ITEM(exc_info, 0) != Py_None) {
        exc_text = PyObject_CallOneArg(st->format_exception, exc_info);
        if (exc_text == NULL)
            goto done;
        Py_ssize_t n;
        const char *text = PyUnicode_AsUTF8AndSize(exc_text, &n);
        if (text == NULL)
            goto done;
        if (cx_log_key(line, "exc_info", 8) != 0 || cx_log_json_string(line, text, (size_t)n) != 0)
            goto nomem;
    }

    /* extra={...} lands in the record's __dict__ after logging's own attributes */
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        int standard = PySet_Contains(st->standard_record_attrs, key);
        if (standard < 0)
            goto done;
        if (standard || !PyUnicode_Check(key))
            continue;
        Py_ssize_t key_len;
        const char *key_text = PyUnicode_AsUTF8AndSize(key, &key_len);
        if (key_text == NULL)
            goto done;
        if (cx_log_key(line, key_text, (size_t)key_len) != 0)
            goto nomem;
        Py_INCREF(value); /* str() of a value runs Python code that could drop the dict's reference */
        int bad = cx_json_encode_ex(value, line, 1);
        Py_DECREF(value);
        if (bad)
            goto done;
    }
    if (cx_log_end(line) != 0)
        goto nomem;
    rc = 0;
    goto done;
nomem:
    PyErr_NoMemory();
done:
    Py_XDECREF(levelname);
    Py_XDECREF(created);
    Py_XDECREF(process);
    Py_XDECREF(message);
    Py_XDECREF(exc_info);
    Py_XDECREF(exc_text);
    Py_XDECREF(attrs);
    return rc;
}

/* Cortex dropped lines over 5 MB rather than flood the log pipeline */
#define MAX_LINE (5 * 1024 * 1024)

/* Formats record and writes it (when enabled, or always when filtered is 0). */
static PyObject *emit(PyObject *module, PyObject *record, int filtered)
{
    cx_module_state *st = cx_state_from_module(module);
    if (filtered) {
        PyObject *levelno = PyObject_GetAttr(record, st->str_levelno);
        if (levelno == NULL)
            return NULL;
        long level = PyLong_AsLong(levelno);
        Py_DECREF(levelno);
        if (level == -1 && PyErr_Occurred())
            return NULL;
        if (!cx_log_enabled(-1, (int)level))
            Py_RETURN_NONE;
    }
    cx_buf line;
    cx_buf_init(&line, 0);
    if (format_record(st, record, &line) < 0) {
        cx_buf_free(&line);
        return NULL;
    }
    if (line.len <= MAX_LINE)
        cx_bridge_write_log(&line);
    cx_buf_free(&line);
    Py_RETURN_NONE;
}

PyObject *cx_logger_emit(PyObject *module, PyObject *record)
{
    return emit(module, record, 1);
}

PyObject *cx_logger_emit_unfiltered(PyObject *module, PyObject *record)
{
    return emit(module, record, 0);
}

PyObject *cx_logger_format(PyObject *module, PyObject *record)
{
    cx_module_state *st = cx_state_from_module(module);
    cx_buf line;
    cx_buf_init(&line, 0);
    if (format_record(st, record, &line) < 0) {
        cx_buf_free(&line);
        return NULL;
    }
    PyObject *text = PyUnicode_DecodeUTF8(line.data, (Py_ssize_t)(line.len - 1), "strict");
    cx_buf_free(&line);
    return text;
}

PyObject *cx_logger_set_level(PyObject *module, PyObject *args)
{
    (void)module;
    int api, level;
    if (!PyArg_ParseTuple(args, "ii", &api, &level))
        return NULL;
    if (api < 0)
        cx_log_set_default_level(level);
    else if (api < CX_LOG_MAX_SLOTS)
        cx_log_set_slot_level(api, level);
    else
        return PyErr_Format(PyExc_ValueError, "log slots are 0..%d", CX_LOG_MAX_SLOTS - 1);
    Py_RETURN_NONE;
}

PyObject *cx_logger_set_fd(PyObject *module, PyObject *args)
{
    (void)module;
    int fd, slot = -1;
    if (!PyArg_ParseTuple(args, "i|i", &fd, &slot))
        return NULL;
    if (slot < 0)
        cx_log_set_fd(fd);
    else if (slot < CX_LOG_MAX_SLOTS)
        cx_log_set_slot_fd(slot, fd);
    else
        return PyErr_Format(PyExc_ValueError, "log slots are 0..%d", CX_LOG_MAX_SLOTS - 1);
    Py_RETURN_NONE;
}

PyObject *cx_logger_set_current_api(PyObject *module, PyObject *arg)
{
    (void)module;
    int api;
    if (as_int(arg, &api) < 0)
        return NULL;
    int previous = cx_log_current_slot();
    cx_log_set_current_slot(api);
    return PyLong_FromLong(previous);
}
