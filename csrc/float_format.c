#include "float_format.h"

#include <stdint.h>
#include <string.h>

#include "pow10.h"

/* Schubfach (Raffaello Giulietti, "The Schubfach way to render doubles"), written from
 * the paper's description.  v = c 2^q; the decimal f 10^k is chosen inside the rounding
 * interval of v, computed on 4c (so the interval ends 4c +- 2 are integers) scaled by a
 * 126-bit upper bound of 10^-k; the products are rounded to odd, which keeps every
 * comparison against the interval ends exact. */

static int floor_div_pow2(int64_t x, int s)
{
    int64_t d = (int64_t)1 << s;
    return (int)(x >= 0 ? x / d : -((-x + d - 1) / d));
}

/* floor(log10(2^q)) and floor(log10(3/4 2^q)), for |q| <= 1200 (checked exhaustively) */
static int floor_log10_pow2(int q)
{
    return floor_div_pow2((int64_t)q * 661971961083LL, 41);
}

static int floor_log10_three_quarters_pow2(int q)
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

static int digit_count(uint64_t f)
{
    /* floor(log10(2^bits)) is the count or one less */
    int n = floor_log10_pow2(64 - __builtin_clzll(f | 1));
    return n + (f >= pow10_u64[n]);
}

/* the n digits of x (x < 10^n, leading zeros written) right-aligned before end */
static void write_pairs(char *end, uint64_t x, int n)
{
    while (n >= 2) {
        end -= 2;
        memcpy(end, digit_pairs + 2 * (x % 100), 2);
        x /= 100;
        n -= 2;
    }
    if (n)
        end[-1] = (char)('0' + x);
}

/* f's n digits at d; the low eight as four independent pairs, so the divisions overlap */
static void write_digits(char *d, uint64_t f, int n)
{
    if (n <= 8) {
        write_pairs(d + n, f, n);
        return;
    }
    uint32_t lo = (uint32_t)(f % 100000000);
    uint32_t a = lo / 10000, b = lo % 10000;
    char *end = d + n;
    memcpy(end - 8, digit_pairs + 2 * (a / 100), 2);
    memcpy(end - 6, digit_pairs + 2 * (a % 100), 2);
    memcpy(end - 4, digit_pairs + 2 * (b / 100), 2);
    memcpy(end - 2, digit_pairs + 2 * (b % 100), 2);
    write_pairs(end - 8, f / 100000000, n - 8);
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
    /* f has up to 17 digits; short decimals (12.5, 0.25) end in many zeros */
    if (f % 100000000 == 0) {
        f /= 100000000;
        k += 8;
        if (f % 100000000 == 0) {
            f /= 100000000;
            k += 8;
        }
    }
    if (f % 10000 == 0) {
        f /= 10000;
        k += 4;
    }
    if (f % 100 == 0) {
        f /= 100;
        k += 2;
    }
    if (f % 10 == 0) {
        f /= 10;
        k += 1;
    }
    /* The digits are written in place: reading back a block just written in pieces
     * would stall on store forwarding.  Where a '.' goes after the first digits, they
     * are written one place to the right and those first few moved back, one byte each. */
    int n = digit_count(f);
    int decpt = n + k; /* v = 0.d1d2...dn 10^decpt */
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            memcpy(o, "0.000", 5);
            o += 2 - decpt;
            write_digits(o, f, n);
            o += n;
        } else if (decpt < n) {
            write_digits(o + 1, f, n);
            for (int i = 0; i < decpt; i++)
                o[i] = o[i + 1];
            o[decpt] = '.';
            o += n + 1;
        } else {
            write_digits(o, f, n);
            o += n;
            memset(o, '0', 16);
            o += decpt - n;
            memcpy(o, ".0", 2);
            o += 2;
        }
        return (size_t)(o - out);
    }
    write_digits(o + 1, f, n);
    o[0] = o[1];
    if (n > 1) {
        o[1] = '.';
        o += n + 1;
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
