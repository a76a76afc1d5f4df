#include "payload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "content_type.h"
#include "json_decode.h"
#include "json_encode.h"
#include "log.h"
#include "alloc_count.h"

int cx_response_set(cx_request *req, int status, const char *media_type, const char *body, size_t len)
{
    char *copy = CX_MALLOC(CX_ALLOC_BODY, len + 1);
    char *type = media_type ? CX_STRDUP(CX_ALLOC_REQUEST_FIELD, media_type) : NULL;
    if (copy == NULL || (media_type && type == NULL)) {
        CX_FREE(CX_ALLOC_BODY, copy);
        CX_FREE(CX_ALLOC_REQUEST_FIELD, type);
        return -1;
    }
    memcpy(copy, body, len);
    copy[len] = '\0';
    CX_FREE(CX_ALLOC_BODY, req->response_body);
    CX_FREE(CX_ALLOC_REQUEST_FIELD, req->response_type);
    req->response_body = copy;
    req->response_len = len;
    req->response_type = type;
    req->status = status;
    return 0;
}

/* 400 {"error": "<prefix><str(exception)>"} from the pending exception, which is cleared. */
static void client_error_from_exception(cx_request *req, const char *prefix, const char *media_type)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    const char *detail = "malformed body";
    PyObject *text = NULL;
    if (type && PyErr_GivenExceptionMatches(type, PyExc_RecursionError)) {
        detail = "nesting too deep";
    } else if (value && (text = PyObject_Str(value)) != NULL) {
        const char *utf8 = PyUnicode_AsUTF8(text);
        if (utf8)
            detail = utf8;
    }
    PyErr_Clear();
    cx_buf text_buf, message;
    cx_buf_init(&text_buf, 0);
    cx_buf_init(&message, 0);
    int bad = cx_buf_append_str(&text_buf, prefix) || cx_buf_append_str(&text_buf, detail);
    if (media_type == NULL) /* JSON clients get {"error":"..."} */
        bad = bad || cx_buf_append_str(&message, "{\"error\":")
              || cx_log_json_string(&message, text_buf.data, text_buf.len)
              || cx_buf_append_char(&message, '}');
    else
        bad = bad || cx_buf_append(&message, text_buf.data, text_buf.len);
    cx_buf_free(&text_buf);
    if (!bad)
        cx_response_set(req, 400, media_type, message.data, message.len);
    cx_buf_free(&message);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

static PyObject *decode_json(cx_module_state *state, cx_request *req)
{
    cx_json_error error;
    PyObject *value = cx_json_decode(&state->key_cache, req->body.data ? req->body.data : "",
                                     req->body.len, &error);
    if (value == NULL && !PyErr_Occurred()) {
        char message[sizeof error.message + 16];
        snprintf(message, sizeof message, "invalid JSON: %s", error.message);
        cx_buf body;
        cx_buf_init(&body, 0);
        if (cx_buf_append_str(&body, "{\"error\":") == 0
            && cx_log_json_string(&body, message, strlen(message)) == 0
            && cx_buf_append_char(&body, '}') == 0)
            cx_response_set(req, 400, NULL, body.data, body.len);
        cx_buf_free(&body);
    }
    return value;
}

static PyObject *decode_text(cx_request *req)
{
    char charset[64] = "utf-8";
    if (cx_content_type_param(req->content_type, "charset", charset, sizeof charset) < 0) {
        cx_response_set(req, 400, "text/plain; charset=utf-8", "unknown charset: too long", 25);
        return NULL;
    }
    const char *data = req->body.data ? req->body.data : "";
    PyObject *text = PyUnicode_Decode(data, (Py_ssize_t)req->body.len, charset, "strict");
    if (text == NULL) {
        if (PyErr_ExceptionMatches(PyExc_LookupError) && !PyErr_ExceptionMatches(PyExc_UnicodeError)) {
            PyErr_Clear();
            char message[128];
            int n = snprintf(message, sizeof message, "unknown charset: %s", charset);
            cx_response_set(req, 400, "text/plain; charset=utf-8", message, (size_t)n);
        } else if (PyErr_ExceptionMatches(PyExc_UnicodeError)) {
            client_error_from_exception(req, "", "text/plain; charset=utf-8");
        }
    }
    return text;
}

static PyObject *decode_form(cx_module_state *state, cx_request *req)
{
    PyObject *body = PyBytes_FromStringAndSize(req->body.data ? req->body.data : "", (Py_ssize_t)req->body.len);
    if (body == NULL)
        return NULL;
    PyObject *value = PyObject_CallFunction(state->decode_form, "Os", body,
                                            req->content_type ? req->content_type : "");
    Py_DECREF(body);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_ValueError))
        client_error_from_exception(req, "invalid form body: ", NULL);
    return value;
}

PyObject *cx_payload_decode(cx_module_state *state, cx_request *req)
{
    switch (cx_content_type_kind(req->content_type)) {
    case CX_CT_JSON:
        return decode_json(state, req);
    case CX_CT_TEXT:
        return decode_text(req);
    case CX_CT_FORM_URLENCODED:
    case CX_CT_MULTIPART:
        return decode_form(state, req);
    default:
        return PyBytes_FromStringAndSize(req->body.data ? req->body.data : "", (Py_ssize_t)req->body.len);
    }
}

static int set_from_utf8(cx_request *req, PyObject *text, const char *media_type)
{
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    if (utf8 == NULL)
        return -1;
    if (cx_response_set(req, 200, media_type, utf8, (size_t)len) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int set_from_parts(cx_request *req, PyObject *parts)
{
    PyObject *status_obj, *body, *media_type, *headers;
    if (!PyArg_ParseTuple(parts, "OSOO", &status_obj, &body, &media_type, &headers))
        return -1;
    long status = PyLong_AsLong(status_obj);
    if (status == -1 && PyErr_Occurred())
        return -1;
    if (status < 100 || status > 999) {
        PyErr_Format(PyExc_ValueError, "invalid status code %ld", status);
        return -1;
    }
    const char *type = NULL;
    if (media_type != Py_None && (type = PyUnicode_AsUTF8(media_type)) == NULL)
        return -1;
    /* "" = send no Content-Type at all, as starlette does without a media type */
    if (cx_response_set(req, (int)status, type ? type : "", PyBytes_AS_STRING(body),
                        (size_t)PyBytes_GET_SIZE(body)) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *iter = PyObject_GetIter(headers);
    if (iter == NULL)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(iter)) != NULL) {
        const char *k, *v;
        Py_ssize_t kn, vn;
        if (!PyArg_ParseTuple(item, "s#s#", &k, &kn, &v, &vn)
            || cx_kv_list_add(&req->response_headers, k, (size_t)kn, v, (size_t)vn) != 0) {
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            Py_DECREF(item);
            Py_DECREF(iter);
            return -1;
        }
        Py_DECREF(item);
    }
    Py_DECREF(iter);
    return PyErr_Occurred() ? -1 : 0;
}

int cx_response_encode(cx_module_state *state, cx_request *req, PyObject *result)
{
    if (PyBytes_Check(result)) {
        if (cx_response_set(req, 200, "application/octet-stream", PyBytes_AS_STRING(result),
                            (size_t)PyBytes_GET_SIZE(result)) != 0) {
            PyErr_NoMemory();
            return -1;
        }
        return 0;
    }
    if (PyUnicode_Check(result))
        return set_from_utf8(req, result, "text/plain; charset=utf-8");
    /* the common JSON shapes skip the Response check */
    if (!(PyDict_CheckExact(result) || PyList_CheckExact(result) || PyLong_CheckExact(result)
          || PyFloat_CheckExact(result) || result == Py_None || PyBool_Check(result))) {
        PyObject *parts = PyObject_CallOneArg(state->response_parts, result);
        if (parts == NULL)
            return -1;
        if (parts != Py_None) {
            int rc = set_from_parts(req, parts);
            Py_DECREF(parts);
            return rc;
        }
        Py_DECREF(parts);
    }
    cx_buf body;
    cx_buf_init(&body, 0);
    if (cx_json_encode_keyed(result, &body, &state->dumps_keys) < 0) {
        cx_buf_free(&body);
        return -1;
    }
    CX_FREE(CX_ALLOC_BODY, req->response_body);
    CX_FREE(CX_ALLOC_REQUEST_FIELD, req->response_type);
    req->response_body = cx_buf_steal(&body, &req->response_len);
    req->response_type = NULL; /* JSON */
    req->status = 200;
    return 0;
}
