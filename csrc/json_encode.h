/* Python objects -> JSON bytes, byte-identical to json.dumps(value) with its defaults
 * (", " and ": ", ensure_ascii, NaN/Infinity), plus numpy arrays and scalars encoded as
 * their .tolist() would be (numpy itself is never imported).  Needs the GIL. */
#ifndef CX_JSON_ENCODE_H
#define CX_JSON_ENCODE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "buf.h"

/* The escaped text ("key": ) of recently written str keys, each held by a reference to its
 * str so identity proves it current.  Lives as long as the module state. */
#define CX_JSON_KEY_TEXTS 256
typedef struct {
    PyObject *key;
    char text[55];
    unsigned char len;
} cx_json_key_text;
typedef struct {
    cx_json_key_text slots[CX_JSON_KEY_TEXTS];
} cx_json_key_texts;

void cx_json_key_texts_clear(cx_json_key_texts *cache);

/* Appends the encoding of obj to out.  0, or -1 with TypeError (unserialisable type, named),
 * ValueError (cycle), RecursionError or MemoryError set; out then holds a partial text. */
int cx_json_encode(PyObject *obj, cx_buf *out);

/* The same, but objects of unknown types are encoded as the string str(obj), as
 * json.dumps(default=str) does (log extras). */
int cx_json_encode_ex(PyObject *obj, cx_buf *out, int str_fallback);

/* cx_json_encode, with str keys of exact dicts written from (and added to) keys. */
int cx_json_encode_keyed(PyObject *obj, cx_buf *out, cx_json_key_texts *keys);

/* Appends s as a JSON string with ensure_ascii escaping.  0, or -1 with MemoryError. */
int cx_json_encode_str(PyObject *s, cx_buf *out);

#endif
