/* Output tensors as the Python values Cortex's tensorflow_client returned: floats the way
 * protobuf's JSON mapping gave TensorFlow Serving's float_val (each float32 as the double of
 * its shortest text that reads back as the same float32), and "NaN", "Infinity",
 * "-Infinity" for the values JSON has no number for.  Needs the GIL. */
#ifndef CX_TENSOR_CONVERT_H
#define CX_TENSOR_CONVERT_H

#include "module.h"

/* float_list(buffer, exact=False) -> list: one item per value of a C-contiguous buffer of
 * native float32 ("f") or float64 ("d"), any shape, flattened.  float32 values become the
 * double of their shortest 6..9-significant-digit text that rounds back to them (float32
 * 0.1 -> 0.1); float64 values are themselves.  exact=True takes CPython's own formatting
 * and parsing for every float32 (slower; for cross-checking the fast path). */
PyObject *cx_float_list(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
