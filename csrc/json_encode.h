/* Python objects -> JSON bytes, byte-identical to json.dumps(value) with its defaults
 * (", " and ": ", ensure_ascii, NaN/Infinity), plus numpy arrays and scalars encoded as
 * their .tolist() would be (numpy itself is never imported).  Needs the GIL. */
#ifndef CX_JSON_ENCODE_H
#define CX_JSON_ENCODE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "buf.h"

/* Appends the encoding of obj to out.  0, or -1 with TypeError (unserialisable type, named),
 * ValueError (cycle), RecursionError or MemoryError set; out then holds a partial text. */
int cx_json_encode(PyObject *obj, cx_buf *out);

/* The same, but objects of unknown types are encoded as the string str(obj), as
 * json.dumps(default=str) does (log extras). */
int cx_json_encode_ex(PyObject *obj, cx_buf *out, int str_fallback);

/* Appends s as a JSON string with ensure_ascii escaping.  0, or -1 with MemoryError. */
int cx_json_encode_str(PyObject *s, cx_buf *out);

#endif
