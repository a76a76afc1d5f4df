#include "json_encode.h"

#include "float_format.h"
#include "pow10.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Containers deeper than this are checked against the path for cycles; a cycle repeats
 * forever, so it is always found, and shallow documents never pay for the check. */
#define CYCLE_CHECK_DEPTH 64

typedef struct {
    cx_buf *out;
    int str_fallback; /* unknown types become str(obj), like json.dumps(default=str) */
    int depth;
    int path_cap;
    PyObject **path; /* the containers being encoded, outermost first (borrowed) */
    PyObject *small_path[CYCLE_CHECK_DEPTH];
} encoder;

static int nomem(void)
{
    PyErr_NoMemory();
    return -1;
}

/* cx_buf_append without the call when the bytes fit (the common case); the same checks
 * (cap keeps one spare byte, the limit holds) and the same fallback otherwise. */
static inline int put(cx_buf *out, const void *bytes, size_t n)
{
    if (out->len + n + 1 <= out->cap && (out->limit == 0 || out->len + n <= out->limit)) {
        memcpy(out->data + out->len, bytes, n);
        out->len += n;
        return 0;
    }
    return cx_buf_append(out, bytes, n) == 0 ? 0 : nomem();
}

#define APPEND(e, literal) put((e)->out, literal, sizeof(literal) - 1)

static const char hex_digits[] = "0123456789abcdef";

/* type(obj).__name__, as json's messages name types */
static const char *short_type_name(PyObject *obj)
{
    const char *name = Py_TYPE(obj)->tp_name;
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}


/* ensure_ascii: everything outside ' '..'~' is escaped, as json's ESCAPE_ASCII does */
static int append_escaped(cx_buf *out, PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (put(out, "\"", 1) < 0)
        return -1;
    Py_ssize_t i = 0;
    while (i < n) {
        if (kind == PyUnicode_1BYTE_KIND) {
            const unsigned char *bytes = data;
            Py_ssize_t run = i;
            while (run < n && bytes[run] >= 0x20 && bytes[run] < 0x7f && bytes[run] != '"' && bytes[run] != '\\')
                run++;
            if (run > i) {
                if (put(out, bytes + i, (size_t)(run - i)) < 0)
                    return -1;
                i = run;
                continue;
            }
        }
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        i++;
        char esc[12];
        size_t len;
        switch (c) {
        case '"': memcpy(esc, "\\\"", 2); len = 2; break;
        case '\\': memcpy(esc, "\\\\", 2); len = 2; break;
        case '\n': memcpy(esc, "\\n", 2); len = 2; break;
        case '\r': memcpy(esc, "\\r", 2); len = 2; break;
        case '\t': memcpy(esc, "\\t", 2); len = 2; break;
        case '\b': memcpy(esc, "\\b", 2); len = 2; break;
        case '\f': memcpy(esc, "\\f", 2); len = 2; break;
        default:
            if (c >= 0x20 && c < 0x7f) {
                esc[0] = (char)c;
                len = 1;
            } else {
                Py_UCS4 units[2];
                int count = 1;
                units[0] = c;
                if (c >= 0x10000) {
                    Py_UCS4 v = c - 0x10000;
                    units[0] = 0xd800 | (v >> 10);
                    units[1] = 0xdc00 | (v & 0x3ff);
                    count = 2;
                }
                len = 0;
                for (int u = 0; u < count; u++) {
                    esc[len++] = '\\';
                    esc[len++] = 'u';
                    esc[len++] = hex_digits[(units[u] >> 12) & 0xf];
                    esc[len++] = hex_digits[(units[u] >> 8) & 0xf];
                    esc[len++] = hex_digits[(units[u] >> 4) & 0xf];
                    esc[len++] = hex_digits[units[u] & 0xf];
                }
            }
        }
        if (put(out, esc, len) < 0)
            return -1;
    }
    return put(out, "\"", 1);
}

int cx_json_encode_str(PyObject *s, cx_buf *out)
{
    return append_escaped(out, s);
}

static int append_text(encoder *e, PyObject *text)
{
    /* reprs of ints and floats are ASCII */
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
    if (utf8 == NULL)
        return -1;
    return put(e->out, utf8, (size_t)n);
}

/* v in decimal, as "%lld" writes it */
static int append_long_long(cx_buf *out, long long v)
{
    char digits[24];
    char *end = digits + sizeof digits;
    char *p = end;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return put(out, p, (size_t)(end - p));
}

static int append_int(encoder *e, PyObject *obj)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow)
        return append_long_long(e->out, v);
    /* int.__repr__, as json does for ints and their subclasses (and its digit limit) */
    PyObject *text = PyLong_Type.tp_repr(obj);
    if (text == NULL)
        return -1;
    int rc = append_text(e, text);
    Py_DECREF(text);
    return rc;
}

static int append_double(cx_buf *out, double v)
{
    if (isnan(v))
        return put(out, "NaN", 3);
    if (isinf(v))
        return v > 0 ? put(out, "Infinity", 8) : put(out, "-Infinity", 9);
    char text[CX_FLOAT_REPR_MAX];
    size_t n = cx_float_repr(v, text);
    if (n)
        return put(out, text, n);
    /* float.__repr__ is exactly this call */
    char *slow = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (slow == NULL)
        return -1;
    int rc = put(out, slow, strlen(slow));
    PyMem_Free(slow);
    return rc;
}

static int encode(encoder *e, PyObject *obj);

static int enter(encoder *e, PyObject *container)
{
    if (e->depth >= CYCLE_CHECK_DEPTH) {
        for (int i = 0; i < e->depth; i++) {
            if (e->path[i] == container) {
                PyErr_SetString(PyExc_ValueError, "Circular reference detected");
                return -1;
            }
        }
    }
    if (Py_EnterRecursiveCall(" while encoding a JSON object"))
        return -1;
    if (e->depth == e->path_cap) {
        int cap = e->path_cap * 2;
        PyObject **path = PyMem_Malloc((size_t)cap * sizeof *path);
        if (path == NULL) {
            Py_LeaveRecursiveCall();
            return nomem();
        }
        memcpy(path, e->path, (size_t)e->depth * sizeof *path);
        if (e->path != e->small_path)
            PyMem_Free(e->path);
        e->path = path;
        e->path_cap = cap;
    }
    e->path[e->depth++] = container;
    return 0;
}

static void leave(encoder *e)
{
    e->depth--;
    Py_LeaveRecursiveCall();
}

static int encode_sequence(encoder *e, PyObject *seq)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence");
    if (fast == NULL)
        return -1;
    int rc = -1;
    if (enter(e, seq) < 0)
        goto done;
    if (APPEND(e, "[") < 0)
        goto out;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        if (i > 0 && APPEND(e, ", ") < 0)
            goto out;
        PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(fast, i));
        int bad = encode(e, item);
        Py_DECREF(item);
        if (bad)
            goto out;
    }
    rc = APPEND(e, "]");
out:
    leave(e);
done:
    Py_DECREF(fast);
    return rc;
}

/* Dict keys as json.dumps converts them. */
static int encode_key(encoder *e, PyObject *key)
{
    if (PyUnicode_Check(key))
        return append_escaped(e->out, key);
    if (APPEND(e, "\"") < 0)
        return -1;
    int rc;
    if (key == Py_True)
        rc = APPEND(e, "true");
    else if (key == Py_False)
        rc = APPEND(e, "false");
    else if (key == Py_None)
        rc = APPEND(e, "null");
    else if (PyFloat_Check(key))
        rc = append_double(e->out, PyFloat_AS_DOUBLE(key));
    else if (PyLong_Check(key))
        rc = append_int(e, key);
    else {
        /* json's C encoder names the key's type by its full tp_name ("numpy.int64") */
        PyErr_Format(PyExc_TypeError, "keys must be str, int, float, bool or None, not %.100s",
                     Py_TYPE(key)->tp_name);
        return -1;
    }
    if (rc < 0)
        return -1;
    return APPEND(e, "\"");
}

static int encode_pair(encoder *e, PyObject *key, PyObject *value, int first)
{
    if (!first && APPEND(e, ", ") < 0)
        return -1;
    if (encode_key(e, key) < 0 || APPEND(e, ": ") < 0)
        return -1;
    return encode(e, value);
}

static int encode_dict(encoder *e, PyObject *dict)
{
    if (enter(e, dict) < 0)
        return -1;
    int rc = -1;
    if (APPEND(e, "{") < 0)
        goto out;
    if (PyDict_CheckExact(dict)) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        int first = 1;
        while (PyDict_Next(dict, &pos, &key, &value)) {
            Py_INCREF(key);
            Py_INCREF(value);
            int bad = encode_pair(e, key, value, first);
            Py_DECREF(key);
            Py_DECREF(value);
            if (bad)
                goto out;
            first = 0;
        }
    } else { /* subclasses: their items(), as json uses */
        PyObject *items = PyMapping_Items(dict);
        if (items == NULL)
            goto out;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
            PyObject *pair = PyList_GET_ITEM(items, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_ValueError, "items must return 2-tuples");
                Py_DECREF(items);
                goto out;
            }
            if (encode_pair(e, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), i == 0)) {
                Py_DECREF(items);
                goto out;
            }
        }
        Py_DECREF(items);
    }
    rc = APPEND(e, "}");
out:
    leave(e);
    return rc;
}

static int is_numpy(PyObject *obj)
{
    return strncmp(Py_TYPE(obj)->tp_name, "numpy.", 6) == 0;
}

static int encode(encoder *e, PyObject *obj)
{
    if (obj == Py_None)
        return APPEND(e, "null");
    if (obj == Py_True)
        return APPEND(e, "true");
    if (obj == Py_False)
        return APPEND(e, "false");
    if (PyUnicode_Check(obj))
        return append_escaped(e->out, obj);
    if (PyLong_Check(obj))
        return append_int(e, obj);
    if (PyFloat_Check(obj))
        return append_double(e->out, PyFloat_AS_DOUBLE(obj));
    if (PyList_Check(obj) || PyTuple_Check(obj))
        return encode_sequence(e, obj);
    if (PyDict_Check(obj))
        return encode_dict(e, obj);
    if (is_numpy(obj)) {
        /* arrays and scalars: what .tolist() gives, found by name so numpy is never imported */
        PyObject *plain = PyObject_CallMethod(obj, "tolist", NULL);
        if (plain == NULL)
            return -1;
        int rc = -1;
        if (is_numpy(plain))
            PyErr_Format(PyExc_TypeError, "Object of type %.100s is not JSON serializable", short_type_name(obj));
        else if (enter(e, obj) == 0) {
            rc = encode(e, plain);
            leave(e);
        }
        Py_DECREF(plain);
        return rc;
    }
    if (e->str_fallback) {
        PyObject *text = PyObject_Str(obj);
        if (text == NULL)
            return -1;
        int rc = append_escaped(e->out, text);
        Py_DECREF(text);
        return rc;
    }
    PyErr_Format(PyExc_TypeError, "Object of type %.100s is not JSON serializable", short_type_name(obj));
    return -1;
}

int cx_json_encode_ex(PyObject *obj, cx_buf *out, int str_fallback)
{
    encoder e;
    e.out = out;
    e.str_fallback = str_fallback;
    e.depth = 0;
    e.path_cap = CYCLE_CHECK_DEPTH;
    e.path = e.small_path;
    int rc = encode(&e, obj);
    if (e.path != e.small_path)
        PyMem_Free(e.path);
    return rc;
}

int cx_json_encode(PyObject *obj, cx_buf *out)
{
    return cx_json_encode_ex(obj, out, 0);
}
