/* The metrics registry: counters, gauges and histograms keyed by name and label set, kept in
 * one fixed-size shared-memory region so that every worker process of a replica updates the
 * same numbers and any worker's GET /metrics shows the sum over all of them.  Pure C: no
 * Python, no libmicrohttpd; every function here is thread-safe and needs no GIL.
 *
 * Shared memory.  cx_metrics_setup() maps the region (MAP_SHARED | MAP_ANONYMOUS) before
 * the supervisor forks its workers, which inherit it.  Without setup (tests, `predict`),
 * the first use maps it for this process alone.  Layout, all fixed-size arrays:
 *   header   magic, a process-shared robust mutex (taken only to create a family or series,
 *            claim a process slot, and render), counts, the process-slot table (pids)
 *   families CX_METRICS_MAX_FAMILIES x {name, help, kind, gauge policy, bucket set,
 *            first/last series, series count, warned flags}, plus an open-addressing index
 *   series   CX_METRICS_MAX_SERIES x {family, rendered label text, next-in-family, and
 *            CX_METRICS_CELLS 64-bit atomic cells}, plus an open-addressing index
 * Lookups are lock-free (an index slot is published with a release store after its entry is
 * complete); updates are atomic adds/stores on the cells.  Nothing is ever removed.
 *
 * Cells by kind:  counter: cell 0 (a double, CAS-added).  gauge, CX_GAUGE_LAST: cell 0,
 * last set wins across all processes.  gauge, CX_GAUGE_SUM: one cell per process slot, the
 * exposition shows the sum over live processes (a dead worker's part disappears with it).
 * histogram: cell i = observations in bucket i (not cumulative; the last one is +Inf),
 * cell CX_METRICS_CELLS-1 = the sum; _count is the sum of the buckets, so +Inf == _count. */
#ifndef CX_METRICS_H
#define CX_METRICS_H

#include <stddef.h>

#include "buf.h"

#define CX_METRICS_MAX_FAMILIES 256
#define CX_METRICS_MAX_SERIES 8192
/* label sets per metric name; beyond it new label sets are dropped with one warning */
#define CX_METRICS_MAX_SERIES_PER_FAMILY 512
#define CX_METRICS_MAX_NAME 128
#define CX_METRICS_MAX_LABELS 384 /* rendered label text, e.g. api_name="x",code="2XX" */
#define CX_METRICS_MAX_PROCS 64   /* worker-process slots for summed gauges */
#define CX_METRICS_CELLS 64

typedef enum { CX_METRIC_COUNTER = 0, CX_METRIC_GAUGE = 1, CX_METRIC_HISTOGRAM = 2 } cx_metric_kind;
typedef enum { CX_GAUGE_LAST = 0, CX_GAUGE_SUM = 1 } cx_gauge_policy;
/* Histogram bucket sets (upper bounds, fixed; see metrics.c):
 * CX_BUCKETS_LATENCY_MS  Prometheus' default buckets in milliseconds: 5 10 25 50 100 250 500
 *                        1000 2500 5000 10000 (+Inf)
 * CX_BUCKETS_USER        Prometheus' defaults extended upwards, for values in any unit:
 *                        .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10 25 50 100 250 500 1000 2500
 *                        5000 10000 25000 50000 100000 (+Inf) */
typedef enum { CX_BUCKETS_LATENCY_MS = 0, CX_BUCKETS_USER = 1 } cx_bucket_set;

enum {
    CX_METRICS_OK = 0,
    CX_METRICS_NOMEM = -1,    /* the region could not be mapped */
    CX_METRICS_FULL = -2,     /* a bound was reached (already warned about) */
    CX_METRICS_CONFLICT = -3, /* the name exists with another kind (already warned about) */
    CX_METRICS_INVALID = -4,  /* name or labels too long or malformed */
};

/* Maps the shared region and reads the environment (CORTEX_STATSD_ADDR, HOST_IP,
 * CORTEX_DISABLE_BUILTIN_METRICS) once per process tree; call before forking workers.
 * Idempotent.  0 or CX_METRICS_NOMEM. */
int cx_metrics_setup(void);
/* 0 when CORTEX_DISABLE_BUILTIN_METRICS=1 was set at setup: the server skips its own series. */
int cx_metrics_builtin_enabled(void);

/* The series for (name, labels), created on first use.  name must already be a valid
 * Prometheus name; labels is rendered label text (cx_metrics_label_append) or empty.  help
 * is used when the family is created.  Returns a handle >= 0, or a CX_METRICS_* error. */
int cx_metrics_series(cx_metric_kind kind, cx_gauge_policy policy, cx_bucket_set buckets,
                      const char *name, size_t name_len, const char *help, const char *labels,
                      size_t labels_len);

/* Updates; a negative handle is ignored, so callers may pass cx_metrics_series() through. */
void cx_metrics_add(int series, double value);      /* counter; value >= 0 */
void cx_metrics_set(int series, double value);      /* gauge: last set (or this process' part) */
void cx_metrics_gauge_add(int series, double delta); /* gauge: add to this process' part */
void cx_metrics_observe(int series, double value);  /* histogram */

/* Appends the whole registry in Prometheus text format 0.0.4.  0 or -1 (out of memory). */
int cx_metrics_render(cx_buf *out);

/* Appends key="value" (with a leading comma unless labels is empty) in exposition syntax:
 * the key made a valid label name, the value escaped (\\ \" \n).  0 or -1. */
int cx_metrics_label_append(cx_buf *labels, const char *key, size_t key_len, const char *value,
                            size_t value_len);
/* Writes name made a valid Prometheus metric name (as statsd_exporter does: invalid bytes
 * become '_', a leading digit gets a '_' before it) into out (cap bytes with the NUL).
 * Returns the length, or -1 when it does not fit or name is empty. */
int cx_metrics_sanitize_name(const char *name, size_t len, char *out, size_t cap);

/* One warning line on the JSON log, for a condition that is reported only once. */
void cx_metrics_warn(const char *message, const char *metric);

#endif
