/* libFuzzer harness for csrc/json_decode.c (with csrc/json_encode.c for a round trip).
 *
 * Python is embedded and initialised once, isolated, without site, with Python's allocator
 * switched to plain malloc so AddressSanitizer sees every object the decoder builds.  For
 * each input:
 *   - cx_json_decode must return a value, or NULL with a message "... at byte N" whose N is
 *     within the input, or NULL with MemoryError/ValueError set (never another exception);
 *   - a decoded value is encoded with cx_json_encode and decoded again; the second decode
 *     must succeed (unless the text holds Infinity, which strict JSON cannot carry back) and
 *     re-encode to the same bytes.
 * A fresh key cache per input is cleared afterwards, so nothing a run allocates survives it
 * (libFuzzer's leak check then catches lost references).  Built by fuzz/run.sh. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json_decode.h"
#include "json_encode.h"
#include "pow10.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    PyPreConfig preconfig;
    PyPreConfig_InitIsolatedConfig(&preconfig);
    preconfig.allocator = PYMEM_ALLOCATOR_MALLOC;
    PyStatus status = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.install_signal_handlers = 0;
    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    cx_pow10_init();
    return 0;
}

static void check_error(const cx_json_error *error, size_t size)
{
    const char *at = strstr(error->message, " at byte ");
    if (at == NULL || error->position > size) {
        fprintf(stderr, "bad error: position %zu of %zu, message '%s'\n", error->position, size,
                error->message);
        abort();
    }
    char expect[40];
    snprintf(expect, sizeof expect, " at byte %zu", error->position);
    if (strcmp(at, expect) != 0) {
        fprintf(stderr, "message '%s' does not end with '%s'\n", error->message, expect);
        abort();
    }
}

static void check_exception(void)
{
    /* a Python exception is only allowed for memory and Python's own int-size limit */
    if (!PyErr_ExceptionMatches(PyExc_MemoryError) && !PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Print();
        abort();
    }
    PyErr_Clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size heap copy, so a read one past the end is an ASan report */
    char *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);

    cx_json_key_cache cache;
    memset(&cache, 0, sizeof cache);
    cx_json_error error;
    PyObject *value = cx_json_decode(&cache, copy, size, &error);
    if (value == NULL) {
        if (PyErr_Occurred())
            check_exception();
        else
            check_error(&error, size);
        goto out;
    }

    cx_buf first;
    cx_buf_init(&first, 0);
    if (cx_json_encode(value, &first) < 0) {
        /* every decoded value is encodable, except an int too long for repr (same limit) */
        check_exception();
        cx_buf_free(&first);
        goto out_value;
    }
    PyObject *again = cx_json_decode(&cache, first.data ? first.data : "", first.len, &error);
    if (again == NULL) {
        if (PyErr_Occurred()) {
            check_exception();
        } else if (memmem(first.data, first.len, "Infinity", 8) == NULL) {
            fprintf(stderr, "re-decoding our own encoding failed: %s\n%.*s\n", error.message,
                    (int)(first.len > 2000 ? 2000 : first.len), first.data);
            abort();
        }
    } else {
        cx_buf second;
        cx_buf_init(&second, 0);
        if (cx_json_encode(again, &second) < 0) {
            check_exception();
        } else if (second.len != first.len || memcmp(first.data, second.data, first.len) != 0) {
            fprintf(stderr, "round trip changed the text:\n%.*s\n%.*s\n", (int)first.len, first.data,
                    (int)second.len, second.data);
            abort();
        }
        cx_buf_free(&second);
        Py_DECREF(again);
    }
    cx_buf_free(&first);
out_value:
    Py_DECREF(value);
out:
    cx_json_key_cache_clear(&cache);
    free(copy);
    return 0;
}
