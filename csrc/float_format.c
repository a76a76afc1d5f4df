#include "float_format.h"

#include <stdint.h>
#include <string.h>

#include "pow10.h"

/* Schubfach (Raffaello Giulietti, "The Schubfach way to render doubles"), written from
 * the paper's description.  v = c 2^q; the decimal f 10^k is chosen inside the rounding
 * interval of v, computed on 4c (so the interval ends 4c +- 2 are integers) scaled by a
 * 126-bit upper bound of 10^-k; the products are rounded to odd, which keeps every
 * comparison against the interval ends exact. */

/* floor(x / 2^s) for |x| < 2^51 with s <= 41: biased to a non-negative number first, so
 * no branch and no reliance on how >> treats negative numbers */
static inline int floor_div_pow2(int64_t x, int s)
{
    const int64_t bias = (int64_t)1 << 10;
    return (int)((uint64_t)(x + (bias << s)) >> s) - (int)bias;
}

/* floor(log10(2^q)) and floor(log10(3/4 2^q)), for |q| <= 1200 (checked exhaustively) */
static inline int floor_log10_pow2(int q)
{
    return floor_div_pow2((int64_t)q * 661971961083LL, 41);
}

static inline int floor_log10_three_quarters_pow2(int q)
{
    return floor_div_pow2((int64_t)q * 661971961083LL - 274743187321LL, 41);
}

#define MASK63 0x7fffffffffffffffULL

/* g cp / 2^127, rounded to odd; g = g1 2^63 + g0 */
static inline uint64_t round_to_odd(uint64_t g1, uint64_t g0, uint64_t cp)
{
    uint64_t unused;
    uint64_t x1 = cx_mulhi64(g0, cp, &unused);
    uint64_t y0;
    uint64_t y1 = cx_mulhi64(g1, cp, &y0);
    uint64_t z = (y0 >> 1) + x1;
    uint64_t vbp = y1 + (z >> 63);
    return vbp | (((z & MASK63) + MASK63) >> 63);
}

/* The shortest f 10^*k inside the rounding interval of c 2^q; f may end in zeros. */
static uint64_t to_decimal(int q, uint64_t c, int dk, int *k10)
{
    uint64_t out = c & 1; /* an odd c: the interval ends themselves round away from v */
    uint64_t cb = c << 2;
    uint64_t cbr = cb + 2;
    uint64_t cbl;
    int k;
    if (c != ((uint64_t)1 << 52) || q == -1074) {
        cbl = cb - 2;
        k = floor_log10_pow2(q);
    } else { /* a power of two: the gap below is half the gap above */
        cbl = cb - 1;
        k = floor_log10_three_quarters_pow2(q);
    }
    int h = q + cx_floor_log2_pow10(-k) + 2;
    const cx_u128 *g = &cx_pow10[-k - CX_POW10_MIN];
    uint64_t g1 = (g->hi << 1) | (g->lo >> 63);
    uint64_t g0 = g->lo & MASK63;
    uint64_t vb = round_to_odd(g1, g0, cb << h);
    uint64_t vbl = round_to_odd(g1, g0, cbl << h);
    uint64_t vbr = round_to_odd(g1, g0, cbr << h);
    uint64_t s = vb >> 2;
    if (s >= 100) {
        /* one digit fewer, when exactly one of its two candidates is inside */
        uint64_t sp10 = s / 10 * 10;
        uint64_t tp10 = sp10 + 10;
        int upin = vbl + out <= sp10 << 2;
        int wpin = (tp10 << 2) + out <= vbr;
        if (upin != wpin) {
            *k10 = k;
            return upin ? sp10 : tp10;
        }
    }
    uint64_t t = s + 1;
    int uin = vbl + out <= s << 2;
    int win = (t << 2) + out <= vbr;
    *k10 = k + dk;
    if (uin != win)
        return uin ? s : t;
    /* both (or neither) inside: the nearer one, the even one on a tie */
    int64_t cmp = (int64_t)(vb - ((s + t) << 1));
    return cmp < 0 || (cmp == 0 && (s & 1) == 0) ? s : t;
}

static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static const uint64_t pow10_u64[] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
    1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
    1000000000000000000ULL, 10000000000000000000ULL,
};

static inline int digit_count(uint64_t f)
{
    /* Schubfach's digits for a normal double are 16 or 17 (f >= 2^52 > 10^15): two compares
     * with constants, off the path of a table load */
    if (f >= 1000000000000000ULL)
        return 16 + (f >= 10000000000000000ULL) + (f >= 100000000000000000ULL);
    /* floor(log10(2^bits)) is the count or one less */
    int n = floor_log10_pow2(64 - __builtin_clzll(f | 1));
    return n + (f >= pow10_u64[n]);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "float_format.c stores digit words as little-endian bytes"
#endif

#define ASCII_ZEROS 0x3030303030303030ULL

/* The eight decimal digits of x < 10^8 (leading zeros included) as ASCII in one word, the
 * first digit in the lowest byte, so one little-endian store writes them in order.  x is
 * split into 4-digit halves in 32-bit lanes, each into 2-digit quarters in 16-bit lanes,
 * each into digits in bytes; the reciprocal multiplies are exact for these ranges
 * (10486 / 2^20 for n < 10^4 by 100, 103 / 2^10 for n < 100 by 10), and no lane overflows
 * into the next, so every lane divides at once. */
static inline uint64_t digits8(uint32_t x)
{
    uint64_t y = (x / 10000) | ((uint64_t)(x % 10000) << 32);
    uint64_t hundreds = ((y * 10486) >> 20) & 0x0000007f0000007fULL;
    y = hundreds | ((y - hundreds * 100) << 16);
    uint64_t tens = ((y * 103) >> 10) & 0x000f000f000f000fULL;
    y = tens | ((y - tens * 10) << 8);
    return y | ASCII_ZEROS;
}

/* How many of the word's last digits (its highest bytes) are '0'; w is never all zeros
 * where this is asked, but 8 is the answer then. */
static inline int trailing_zero_digits(uint64_t w)
{
    uint64_t z = w ^ ASCII_ZEROS;
    return z ? __builtin_clzll(z) >> 3 : 8;
}

/* f's n digits (1 <= n <= 17) at d, in whole 8-byte stores that may run up to 8 bytes past
 * d + n; returns how many of them are trailing zeros. */
static inline int write_digits(char *d, uint64_t f, int n)
{
    if (n <= 8) {
        uint64_t w = digits8((uint32_t)f);
        int tz = trailing_zero_digits(w);
        w >>= 8 * (8 - n); /* drop the leading zeros */
        memcpy(d, &w, 8);
        return tz;
    }
    uint64_t hi = f / 100000000;
    uint64_t lo_w = digits8((uint32_t)(f - hi * 100000000));
    uint64_t hi_w;
    if (n == 17) {
        uint32_t first = (uint32_t)(hi / 100000000);
        hi_w = digits8((uint32_t)(hi - (uint64_t)first * 100000000));
        d[0] = (char)('0' + first);
        memcpy(d + 1, &hi_w, 8);
    } else {
        hi_w = digits8((uint32_t)hi);
        uint64_t shifted = hi_w >> 8 * (16 - n);
        memcpy(d, &shifted, 8);
    }
    memcpy(d + n - 8, &lo_w, 8);
    int tz = trailing_zero_digits(lo_w);
    return tz < 8 ? tz : 8 + trailing_zero_digits(hi_w);
}

size_t cx_float_repr(double v, char *out)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    char *o = out;
    if (bits >> 63)
        *o++ = '-';
    uint64_t t = bits & ((((uint64_t)1) << 52) - 1);
    int bq = (int)((bits >> 52) & 0x7ff);
    uint64_t f;
    int k;
    if (bq != 0) {
        uint64_t c = ((uint64_t)1 << 52) | t;
        int mq = 1075 - bq;
        if (mq > 0 && mq < 53 && ((c >> mq) << mq) == c) {
            f = c >> mq; /* an integer below 2^53: its own digits */
            k = 0;
        } else {
            f = to_decimal(-mq, c, 0, &k);
        }
    } else if (t >= 32) {
        f = to_decimal(-1074, t, 0, &k);
    } else if (t != 0) {
        /* The few-digit subnormals: the algorithm guarantees the shortest text of two or
         * more digits only, and some of these (5e-324, 1e-323, ...) need one. */
        return 0;
    } else {
        memcpy(o, "0.0", 3);
        return (size_t)(o - out) + 3;
    }
    int n = digit_count(f);
    if (n > 17) /* never seen: Schubfach's result has at most 17 digits; repr's own path then */
        return 0;
    int decpt = n + k; /* v = 0.d1d2...dn 10^decpt */
    /* The digits are written in place, trailing zeros included (they are counted from the
     * written words, not divided off f one power at a time).  Where a '.' goes after the
     * first digits, they are written one place to the right and those first few moved back,
     * one byte each: reading back a wider block just written in pieces stalls on store
     * forwarding. */
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            memcpy(o, "0.000", 5);
            o += 2 - decpt;
            o += n - write_digits(o, f, n);
        } else {
            int sig = n - write_digits(o + 1, f, n);
            if (decpt < sig) {
                for (int i = 0; i < decpt; i++)
                    o[i] = o[i + 1];
                o[decpt] = '.';
                o += sig + 1;
            } else {
                /* an integer: its digits (the written zeros are its own), zeros up to the
                 * point, ".0" */
                memmove(o, o + 1, 16);
                o[16] = o[17];
                memset(o + n, '0', 16);
                o += decpt;
                memcpy(o, ".0", 2);
                o += 2;
            }
        }
        return (size_t)(o - out);
    }
    int sig = n - write_digits(o + 1, f, n);
    o[0] = o[1];
    if (sig > 1) {
        o[1] = '.';
        o += sig + 1;
    } else {
        o += 1;
    }
    int x = decpt - 1;
    *o++ = 'e';
    *o++ = x < 0 ? '-' : '+';
    if (x < 0)
        x = -x;
    if (x >= 100) {
        *o++ = (char)('0' + x / 100);
        x %= 100;
    }
    memcpy(o, digit_pairs + 2 * x, 2);
    o += 2;
    return (size_t)(o - out);
}
