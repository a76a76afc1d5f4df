/* cortex_runtime._core.Server: the Python-visible handle on a running server, and
 * call_predictor(), the same request path without HTTP (the `predict` command). */
#ifndef CX_SERVER_TYPE_H
#define CX_SERVER_TYPE_H

#include "module.h"

extern PyType_Spec cx_server_type_spec;

/* Module-level: call_predictor(predict, arg_names, content_type, body, request_id,
 * query=None, headers=None) -> (status, media_type or None, body bytes). */
PyObject *cx_call_predictor(PyObject *module, PyObject *args, PyObject *kwargs);

#endif
