/* Strict RFC 8259 JSON text (UTF-8 bytes) -> Python objects, straight from the request
 * buffer.  Accepts exactly what json.loads accepts minus what RFC 8259 rejects (NaN,
 * Infinity); numbers parse as int(text) / float(text) would.  Needs the GIL. */
#ifndef CX_JSON_DECODE_H
#define CX_JSON_DECODE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting deeper than this is an error, never a stack overflow. */
#define CX_JSON_MAX_DEPTH 1024

/* Recently seen object keys, so the same keys across requests reuse one str each.  Two
 * ways a set (keys[2s] the more recently used), so two keys of one record whose hashes
 * meet do not evict each other on every record.  text holds each key's length and first
 * 16 bytes (zero padded): a lookup compares those without touching the str. */
#define CX_JSON_KEY_CACHE_SIZE 512
typedef struct {
    uint64_t len, w0, w1;
} cx_json_key_prefix;
typedef struct {
    PyObject *keys[CX_JSON_KEY_CACHE_SIZE];
    cx_json_key_prefix text[CX_JSON_KEY_CACHE_SIZE];
} cx_json_key_cache;

void cx_json_key_cache_clear(cx_json_key_cache *cache);

typedef struct {
    char message[160]; /* "expected ',' or '}' at byte 17" */
    size_t position;   /* byte offset of the problem */
} cx_json_error;

/* Returns a new reference.  Invalid JSON: NULL with error filled and no exception set.
 * NULL with an exception set: out of memory or an int too long for Python. */
PyObject *cx_json_decode(cx_json_key_cache *cache, const char *data, size_t len, cx_json_error *error);

/* The same; surrogates = 1 also accepts UTF-16 surrogates encoded as 3-byte UTF-8 in
 * strings and decodes them as lone surrogates, for the text of a str that holds them
 * (encoded with "surrogatepass"), as json.loads(str) keeps them.  Bytes from outside
 * never get this. */
PyObject *cx_json_decode_ex(cx_json_key_cache *cache, const char *data, size_t len, int surrogates,
                            cx_json_error *error);

#endif
