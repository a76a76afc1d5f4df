/* 10^e as a 126-bit binary significand, shared by the shortest float formatter
 * (float_format.c) and the exact decimal parser (float_parse.c).  Pure C. */
#ifndef CX_POW10_H
#define CX_POW10_H

#include <stdint.h>

#define CX_POW10_MIN (-342) /* below it, 19 decimal digits cannot reach a subnormal */
#define CX_POW10_MAX 324    /* the largest 10^-k the formatter asks for */

typedef struct {
    uint64_t hi, lo;
} cx_u128;

/* cx_pow10[e - CX_POW10_MIN] = floor(10^e / 2^r) + 1 with r = floor(log2 10^e) - 125, so
 * 2^125 < value <= 2^126 and it exceeds the true 10^e / 2^r by at most 1.  Filled by
 * cx_pow10_init(). */
extern cx_u128 cx_pow10[CX_POW10_MAX - CX_POW10_MIN + 1];

/* Fills the table with exact integer arithmetic (a few milliseconds, once).  Idempotent;
 * call it before formatting or parsing (module init does, with the GIL held). */
void cx_pow10_init(void);

/* floor(log2(10^e)) for |e| <= 400 (checked against exact arithmetic) */
static inline int cx_floor_log2_pow10(int e)
{
    int64_t x = (int64_t)e * 913124641741LL;
    /* floor division by 2^38 without relying on how >> treats negative numbers */
    return (int)(x >= 0 ? x / 274877906944LL : -((-x + 274877906943LL) / 274877906944LL));
}

static inline uint64_t cx_mulhi64(uint64_t a, uint64_t b, uint64_t *lo)
{
#if defined(__SIZEOF_INT128__)
    unsigned __int128 p = (unsigned __int128)a * b;
    *lo = (uint64_t)p;
    return (uint64_t)(p >> 64);
#else
    uint64_t a0 = (uint32_t)a, a1 = a >> 32, b0 = (uint32_t)b, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;
    *lo = (mid << 32) | (uint32_t)p00;
    return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
#endif
}

#endif
