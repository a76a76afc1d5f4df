#include "metrics_client.h"

#include <stdatomic.h>
#include <string.h>

#include "buf.h"
#include "metrics.h"
#include "statsd.h"

#define MAX_TAGS 32
#define CACHE_SIZE 16 /* per client: (metric str, kind) -> series handle, for calls without tags */

typedef struct {
    PyObject *metric; /* strong reference: its address cannot be reused while cached */
    int kind;
    int handle;
} cache_entry;

typedef struct {
    PyObject_HEAD
    cache_entry cache[CACHE_SIZE]; /* guarded by the GIL */
} CxMetricsClientObject;

/* A process-wide "said once" flag, not a Python object. */
static atomic_int warned_too_long;

static const char *const HELP[] = {
    "Recorded with metrics_client.increment().",
    "Recorded with metrics_client.gauge().",
    "Recorded with metrics_client.histogram().",
};
static const char TYPE_LETTER[] = {'c', 'g', 'h'};

static int refuse_reserved(PyObject *metric, const char *name, size_t len)
{
    if ((len >= 7 && memcmp(name, "cortex_", 7) == 0) || (len >= 6 && memcmp(name, "istio_", 6) == 0)) {
        PyErr_Format(PyExc_ValueError,
                     "Metric name (%U) is invalid because it starts with a cortex exclusive prefix.\n"
                     "The following are prefixes are exclusive to cortex: ('cortex_', 'istio_').",
                     metric);
        return -1;
    }
    return 0;
}

typedef struct {
    PyObject *key, *value; /* str, owned */
    const char *k, *v;
    Py_ssize_t klen, vlen;
    char label[CX_METRICS_MAX_NAME]; /* the key as a label name */
    int label_len;
} tag;

static PyObject *as_str(PyObject *o)
{
    return PyUnicode_Check(o) ? Py_NewRef(o) : PyObject_Str(o);
}

/* tags dict -> Prometheus label text (sorted by label name) and statsd tag text (dict order). */
static int collect_tags(PyObject *tags, tag *items, Py_ssize_t *n_items, cx_buf *labels,
                        cx_buf *statsd_tags)
{
    if (!PyDict_Check(tags)) {
        PyErr_Format(PyExc_TypeError, "tags must be a dict of tag names to values, not %.100s",
                     Py_TYPE(tags)->tp_name);
        return -1;
    }
    if (PyDict_GET_SIZE(tags) > MAX_TAGS) {
        PyErr_Format(PyExc_ValueError, "at most %d tags per metric", MAX_TAGS);
        return -1;
    }
    Py_ssize_t pos = 0, n = 0;
    PyObject *key, *value;
    while (PyDict_Next(tags, &pos, &key, &value)) {
        tag *t = &items[n];
        t->key = as_str(key);
        if (t->key == NULL)
            return -1;
        n++;
        *n_items = n;
        t->value = as_str(value);
        if (t->value == NULL)
            return -1;
        if ((t->k = PyUnicode_AsUTF8AndSize(t->key, &t->klen)) == NULL
            || (t->v = PyUnicode_AsUTF8AndSize(t->value, &t->vlen)) == NULL)
            return -1;
        t->label_len = t->klen ? cx_metrics_sanitize_name(t->k, (size_t)t->klen, t->label, sizeof t->label)
                               : cx_metrics_sanitize_name("_", 1, t->label, sizeof t->label);
        if (t->label_len < 0) {
            PyErr_SetString(PyExc_ValueError, "tag name too long");
            return -1;
        }
        for (int i = 0; i < t->label_len; i++) /* label names take no ':' */
            if (t->label[i] == ':')
                t->label[i] = '_';
        /* le and quantile mean bucket bounds and quantiles to Prometheus: le_, quantile_ */
        if ((strcmp(t->label, "le") == 0 || strcmp(t->label, "quantile") == 0)
            && (size_t)t->label_len + 1 < sizeof t->label) {
            t->label[t->label_len++] = '_';
            t->label[t->label_len] = '\0';
        }
        if (cx_statsd_enabled() && cx_statsd_tag_append(statsd_tags, t->k, (size_t)t->klen, t->v, (size_t)t->vlen)) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* insertion sort by label name: a handful of tags */
    tag *order[MAX_TAGS];
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t j = i;
        while (j > 0 && strcmp(order[j - 1]->label, items[i].label) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = &items[i];
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const tag *t = order[i];
        if (i > 0 && strcmp(order[i - 1]->label, t->label) == 0)
            continue; /* two tags that make the same label name: the first in order wins */
        if (cx_metrics_label_append(labels, t->label, (size_t)t->label_len, t->v, (size_t)t->vlen)) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static void apply(int kind, int handle, double value)
{
    if (kind == CX_METRIC_COUNTER)
        cx_metrics_add(handle, value);
    else if (kind == CX_METRIC_GAUGE)
        cx_metrics_set(handle, value);
    else
        cx_metrics_observe(handle, value);
}

static int lookup(int kind, const char *name, size_t name_len, const cx_buf *labels)
{
    int handle = cx_metrics_series((cx_metric_kind)kind, CX_GAUGE_LAST, CX_BUCKETS_USER, name, name_len,
                                   HELP[kind], labels->data ? labels->data : "", labels->len);
    if (handle == CX_METRICS_INVALID && !atomic_exchange(&warned_too_long, 1))
        cx_metrics_warn("metric tags too long to record in /metrics: this label set is dropped", name);
    return handle;
}

static PyObject *record(CxMetricsClientObject *self, int kind, PyObject *metric, PyObject *value_obj,
                        PyObject *tags)
{
    if (!PyUnicode_Check(metric))
        return PyErr_Format(PyExc_TypeError, "metric name must be a str, not %.100s", Py_TYPE(metric)->tp_name);
    double value = PyFloat_AsDouble(value_obj);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return PyErr_Format(PyExc_TypeError, "metric value must be a number, not %.100s",
                            Py_TYPE(value_obj)->tp_name);
    }
    int no_tags = tags == NULL || tags == Py_None;
    cache_entry *slot = &self->cache[((uintptr_t)metric >> 4) % CACHE_SIZE];
    if (no_tags && slot->metric == metric && slot->kind == kind && !cx_statsd_enabled()) {
        apply(kind, slot->handle, value); /* the common case: a literal name, no tags */
        Py_RETURN_NONE;
    }

    Py_ssize_t raw_len;
    const char *raw = PyUnicode_AsUTF8AndSize(metric, &raw_len);
    if (raw == NULL)
        return NULL;
    if (raw_len == 0) {
        PyErr_SetString(PyExc_ValueError, "metric name must not be empty");
        return NULL;
    }
    char name[CX_METRICS_MAX_NAME];
    int name_len = cx_metrics_sanitize_name(raw, (size_t)raw_len, name, sizeof name);
    if (name_len < 0)
        return PyErr_Format(PyExc_ValueError, "metric name longer than %d bytes", CX_METRICS_MAX_NAME - 1);
    if (refuse_reserved(metric, raw, (size_t)raw_len) || refuse_reserved(metric, name, (size_t)name_len))
        return NULL;

    tag items[MAX_TAGS];
    Py_ssize_t n_items = 0;
    cx_buf labels, statsd_tags;
    cx_buf_init(&labels, 0);
    cx_buf_init(&statsd_tags, 0);
    PyObject *result = NULL;
    if (!no_tags && collect_tags(tags, items, &n_items, &labels, &statsd_tags) < 0)
        goto done;

    int handle = lookup(kind, name, (size_t)name_len, &labels);
    apply(kind, handle, value);
    if (no_tags && handle >= 0) {
        Py_XSETREF(slot->metric, Py_NewRef(metric));
        slot->kind = kind;
        slot->handle = handle;
    }
    cx_statsd_send(raw, (size_t)raw_len, value, TYPE_LETTER[kind], statsd_tags.data, statsd_tags.len);
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < n_items; i++) {
        Py_XDECREF(items[i].key);
        Py_XDECREF(items[i].value);
    }
    cx_buf_free(&labels);
    cx_buf_free(&statsd_tags);
    return result;
}

/* (metric, value, tags) from a vectorcall; value may be optional (default_value). */
static int parse(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 PyObject *out[3], PyObject *default_value)
{
    static const char *const names[3] = {"metric", "value", "tags"};
    out[0] = out[1] = out[2] = NULL;
    if (nargs > 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 3 arguments (%zd given)", fname, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, i);
        int which = -1;
        for (int j = 0; j < 3 && which < 0; j++)
            if (PyUnicode_CompareWithASCIIString(kw, names[j]) == 0)
                which = j;
        if (which < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, kw);
            return -1;
        }
        if (out[which] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, names[which]);
            return -1;
        }
        out[which] = args[nargs + i];
    }
    if (out[1] == NULL)
        out[1] = default_value;
    if (out[0] == NULL || out[1] == NULL) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, out[0] ? "value" : "metric");
        return -1;
    }
    return 0;
}

static PyObject *client_increment(CxMetricsClientObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    PyObject *a[3];
    PyObject *one = PyLong_FromLong(1); /* a cached small int: no allocation */
    int rc = parse("increment", args, nargs, kwnames, a, one);
    PyObject *result = rc < 0 ? NULL : record(self, CX_METRIC_COUNTER, a[0], a[1], a[2]);
    Py_XDECREF(one);
    return result;
}

static PyObject *client_gauge(CxMetricsClientObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    PyObject *a[3];
    if (parse("gauge", args, nargs, kwnames, a, NULL) < 0)
        return NULL;
    return record(self, CX_METRIC_GAUGE, a[0], a[1], a[2]);
}

static PyObject *client_histogram(CxMetricsClientObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    PyObject *a[3];
    if (parse("histogram", args, nargs, kwnames, a, NULL) < 0)
        return NULL;
    return record(self, CX_METRIC_HISTOGRAM, a[0], a[1], a[2]);
}

static PyObject *client_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "MetricsClient() takes no arguments");
        return NULL;
    }
    if (cx_metrics_setup() != CX_METRICS_OK)
        return PyErr_NoMemory();
    return type->tp_alloc(type, 0);
}

static void client_dealloc(CxMetricsClientObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    for (int i = 0; i < CACHE_SIZE; i++)
        Py_CLEAR(self->cache[i].metric);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef client_methods[] = {
    {"increment", (PyCFunction)(void (*)(void))client_increment, METH_FASTCALL | METH_KEYWORDS,
     "increment(metric, value=1, tags=None): add value to a counter."},
    {"gauge", (PyCFunction)(void (*)(void))client_gauge, METH_FASTCALL | METH_KEYWORDS,
     "gauge(metric, value, tags=None): set a gauge (the last value set wins)."},
    {"histogram", (PyCFunction)(void (*)(void))client_histogram, METH_FASTCALL | METH_KEYWORDS,
     "histogram(metric, value, tags=None): record one observation."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot client_slots[] = {
    {Py_tp_new, client_new},
    {Py_tp_dealloc, client_dealloc},
    {Py_tp_methods, client_methods},
    {Py_tp_doc, "MetricsClient(): custom metrics, exported at GET /metrics and to statsd.\n\n"
                "Names starting with cortex_ or istio_ are refused (ValueError); tags (a dict) become\n"
                "labels; a problem reaching statsd never raises."},
    {0, NULL},
};

PyType_Spec cx_metrics_client_type_spec = {
    .name = "cortex_runtime._core.MetricsClient",
    .basicsize = sizeof(CxMetricsClientObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = client_slots,
};

PyObject *cx_metrics_setup_py(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (cx_metrics_setup() != CX_METRICS_OK)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

PyObject *cx_metrics_text_py(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    cx_buf out;
    cx_buf_init(&out, 0);
    if (cx_metrics_render(&out) != 0) {
        cx_buf_free(&out);
        return PyErr_NoMemory();
    }
    PyObject *text = PyUnicode_DecodeUTF8(out.data ? out.data : "", (Py_ssize_t)out.len, "replace");
    cx_buf_free(&out);
    return text;
}
