/* Request body -> the predictor's `payload`, and predict()'s return value -> the response
 * half of a request.  Needs the GIL. */
#ifndef CX_PAYLOAD_H
#define CX_PAYLOAD_H

#include "module.h"
#include "request.h"

/* Returns a new reference to the payload.  On a client error (bad JSON, bad charset, bad
 * form) returns NULL with no Python exception set and the 400 response half of req filled.
 * NULL with an exception set is an internal failure. */
PyObject *cx_payload_decode(cx_module_state *state, cx_request *req);

/* Fills the response half of req from result.  0, or -1 with an exception set (the
 * caller logs it and answers 500). */
int cx_response_encode(cx_module_state *state, cx_request *req, PyObject *result);

/* Sets a plain response half (status, body copied, media type copied; NULL = JSON).
 * 0, or -1 when out of memory (no exception set). */
int cx_response_set(cx_request *req, int status, const char *media_type, const char *body, size_t len);

#endif
