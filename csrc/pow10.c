#include "pow10.h"

#include <string.h>

cx_u128 cx_pow10[CX_POW10_MAX - CX_POW10_MIN + 1];
static int ready;

/* Just enough of a bignum for the table: 10^342 needs 1137 bits, and the remainder of
 * the division below one more. */
#define LIMBS 40
typedef struct {
    uint32_t d[LIMBS]; /* little-endian */
} big;

static void big_mul10(big *x)
{
    uint64_t carry = 0;
    for (int i = 0; i < LIMBS; i++) {
        uint64_t t = (uint64_t)x->d[i] * 10 + carry;
        x->d[i] = (uint32_t)t;
        carry = t >> 32;
    }
}

static int big_bits(const big *x)
{
    for (int i = LIMBS - 1; i >= 0; i--)
        if (x->d[i])
            return i * 32 + 32 - __builtin_clz(x->d[i]);
    return 0;
}

static int big_bit(const big *x, int i)
{
    return i >= 0 && i < LIMBS * 32 ? (int)(x->d[i / 32] >> (i % 32)) & 1 : 0;
}

static int big_cmp(const big *a, const big *b)
{
    for (int i = LIMBS - 1; i >= 0; i--)
        if (a->d[i] != b->d[i])
            return a->d[i] < b->d[i] ? -1 : 1;
    return 0;
}

static void big_sub(big *a, const big *b)
{
    uint64_t borrow = 0;
    for (int i = 0; i < LIMBS; i++) {
        uint64_t t = (uint64_t)a->d[i] - b->d[i] - borrow;
        a->d[i] = (uint32_t)t;
        borrow = (t >> 32) & 1;
    }
}

static void big_shl1(big *x)
{
    for (int i = LIMBS - 1; i > 0; i--)
        x->d[i] = (x->d[i] << 1) | (x->d[i - 1] >> 31);
    x->d[0] <<= 1;
}

static void set_entry(int e, uint64_t hi, uint64_t lo)
{
    /* + 1: an upper bound, as both users' error analyses assume */
    lo += 1;
    hi += lo == 0;
    cx_pow10[e - CX_POW10_MIN].hi = hi;
    cx_pow10[e - CX_POW10_MIN].lo = lo;
}

void cx_pow10_init(void)
{
    if (ready)
        return;
    big x;
    memset(&x, 0, sizeof x);
    x.d[0] = 1;
    /* e >= 0: the top 126 bits of 10^e, padded with zeros while it is shorter */
    for (int e = 0; e <= CX_POW10_MAX; e++) {
        int n = big_bits(&x);
        uint64_t hi = 0, lo = 0;
        for (int i = 0; i < 126; i++) {
            int bit = big_bit(&x, n - 1 - i);
            hi = (hi << 1) | (lo >> 63);
            lo = (lo << 1) | (uint64_t)bit;
        }
        set_entry(e, hi, lo);
        big_mul10(&x);
    }
    /* e < 0: D = 10^-e has n bits and is no power of two, so floor(log2 10^e) = -n and
     * the entry is floor(2^(125 + n) / D), by long division starting from the remainder
     * 2^(n - 1) < D with 126 bits left to bring down */
    big d;
    memset(&d, 0, sizeof d);
    d.d[0] = 1;
    for (int e = -1; e >= CX_POW10_MIN; e--) {
        big_mul10(&d);
        int n = big_bits(&d);
        big r;
        memset(&r, 0, sizeof r);
        r.d[(n - 1) / 32] = 1u << ((n - 1) % 32);
        uint64_t hi = 0, lo = 0;
        for (int i = 0; i < 126; i++) {
            big_shl1(&r);
            hi = (hi << 1) | (lo >> 63);
            lo <<= 1;
            if (big_cmp(&r, &d) >= 0) {
                big_sub(&r, &d);
                lo |= 1;
            }
        }
        set_entry(e, hi, lo);
    }
    ready = 1;
}
