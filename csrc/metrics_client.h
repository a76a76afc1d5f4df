/* cortex_runtime._core.MetricsClient: the `metrics_client` a predictor's __init__ receives.
 * increment/gauge/histogram(metric, value, tags=None) as Cortex documented, recorded in the
 * shared registry (metrics.c, shown at GET /metrics) and sent to statsd when configured
 * (statsd.c).  Needs the GIL (it is a Python type); thread-safe; transport problems never
 * raise.  Also the module functions metrics_setup() and metrics_text(). */
#ifndef CX_METRICS_CLIENT_H
#define CX_METRICS_CLIENT_H

#include "module.h"

extern PyType_Spec cx_metrics_client_type_spec;

/* metrics_setup(): maps the shared registry before workers are forked; idempotent. */
PyObject *cx_metrics_setup_py(PyObject *module, PyObject *unused);
/* metrics_text() -> str: what GET /metrics would answer from this process. */
PyObject *cx_metrics_text_py(PyObject *module, PyObject *unused);

#endif
