#include "float_parse.h"

#include <float.h>
#include <string.h>

#include "pow10.h"

int cx_decimal_to_double_wide(uint64_t w, int q, double *out)
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
