/* Decimal significand and exponent -> the nearest double, exactly, without Python, for
 * the inputs it can decide quickly.  Pure C. */
#ifndef CX_FLOAT_PARSE_H
#define CX_FLOAT_PARSE_H

#include <float.h>
#include <stdint.h>
#include <string.h>

#include "pow10.h"

/* w 10^q (w < 10^19, the number's first significant digits and no others) rounded to
 * the nearest double, ties to even, as strtod and float() round it.  Returns 1 with
 * *out set, or 0 when it cannot decide cheaply (a tie or too close to one, a subnormal
 * or overflowing result, q outside the table): the caller then parses the text
 * exactly.  cx_pow10_init() must have run. */
static inline int cx_decimal_to_double(uint64_t w, int q, double *out);

/* cx_decimal_to_double past Clinger's fast path. */
static inline int cx_decimal_to_double_wide(uint64_t w, int q, double *out)
{
    if (w == 0) {
        *out = 0.0;
        return 1;
    }
    if (q < CX_POW10_MIN || q > CX_POW10_MAX)
        return 0;
    /* The table holds T, an upper bound of B = 10^q / 2^r (2^125 <= B < 2^126) with
     * 0 < T - B <= 1.  With w normalised to w' = w 2^lz in [2^63, 2^64), the exact
     * product P* = w' B and the computed P = w' T (192 bits, exact) differ by less than
     * 2^64.  Rounding to 53 bits depends only on where P* sits between consecutive
     * multiples of half a unit in the last place (2^135 or more); when P is at least
     * 2^64 past such a multiple, P* is in the same gap and rounds the same way, and it
     * is no tie. */
    int lz = __builtin_clzll(w);
    uint64_t wn = w << lz;
    const cx_u128 *t = &cx_pow10[q - CX_POW10_MIN];
    uint64_t lo_lo, hi_lo;
    uint64_t lo_hi = cx_mulhi64(wn, t->lo, &lo_lo);
    uint64_t hi_hi = cx_mulhi64(wn, t->hi, &hi_lo);
    uint64_t word1 = lo_hi + hi_lo;
    uint64_t word2 = hi_hi + (word1 < lo_hi);
    (void)lo_lo;
    /* P < 2^190: its top bit is bit 189 or 188 (bit 61 or 60 of word2) */
    int top = (int)(word2 >> 61); /* 1: bit 189 */
    int shift = top ? 137 : 136;  /* bits below the 53-bit significand */
    uint64_t below_half = word2 & (top ? 0xff : 0x7f);
    if (below_half == 0 && word1 == 0)
        return 0;
    uint64_t m = word2 >> (shift - 128);
    int round_bit = (int)(word2 >> (shift - 129)) & 1;
    m += (uint64_t)round_bit;
    int e2 = shift + cx_floor_log2_pow10(q) - 125 - lz; /* v = m 2^e2 */
    if (m == ((uint64_t)1 << 53)) {
        m >>= 1;
        e2++;
    }
    int biased = e2 + 52 + 1023;
    if (biased < 1 || biased > 2046)
        return 0;
    uint64_t bits = ((uint64_t)biased << 52) | (m & ((((uint64_t)1) << 52) - 1));
    memcpy(out, &bits, sizeof bits);
    return 1;
}

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
