/* Finite double -> the text Python's repr(float) writes, without Python.  Pure C. */
#ifndef CX_FLOAT_FORMAT_H
#define CX_FLOAT_FORMAT_H

#include <stddef.h>

/* Room cx_float_repr needs at out: the longest text, "-2.2250738585072014e-308", is 24
 * characters, but it writes whole blocks past the text's end. */
#define CX_FLOAT_REPR_MAX 48

/* Writes repr(v) for a finite v (no NUL) and returns its length, or returns 0 (nothing
 * written) for the 31 smallest positive subnormals and their negatives, which the caller
 * formats with PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL).  The shortest decimal
 * that reads back as v (ties to even digits), Schubfach's algorithm, then repr's layout:
 * an exponent when it is < -4 or >= 16, else positional with at least ".0".
 * cx_pow10_init() must have run. */
size_t cx_float_repr(double v, char *out);

#endif
