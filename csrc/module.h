/* Module state of cortex_runtime._core: the heap types and the Python helpers the C side
 * calls on slow paths (forms, Response objects, error logging).  One instance per module
 * object; reach it with cx_state_from_module() or cx_state_from_type(). */
#ifndef CX_MODULE_H
#define CX_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "buf.h"
#include "json_decode.h"
#include "json_encode.h"

typedef struct {
    PyObject *server_type;
    PyObject *metrics_client_type; /* cortex_runtime._core.MetricsClient */

    PyObject *json_decode_error; /* cortex_runtime.json.JSONDecodeError, a ValueError */
    cx_json_key_cache key_cache;
    /* json_dumps writes here and keeps the memory (up to DUMPS_SCRATCH_KEEP) for the next
     * call, so a call neither grows a buffer from nothing nor faults fresh pages in;
     * dumps_busy: a nested call (from a numpy tolist) uses a buffer of its own */
    cx_buf dumps_scratch;
    int dumps_busy;
    size_t dumps_last_len; /* the last result's length, to guess the next one's */
    cx_json_key_texts dumps_keys; /* json_dumps and response bodies: str keys' escaped text */

    /* installed once by cortex_runtime at import (install_helpers) */
    PyObject *decode_form;    /* (bytes, content_type) -> dict; ValueError on bad bodies */
    PyObject *response_parts; /* obj -> None | (status, body bytes, media_type, [(k, v)]) */
    PyObject *make_headers;   /* [(k, v)] -> case-insensitive mapping */
    PyObject *log_exception;  /* (message, exc, request_id) -> None, logs at ERROR */
    PyObject *format_exception; /* exc_info tuple -> str */

    PyObject *standard_record_attrs; /* frozenset of LogRecord's own attribute names */
    PyObject *str_levelno, *str_levelname, *str_created, *str_process, *str_exc_info,
        *str_exc_text, *str_getMessage, *str_dict;
} cx_module_state;

cx_module_state *cx_state_from_module(PyObject *module);
cx_module_state *cx_state_from_type(PyTypeObject *type);

#endif
