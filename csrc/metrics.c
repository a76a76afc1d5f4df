#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "request.h"
#include "statsd.h"

#define REGION_MAGIC 0x4358206d65747231ULL /* "CX metr1" */
#define FAMILY_INDEX_SIZE 1024             /* powers of two, 4x the entries: never full */
#define SERIES_INDEX_SIZE 32768
#define SUM_CELL (CX_METRICS_CELLS - 1)    /* a histogram's running sum */
#define STRINGIFY_(x) #x
#define CX_STRINGIFY(x) STRINGIFY_(x)

static const double latency_ms_bounds[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
static const double user_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25,
                                     50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
                                     100000};
static const struct {
    const double *bounds;
    int n;
} bucket_sets[] = {
    [CX_BUCKETS_LATENCY_MS] = {latency_ms_bounds, (int)(sizeof latency_ms_bounds / sizeof(double))},
    [CX_BUCKETS_USER] = {user_bounds, (int)(sizeof user_bounds / sizeof(double))},
};

typedef struct {
    char name[CX_METRICS_MAX_NAME];
    char help[160];
    uint32_t hash;
    uint8_t kind, policy, buckets;
    uint32_t first, last; /* series index + 1; 0 = none */
    uint32_t n_series;
    atomic_int warned_full, warned_negative;
} family;

typedef struct {
    uint32_t family;
    uint32_t hash;
    uint32_t next; /* next series of the same family, index + 1 */
    uint32_t labels_len;
    char labels[CX_METRICS_MAX_LABELS];
    _Atomic uint64_t cells[CX_METRICS_CELLS];
} series;

typedef struct {
    uint64_t magic;
    pthread_mutex_t lock; /* process-shared, robust */
    uint32_t n_families, n_series;
    atomic_int warned_total_full, warned_conflict;
    atomic_int procs[CX_METRICS_MAX_PROCS]; /* pid owning each slot; 0 = free */
    _Atomic uint32_t family_index[FAMILY_INDEX_SIZE]; /* family index + 1 */
    _Atomic uint32_t series_index[SERIES_INDEX_SIZE]; /* series index + 1 */
    family families[CX_METRICS_MAX_FAMILIES];
    series entries[CX_METRICS_MAX_SERIES];
} region;

/* Process-wide on purpose: one mapping per process tree, inherited across fork(). */
static region *R;
static int init_rc = CX_METRICS_NOMEM;
static int builtin_enabled = 1;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static _Atomic int my_slot = -1; /* this process' slot in procs[]; reset in a forked child */

/* ---- set-up ---------------------------------------------------------------------------- */

static void after_fork_in_child(void)
{
    atomic_store(&my_slot, -1);
}

static void init(void)
{
    void *p = mmap(NULL, sizeof(region), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return;
    region *r = p; /* zero-filled by the kernel */
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0) {
        munmap(p, sizeof(region));
        return;
    }
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&r->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0) {
        munmap(p, sizeof(region));
        return;
    }
    r->magic = REGION_MAGIC;
    const char *off = getenv("CORTEX_DISABLE_BUILTIN_METRICS");
    builtin_enabled = !(off && strcmp(off, "1") == 0);
    cx_statsd_open_from_env();
    pthread_atfork(NULL, NULL, after_fork_in_child);
    R = r;
    init_rc = CX_METRICS_OK;
}

int cx_metrics_setup(void)
{
    pthread_once(&init_once, init);
    return init_rc;
}

int cx_metrics_builtin_enabled(void)
{
    cx_metrics_setup();
    return builtin_enabled;
}

static void lock(void)
{
    if (pthread_mutex_lock(&R->lock) == EOWNERDEAD) /* a worker died holding it */
        pthread_mutex_consistent(&R->lock);
}

static void unlock(void)
{
    pthread_mutex_unlock(&R->lock);
}

void cx_metrics_warn(const char *message, const char *metric)
{
    if (!cx_log_enabled(-1, CX_LOG_WARNING))
        return;
    cx_buf line;
    cx_buf_init(&line, 0);
    if (cx_log_begin(&line, cx_wall_seconds(), "WARNING", message, strlen(message), (long)getpid()) == 0
        && cx_log_key(&line, "metric", 6) == 0 && cx_log_json_string(&line, metric, strlen(metric)) == 0
        && cx_log_end(&line) == 0)
        cx_log_write(&line);
    cx_buf_free(&line);
}

/* ---- lookup and creation --------------------------------------------------------------- */

static uint32_t fnv1a(uint32_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* Index of the family, or -1; *slot gets the index slot where it is or would go. */
static int find_family(const char *name, size_t len, uint32_t hash, uint32_t *slot)
{
    for (uint32_t i = hash;; i++) {
        uint32_t s = i & (FAMILY_INDEX_SIZE - 1);
        uint32_t v = atomic_load_explicit(&R->family_index[s], memory_order_acquire);
        if (v == 0) {
            *slot = s;
            return -1;
        }
        const family *f = &R->families[v - 1];
        if (f->hash == hash && strlen(f->name) == len && memcmp(f->name, name, len) == 0)
            return (int)(v - 1);
    }
}

static int find_series(uint32_t fam, const char *labels, size_t len, uint32_t hash, uint32_t *slot)
{
    for (uint32_t i = hash;; i++) {
        uint32_t s = i & (SERIES_INDEX_SIZE - 1);
        uint32_t v = atomic_load_explicit(&R->series_index[s], memory_order_acquire);
        if (v == 0) {
            *slot = s;
            return -1;
        }
        const series *e = &R->entries[v - 1];
        if (e->hash == hash && e->family == fam && e->labels_len == len && memcmp(e->labels, labels, len) == 0)
            return (int)(v - 1);
    }
}

static int create_family(cx_metric_kind kind, cx_gauge_policy policy, cx_bucket_set buckets,
                         const char *name, size_t len, const char *help, uint32_t hash, uint32_t slot)
{
    if (R->n_families >= CX_METRICS_MAX_FAMILIES) {
        if (!atomic_exchange(&R->warned_total_full, 1))
            cx_metrics_warn("metrics registry is full: new metrics are not recorded", name);
        return CX_METRICS_FULL;
    }
    uint32_t index = R->n_families++;
    family *f = &R->families[index];
    memcpy(f->name, name, len);
    f->name[len] = '\0';
    snprintf(f->help, sizeof f->help, "%s", help ? help : "");
    f->hash = hash;
    f->kind = (uint8_t)kind;
    f->policy = (uint8_t)policy;
    f->buckets = (uint8_t)buckets;
    atomic_store_explicit(&R->family_index[slot], index + 1, memory_order_release);
    return (int)index;
}

int cx_metrics_series(cx_metric_kind kind, cx_gauge_policy policy, cx_bucket_set buckets,
                      const char *name, size_t name_len, const char *help, const char *labels,
                      size_t labels_len)
{
    if (cx_metrics_setup() != CX_METRICS_OK)
        return CX_METRICS_NOMEM;
    if (name_len == 0 || name_len >= CX_METRICS_MAX_NAME || labels_len >= CX_METRICS_MAX_LABELS)
        return CX_METRICS_INVALID;
    uint32_t fhash = fnv1a(2166136261u, name, name_len);
    uint32_t fslot = 0, sslot = 0;
    int fam = find_family(name, name_len, fhash, &fslot);
    int result;
    if (fam >= 0) {
        const family *f = &R->families[fam];
        if (f->kind != kind)
            goto conflict;
        uint32_t shash = fnv1a(fhash ^ (uint32_t)fam, labels, labels_len);
        int found = find_series((uint32_t)fam, labels, labels_len, shash, &sslot);
        if (found >= 0)
            return found;
    }

    lock();
    fam = find_family(name, name_len, fhash, &fslot); /* again: another may have made it */
    if (fam < 0)
        fam = create_family(kind, policy, buckets, name, name_len, help, fhash, fslot);
    if (fam < 0) {
        result = fam;
        goto done;
    }
    family *f = &R->families[fam];
    if (f->kind != kind) {
        unlock();
        goto conflict;
    }
    uint32_t shash = fnv1a(fhash ^ (uint32_t)fam, labels, labels_len);
    result = find_series((uint32_t)fam, labels, labels_len, shash, &sslot);
    if (result >= 0)
        goto done;
    if (f->n_series >= CX_METRICS_MAX_SERIES_PER_FAMILY || R->n_series >= CX_METRICS_MAX_SERIES) {
        if (f->n_series >= CX_METRICS_MAX_SERIES_PER_FAMILY) {
            if (!atomic_exchange(&f->warned_full, 1))
                cx_metrics_warn("too many label sets for this metric: new label sets are dropped "
                                "(the bound is " CX_STRINGIFY(CX_METRICS_MAX_SERIES_PER_FAMILY) ")",
                                f->name);
        } else if (!atomic_exchange(&R->warned_total_full, 1)) {
            cx_metrics_warn("metrics registry is full: new label sets are dropped", f->name);
        }
        result = CX_METRICS_FULL;
        goto done;
    }
    uint32_t index = R->n_series++;
    series *e = &R->entries[index];
    e->family = (uint32_t)fam;
    e->hash = shash;
    e->labels_len = (uint32_t)labels_len;
    memcpy(e->labels, labels, labels_len);
    e->labels[labels_len] = '\0';
    if (f->last)
        R->entries[f->last - 1].next = index + 1;
    else
        f->first = index + 1;
    f->last = index + 1;
    f->n_series++;
    atomic_store_explicit(&R->series_index[sslot], index + 1, memory_order_release);
    result = (int)index;
done:
    unlock();
    return result;

conflict:
    if (!atomic_exchange(&R->warned_conflict, 1))
        cx_metrics_warn("metric already recorded with another type (counter, gauge or histogram): "
                        "this use is not recorded", name);
    return CX_METRICS_CONFLICT;
}

/* ---- updates --------------------------------------------------------------------------- */

static double as_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static uint64_t as_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return bits;
}

static void add_to_cell(_Atomic uint64_t *cell, double value)
{
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(cell, &old, as_bits(as_double(old) + value),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static int process_alive(int pid)
{
    return pid > 0 && (pid == (int)getpid() || kill(pid, 0) == 0 || errno == EPERM);
}

/* This process' slot for summed gauges, claimed on first use.  A slot whose process is gone
 * is taken over, and what that process had added is cleared first. */
static int process_slot(void)
{
    int slot = atomic_load_explicit(&my_slot, memory_order_relaxed);
    if (slot >= 0)
        return slot;
    int pid = (int)getpid();
    lock();
    for (int i = 0; i < CX_METRICS_MAX_PROCS && slot < 0; i++) {
        int owner = atomic_load(&R->procs[i]);
        if (owner == 0 || !process_alive(owner))
            slot = i;
    }
    if (slot < 0) {
        slot = pid % CX_METRICS_MAX_PROCS; /* more workers than slots: share one (adds are atomic) */
    } else {
        for (uint32_t f = 0; f < R->n_families; f++) {
            const family *fam = &R->families[f];
            if (fam->kind != CX_METRIC_GAUGE || fam->policy != CX_GAUGE_SUM)
                continue;
            for (uint32_t s = fam->first; s; s = R->entries[s - 1].next)
                atomic_store(&R->entries[s - 1].cells[slot], 0);
        }
        atomic_store(&R->procs[slot], pid);
    }
    unlock();
    atomic_store(&my_slot, slot);
    return slot;
}

void cx_metrics_add(int handle, double value)
{
    if (handle < 0 || R == NULL)
        return;
    series *e = &R->entries[handle];
    if (!(value >= 0)) { /* negative or NaN: a Prometheus counter only goes up */
        family *f = &R->families[e->family];
        if (!atomic_exchange(&f->warned_negative, 1))
            cx_metrics_warn("a counter increment below zero (or NaN) is not recorded in /metrics", f->name);
        return;
    }
    add_to_cell(&e->cells[0], value);
}

void cx_metrics_set(int handle, double value)
{
    if (handle < 0 || R == NULL)
        return;
    series *e = &R->entries[handle];
    int cell = R->families[e->family].policy == CX_GAUGE_SUM ? process_slot() : 0;
    atomic_store_explicit(&e->cells[cell], as_bits(value), memory_order_relaxed);
}

void cx_metrics_gauge_add(int handle, double delta)
{
    if (handle < 0 || R == NULL)
        return;
    series *e = &R->entries[handle];
    int cell = R->families[e->family].policy == CX_GAUGE_SUM ? process_slot() : 0;
    add_to_cell(&e->cells[cell], delta);
}

void cx_metrics_observe(int handle, double value)
{
    if (handle < 0 || R == NULL || isnan(value))
        return;
    series *e = &R->entries[handle];
    const double *bounds = bucket_sets[R->families[e->family].buckets].bounds;
    int n = bucket_sets[R->families[e->family].buckets].n;
    int i = 0;
    while (i < n && value > bounds[i])
        i++;
    atomic_fetch_add_explicit(&e->cells[i], 1, memory_order_relaxed);
    add_to_cell(&e->cells[SUM_CELL], value);
}

/* ---- exposition ------------------------------------------------------------------------ */

static int append_number(cx_buf *out, double v)
{
    char text[40];
    if (isnan(v))
        return cx_buf_append_str(out, "NaN");
    if (isinf(v))
        return cx_buf_append_str(out, v > 0 ? "+Inf" : "-Inf");
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(text, sizeof text, "%.0f", v);
    } else {
        snprintf(text, sizeof text, "%.15g", v);
        if (strtod(text, NULL) != v)
            snprintf(text, sizeof text, "%.17g", v);
    }
    return cx_buf_append_str(out, text);
}

static int append_series_name(cx_buf *out, const family *f, const char *suffix, const series *e,
                              const char *extra_label)
{
    if (cx_buf_append_str(out, f->name) || cx_buf_append_str(out, suffix))
        return -1;
    if (e->labels_len == 0 && extra_label == NULL)
        return cx_buf_append_char(out, ' ');
    if (cx_buf_append_char(out, '{') || cx_buf_append(out, e->labels, e->labels_len))
        return -1;
    if (extra_label) {
        if ((e->labels_len && cx_buf_append_char(out, ',')) || cx_buf_append_str(out, extra_label))
            return -1;
    }
    return cx_buf_append(out, "} ", 2);
}

static int render_family(cx_buf *out, const family *f, const int *live)
{
    static const char *types[] = {"counter", "gauge", "histogram"};
    if (cx_buf_append_str(out, "# HELP ") || cx_buf_append_str(out, f->name) || cx_buf_append_char(out, ' ')
        || cx_buf_append_str(out, f->help) || cx_buf_append_str(out, "\n# TYPE ")
        || cx_buf_append_str(out, f->name) || cx_buf_append_char(out, ' ')
        || cx_buf_append_str(out, types[f->kind]) || cx_buf_append_char(out, '\n'))
        return -1;
    for (uint32_t s = f->first; s; s = R->entries[s - 1].next) {
        const series *e = &R->entries[s - 1];
        if (f->kind == CX_METRIC_HISTOGRAM) {
            const double *bounds = bucket_sets[f->buckets].bounds;
            int n = bucket_sets[f->buckets].n;
            uint64_t cumulative = 0;
            for (int i = 0; i <= n; i++) {
                cumulative += atomic_load_explicit(&e->cells[i], memory_order_relaxed);
                char le[48] = "le=\"+Inf\"";
                if (i < n) {
                    cx_buf bound;
                    cx_buf_init(&bound, 0);
                    if (append_number(&bound, bounds[i]) || cx_buf_append_char(&bound, '\0')) {
                        cx_buf_free(&bound);
                        return -1;
                    }
                    snprintf(le, sizeof le, "le=\"%s\"", bound.data);
                    cx_buf_free(&bound);
                }
                if (append_series_name(out, f, "_bucket", e, le) || append_number(out, (double)cumulative)
                    || cx_buf_append_char(out, '\n'))
                    return -1;
            }
            double sum = as_double(atomic_load_explicit(&e->cells[SUM_CELL], memory_order_relaxed));
            if (append_series_name(out, f, "_sum", e, NULL) || append_number(out, sum)
                || cx_buf_append_char(out, '\n') || append_series_name(out, f, "_count", e, NULL)
                || append_number(out, (double)cumulative) || cx_buf_append_char(out, '\n'))
                return -1;
            continue;
        }
        double value = 0;
        if (f->kind == CX_METRIC_GAUGE && f->policy == CX_GAUGE_SUM) {
            for (int p = 0; p < CX_METRICS_MAX_PROCS; p++)
                if (live[p])
                    value += as_double(atomic_load_explicit(&e->cells[p], memory_order_relaxed));
        } else {
            value = as_double(atomic_load_explicit(&e->cells[0], memory_order_relaxed));
        }
        if (append_series_name(out, f, "", e, NULL) || append_number(out, value) || cx_buf_append_char(out, '\n'))
            return -1;
    }
    return 0;
}

int cx_metrics_render(cx_buf *out)
{
    if (cx_metrics_setup() != CX_METRICS_OK)
        return 0;
    int live[CX_METRICS_MAX_PROCS];
    int rc = 0;
    lock();
    for (int p = 0; p < CX_METRICS_MAX_PROCS; p++)
        live[p] = process_alive(atomic_load(&R->procs[p]));
    for (uint32_t f = 0; f < R->n_families && rc == 0; f++)
        if (R->families[f].n_series > 0)
            rc = render_family(out, &R->families[f], live);
    unlock();
    return rc;
}

/* ---- names and labels ------------------------------------------------------------------ */

static int name_byte_ok(unsigned char c, int colon_ok)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
           || (colon_ok && c == ':');
}

static int sanitize(const char *name, size_t len, char *out, size_t cap, int colon_ok)
{
    if (len == 0)
        return -1;
    size_t n = 0;
    if (name[0] >= '0' && name[0] <= '9') {
        if (cap < 2)
            return -1;
        out[n++] = '_';
    }
    for (size_t i = 0; i < len; i++) {
        if (n + 1 >= cap)
            return -1;
        out[n++] = name_byte_ok((unsigned char)name[i], colon_ok) ? name[i] : '_';
    }
    out[n] = '\0';
    return (int)n;
}

int cx_metrics_sanitize_name(const char *name, size_t len, char *out, size_t cap)
{
    return sanitize(name, len, out, cap, 1);
}

int cx_metrics_label_append(cx_buf *labels, const char *key, size_t key_len, const char *value,
                            size_t value_len)
{
    char name[CX_METRICS_MAX_LABELS];
    int n = key_len ? sanitize(key, key_len, name, sizeof name, 0) : sanitize("_", 1, name, sizeof name, 0);
    if (n < 0)
        return -1;
    if ((labels->len && cx_buf_append_char(labels, ',')) || cx_buf_append(labels, name, (size_t)n)
        || cx_buf_append(labels, "=\"", 2))
        return -1;
    size_t start = 0;
    for (size_t i = 0; i < value_len; i++) {
        const char *esc = value[i] == '\\' ? "\\\\" : value[i] == '"' ? "\\\"" : value[i] == '\n' ? "\\n" : NULL;
        if (esc == NULL)
            continue;
        if (cx_buf_append(labels, value + start, i - start) || cx_buf_append(labels, esc, 2))
            return -1;
        start = i + 1;
    }
    if (cx_buf_append(labels, value + start, value_len - start))
        return -1;
    return cx_buf_append_char(labels, '"');
}
