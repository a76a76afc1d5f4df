/* Decimal significand and exponent -> the nearest double, exactly, without Python, for
 * the inputs it can decide quickly.  Pure C. */
#ifndef CX_FLOAT_PARSE_H
#define CX_FLOAT_PARSE_H

#include <float.h>
#include <stdint.h>

/* w 10^q (w < 10^19, the number's first significant digits and no others) rounded to
 * the nearest double, ties to even, as strtod and float() round it.  Returns 1 with
 * *out set, or 0 when it cannot decide cheaply (a tie or too close to one, a subnormal
 * or overflowing result, q outside the table): the caller then parses the text
 * exactly.  cx_pow10_init() must have run. */
static inline int cx_decimal_to_double(uint64_t w, int q, double *out);

/* cx_decimal_to_double past Clinger's fast path (in float_parse.c). */
int cx_decimal_to_double_wide(uint64_t w, int q, double *out);

/* Inline: Clinger's fast path is most numbers' whole conversion, worth no call. */
static inline int cx_decimal_to_double(uint64_t w, int q, double *out)
{
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    /* w and 10^|q| are exact doubles, so one correctly rounded IEEE operation is the
     * correctly rounded result */
    static const double exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    if (w <= ((uint64_t)1 << 53) && q >= -22 && q <= 22) {
        *out = q < 0 ? (double)w / exact[-q] : (double)w * exact[q];
        return 1;
    }
#endif
    return cx_decimal_to_double_wide(w, q, out);
}

#endif
