/* Decimal significand and exponent -> the nearest double, exactly, without Python, for
 * the inputs it can decide quickly.  Pure C. */
#ifndef CX_FLOAT_PARSE_H
#define CX_FLOAT_PARSE_H

#include <stdint.h>

/* w 10^q (w < 10^19, the number's first significant digits and no others) rounded to
 * the nearest double, ties to even, as strtod and float() round it.  Returns 1 with
 * *out set, or 0 when it cannot decide cheaply (a tie or too close to one, a subnormal
 * or overflowing result, q outside the table): the caller then parses the text
 * exactly.  cx_pow10_init() must have run. */
int cx_decimal_to_double(uint64_t w, int q, double *out);

#endif
