#include "json_decode.h"

#include "float_parse.h"

#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc_count.h"

typedef struct {
    const unsigned char *start;
    const unsigned char *p;
    const unsigned char *end;
    int depth;
    int surrogates; /* UTF-8-encoded surrogates are characters (a str's surrogatepass text) */
    cx_json_key_cache *cache;
    cx_json_error *error;
    /* The items of the arrays being parsed, innermost last (owned): an array takes its
     * own off the top when it closes and is built at its final size in one go. */
    PyObject **stack;
    size_t top, cap;
    PyObject *small_stack[256];
} decoder;

static size_t utf8_sequence(const unsigned char *p, const unsigned char *end, int surrogates);

static PyObject *fail(decoder *d, const unsigned char *at, const char *what)
{
    /* a stray non-UTF-8 byte is the real problem wherever it sits */
    if (at < d->end && *at >= 0x80 && utf8_sequence(at, d->end, d->surrogates) == 0)
        what = "invalid UTF-8";
    size_t pos = (size_t)(at - d->start);
    d->error->position = pos;
    snprintf(d->error->message, sizeof d->error->message, "%s at byte %zu", what, pos);
    return NULL;
}

static inline void skip_ws(decoder *d)
{
    const unsigned char *p = d->p;
    if (p < d->end && *p > ' ') /* most often there is none */
        return;
    while (p < d->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    d->p = p;
}

void cx_json_key_cache_clear(cx_json_key_cache *cache)
{
    for (size_t i = 0; i < CX_JSON_KEY_CACHE_SIZE; i++) {
        Py_CLEAR(cache->keys[i]);
        cache->text[i].len = 0;
    }
}

/* ---- strings -------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (2-4 bytes, no overlongs, no surrogates unless
 * asked), or 0. */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end, int surrogates)
{
    unsigned c = p[0];
    if (c >= 0xc2 && c <= 0xdf) {
        return end - p >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        if (end - p < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && p[1] < 0xa0)
            return 0; /* overlong */
        if (c == 0xed && p[1] >= 0xa0 && !surrogates)
            return 0; /* UTF-16 surrogate encoded as UTF-8 */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (end - p < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))
            return 0; /* overlong, or beyond U+10FFFF */
        return 4;
    }
    return 0;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_u4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* The code point of the valid UTF-8 sequence at p (utf8_sequence has checked it). */
static inline Py_UCS4 utf8_decode(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80)
        return c;
    if (c < 0xe0)
        return ((c & 0x1f) << 6) | (p[1] & 0x3f);
    if (c < 0xf0)
        return ((c & 0x0f) << 12) | ((p[1] & 0x3fu) << 6) | (p[2] & 0x3f);
    return ((c & 0x07) << 18) | ((p[1] & 0x3fu) << 12) | ((p[2] & 0x3fu) << 6) | (p[3] & 0x3f);
}

static PyObject *ascii_string(const unsigned char *s, size_t n)
{
    PyObject *str = PyUnicode_New((Py_ssize_t)n, 127);
    if (str)
        memcpy(PyUnicode_1BYTE_DATA(str), s, n);
    return str;
}

#define KEY_CACHE_WAYS 2
#define KEY_CACHE_SETS (CX_JSON_KEY_CACHE_SIZE / KEY_CACHE_WAYS)

/* A key without escapes or non-ASCII, up to 64 bytes: from the cache when it is there.
 * The first 16 bytes, zero padded, are both the hash's input and what a hit is compared
 * on; a longer key's rest is hashed and compared from the text.  end bounds what may be
 * read (the key's closing quote and what follows are there to be read in whole words). */
static PyObject *cached_key(decoder *d, const unsigned char *s, size_t n)
{
    if (n > 64)
        return ascii_string(s, n);
    uint64_t w0 = 0, w1 = 0;
    size_t head = n < 16 ? n : 16;
    if (d->end - s >= 16) {
        memcpy(&w0, s, 8);
        memcpy(&w1, s + 8, 8);
        if (head <= 8) {
            w0 = head ? w0 & (~0ULL >> (64 - 8 * head)) : 0;
            w1 = 0;
        } else {
            w1 &= ~0ULL >> (128 - 8 * head);
        }
    } else {
        for (size_t j = 0; j < head; j++) {
            if (j < 8)
                w0 |= (uint64_t)s[j] << (8 * j);
            else
                w1 |= (uint64_t)s[j] << (8 * (j - 8));
        }
    }
    uint64_t h = (n * 0x9e3779b97f4a7c15ULL ^ w0) * 0xff51afd7ed558ccdULL;
    h = (h ^ w1) * 0xff51afd7ed558ccdULL;
    for (size_t i = 16; i < n; i += 8) {
        uint64_t w = 0;
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(&w, s + i, k);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
    }
    size_t set = (size_t)(h >> 32) % KEY_CACHE_SETS * KEY_CACHE_WAYS;
    cx_json_key_cache *cache = d->cache;
    /* len is stored plus one, so an empty slot (all zero) matches nothing */
    for (size_t way = 0; way < KEY_CACHE_WAYS; way++) {
        cx_json_key_prefix *t = &cache->text[set + way];
        if (t->len == n + 1 && t->w0 == w0 && t->w1 == w1
            && (n <= 16 || memcmp(PyUnicode_1BYTE_DATA(cache->keys[set + way]) + 16, s + 16, n - 16) == 0)) {
            PyObject *hit = cache->keys[set + way];
            if (way) { /* the most recently used first: the other way is what a miss evicts */
                cx_json_key_prefix tt = *t;
                cache->keys[set + way] = cache->keys[set];
                cache->text[set + way] = cache->text[set];
                cache->keys[set] = hit;
                cache->text[set] = tt;
            }
            return Py_NewRef(hit);
        }
    }
    PyObject *key = ascii_string(s, n);
    if (key == NULL)
        return NULL;
    /* the hash is computed once here and kept with the cached object */
    if (PyObject_Hash(key) == -1) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *evicted = cache->keys[set + KEY_CACHE_WAYS - 1];
    memmove(&cache->keys[set + 1], &cache->keys[set], (KEY_CACHE_WAYS - 1) * sizeof cache->keys[0]);
    memmove(&cache->text[set + 1], &cache->text[set], (KEY_CACHE_WAYS - 1) * sizeof cache->text[0]);
    cache->keys[set] = Py_NewRef(key);
    cache->text[set].len = n + 1;
    cache->text[set].w0 = w0;
    cache->text[set].w1 = w1;
    Py_XDECREF(evicted); /* a str's dealloc runs no Python code */
    return key;
}

/* d->p is just past the opening quote. */
static PyObject *parse_string(decoder *d, int is_key)
{
    const unsigned char *begin = d->p;
    const unsigned char *p = begin;
    const unsigned char *end = d->end;
    int ascii = 1;
    /* fast scan: the common string has no escapes */
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (p < end) {
        /* eight bytes at a time: a byte < 0x20, '"', '\\' or >= 0x80 sets its high bit in
         * stop; a borrow can only flag bytes after a real one, so the lowest flag is exact */
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
            uint64_t stop = (((x - ones * 0x20) & ~x) | ((quote - ones) & ~quote) |
                             ((backslash - ones) & ~backslash) | x) & highs;
            if (stop) {
                p += __builtin_ctzll(stop) >> 3;
                break;
            }
            p += 8;
        }
        if (p >= end)
            break;
        unsigned char c = *p;
        if (c == '"' || c == '\\' || c < 0x20)
            break;
        if (c >= 0x80) {
            size_t n = utf8_sequence(p, end, d->surrogates);
            if (n == 0)
                return fail(d, p, "invalid UTF-8 in a string");
            ascii = 0;
            p += n;
        } else {
            p++;
        }
    }
    if (p >= end)
        return fail(d, begin - 1, "unterminated string");
    if (*p == '"') {
        d->p = p + 1;
        size_t n = (size_t)(p - begin);
        if (ascii)
            return is_key ? cached_key(d, begin, n) : ascii_string(begin, n);
        return PyUnicode_DecodeUTF8((const char *)begin, (Py_ssize_t)n, d->surrogates ? "surrogatepass" : "strict");
    }
    if (*p < 0x20)
        return fail(d, p, "control character in a string");

    /* escapes: decoded to code points, then copied into a str of the narrowest kind.  The
     * string's source extent bounds the code points; where no closing quote is found the
     * rest of the document does, and the loop below reports the first error as it is met. */
    const unsigned char *close = p;
    while (close < end && *close != '"')
        close += *close == '\\' && end - close >= 2 ? 2 : 1;
    size_t cap = close < end ? (size_t)(close - begin) : (size_t)(end - begin);
    Py_UCS4 stack_buf[128];
    Py_UCS4 *buf = cap <= sizeof stack_buf / sizeof stack_buf[0] ? stack_buf
                                                                 : CX_PYMEM_MALLOC(CX_ALLOC_SCRATCH, cap * sizeof *buf);
    if (buf == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    /* the OR of the code points falls in the same kind's range as their maximum */
    Py_UCS4 any = 0;
    Py_UCS4 *o = buf;
    for (const unsigned char *q = begin; q < p;) {
        Py_UCS4 cp = utf8_decode(q); /* the fast scan has checked these */
        q += *q < 0x80 ? 1 : *q < 0xe0 ? 2 : *q < 0xf0 ? 3 : 4;
        any |= cp;
        *o++ = cp;
    }
    PyObject *result = NULL;
    for (;;) {
        if (p >= end) {
            fail(d, begin - 1, "unterminated string");
            goto done;
        }
        unsigned char c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20) {
            fail(d, p, "control character in a string");
            goto done;
        }
        if (c >= 0x80) {
            size_t n = utf8_sequence(p, end, d->surrogates);
            if (n == 0) {
                fail(d, p, "invalid UTF-8 in a string");
                goto done;
            }
            Py_UCS4 cp = utf8_decode(p);
            any |= cp;
            *o++ = cp;
            p += n;
            continue;
        }
        if (c != '\\') {
            *o++ = c;
            p++;
            continue;
        }
        const unsigned char *escape = p;
        if (++p >= end) {
            fail(d, escape, "unterminated escape");
            goto done;
        }
        switch (*p) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_u4(p + 1, end, &cp) < 0) {
                fail(d, escape, "invalid \\u escape");
                goto done;
            }
            p += 4;
            /* a high surrogate followed by an escaped low one is one character, as in json;
             * any other surrogate stays a lone one, as json keeps it */
            unsigned low;
            if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 7 && p[1] == '\\' && p[2] == 'u'
                && read_u4(p + 3, end, &low) == 0 && low >= 0xdc00 && low <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                p += 6;
            }
            any |= cp;
            *o++ = cp;
            break;
        }
        default:
            fail(d, escape, "invalid escape");
            goto done;
        }
        p++;
    }
    d->p = p;
    size_t len = (size_t)(o - buf);
    Py_UCS4 maxchar = any < 0x80 ? 0x7f : any < 0x100 ? 0xff : any < 0x10000 ? 0xffff : 0x10ffff;
    result = PyUnicode_New((Py_ssize_t)len, maxchar);
    if (result == NULL)
        goto done;
    if (maxchar <= 0xff) {
        Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
        for (size_t i = 0; i < len; i++)
            out[i] = (Py_UCS1)buf[i];
    } else if (maxchar == 0xffff) {
        Py_UCS2 *out = PyUnicode_2BYTE_DATA(result);
        for (size_t i = 0; i < len; i++)
            out[i] = (Py_UCS2)buf[i];
    } else {
        memcpy(PyUnicode_4BYTE_DATA(result), buf, len * sizeof *buf);
    }
done:
    if (buf != stack_buf)
        CX_PYMEM_FREE(CX_ALLOC_SCRATCH, buf);
    return result;
}

/* ---- numbers -------------------------------------------------------------------------- */

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

#define ASCII_ZEROS 0x3030303030303030ULL

/* The value of eight digit values (0-9, one a byte, the first in the lowest byte): pairs,
 * then quads, then the eight combined, every lane at once; no lane can carry into the next
 * (99, 9999 and 99999999 fit their 8, 16 and 32 bits). */
static inline uint64_t value8(uint64_t a)
{
    a = (a * 10 + (a >> 8)) & 0x00ff00ff00ff00ffULL;
    a = (a * 100 + (a >> 16)) & 0x0000ffff0000ffffULL;
    return (a * 10000 + (a >> 32)) & 0xffffffffULL;
}

static const uint64_t pow10_upto8[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};

/* Consumes the run of digits at p.  *digits counts every one of them; *w accumulates their
 * value only while the count stays within 19, past which the caller ignores w and parses
 * the text exactly.  Eight bytes are looked at a time: a byte is a digit when its value
 * xor '0' is below 10, tested without carries between bytes, and the leading digits of
 * the word are converted in one go. */
static inline const unsigned char *scan_digits(const unsigned char *p, const unsigned char *end,
                                               uint64_t *w, int *digits, int lead)
{
    uint64_t v = *w;
    int n = *digits;
    /* The first lead digits one at a time: an int part is most often a few digits, for
     * which the word steps below cost more than they save (they gave a float's int part
     * and fraction the same long sequence each); a fraction starts with them (lead 0). */
    for (int j = 0; j < lead; j++) {
        if (p >= end || !is_digit(*p))
            goto done;
        if (++n <= 19)
            v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    /* Sixteen bytes a step where they are there: where the digits end is found from both
     * words at once, so the next step's load waits on one mask and not two (a float's
     * fraction is most often 9-16 digits); the values are off that path. */
    while (end - p >= 16) {
        uint64_t x0, x1;
        memcpy(&x0, p, 8);
        memcpy(&x1, p + 8, 8);
        uint64_t a0 = x0 ^ ASCII_ZEROS, a1 = x1 ^ ASCII_ZEROS;
        uint64_t nd0 = (((a0 & 0x7f7f7f7f7f7f7f7fULL) + 0x7676767676767676ULL) | a0) & 0x8080808080808080ULL;
        uint64_t nd1 = (((a1 & 0x7f7f7f7f7f7f7f7fULL) + 0x7676767676767676ULL) | a1) & 0x8080808080808080ULL;
        if (nd0) {
            int k = __builtin_ctzll(nd0) >> 3;
            if (k && n + k <= 19)
                v = v * pow10_upto8[k] + value8(a0 << (64 - 8 * k));
            n += k;
            p += k;
            goto done;
        }
        int k = nd1 ? __builtin_ctzll(nd1) >> 3 : 8;
        if (n + 8 + k <= 19) {
            v = v * 100000000 + value8(a0);
            if (k)
                v = v * pow10_upto8[k] + value8(a1 << (64 - 8 * k));
        }
        n += 8 + k;
        p += 8 + k;
        if (k < 8)
            goto done;
    }
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t a = x ^ ASCII_ZEROS;
        uint64_t not_digit = (((a & 0x7f7f7f7f7f7f7f7fULL) + 0x7676767676767676ULL) | a) & 0x8080808080808080ULL;
        int k = not_digit ? __builtin_ctzll(not_digit) >> 3 : 8;
        if (k == 0)
            goto done;
        if (n + k <= 19) /* the k digits moved to the top, zeros before them */
            v = v * pow10_upto8[k] + value8(a << (64 - 8 * k));
        n += k;
        p += k;
        if (k < 8)
            goto done;
    }
    for (; p < end && is_digit(*p); p++) {
        if (++n <= 19)
            v = v * 10 + (uint64_t)(*p - '0');
    }
done:
    *w = v;
    *digits = n;
    return p;
}

/* A number's text as scanned: its value is w 10^q while digits <= 19. */
typedef struct {
    const unsigned char *end; /* just past the number */
    uint64_t w;
    long q;
    int digits, int_digits, negative, is_float;
    const char *error; /* NULL, or what is wrong at error_at */
    const unsigned char *error_at;
} number;

/* The number at begin, by the grammar alone: nothing is built and nothing reported. */
static inline __attribute__((always_inline)) void scan_number(const unsigned char *begin, const unsigned char *end,
                                                              number *num)
{
    const unsigned char *p = begin;
    num->error = NULL;
    num->is_float = 0;
    num->negative = p < end && *p == '-';
    p += num->negative;
    if (p >= end || !is_digit(*p)) {
        num->error = "invalid number";
        num->error_at = begin;
        return;
    }
    /* the digits as w 10^scale, exact while there are at most 19 of them; more and the
     * text is parsed exactly */
    uint64_t w = 0;
    int digits = 0;
    long scale = 0;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            num->error = "leading zero in a number";
            num->error_at = begin;
            return;
        }
    } else {
        p = scan_digits(p, end, &w, &digits, 4);
    }
    num->int_digits = (int)(p - begin) - num->negative;
    if (p < end && *p == '.') {
        num->is_float = 1;
        p++;
        if (p >= end || !is_digit(*p)) {
            num->error = "expected a digit after the decimal point";
            num->error_at = p;
            return;
        }
        if (w == 0) { /* leading zeros of a fraction are no significant digits */
            for (; p < end && *p == '0'; p++)
                scale--;
        }
        int before = digits;
        p = scan_digits(p, end, &w, &digits, 0);
        scale -= digits - before;
    }
    long exponent = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        num->is_float = 1;
        p++;
        int neg = 0;
        if (p < end && (*p == '+' || *p == '-'))
            neg = *p++ == '-';
        if (p >= end || !is_digit(*p)) {
            num->error = "expected a digit in the exponent";
            num->error_at = p;
            return;
        }
        for (; p < end && is_digit(*p); p++) {
            if (exponent < 100000) /* far outside any double already: stop counting */
                exponent = exponent * 10 + (*p - '0');
        }
        if (neg)
            exponent = -exponent;
    }
    num->end = p;
    num->w = w;
    num->q = scale + exponent;
    num->digits = digits;
}

enum { NUMBER_TEXT, NUMBER_FLOAT, NUMBER_INT };

/* The value of a scanned number where the fast paths decide it; NUMBER_TEXT: the text
 * must be parsed exactly. */
static inline __attribute__((always_inline)) int number_value(const number *num, double *f, long long *i)
{
    if (num->is_float) {
        double v;
        if (num->w == 0) { /* every digit zero, whatever the exponent */
            *f = num->negative ? -0.0 : 0.0;
            return NUMBER_FLOAT;
        }
        if (num->digits <= 19 && num->q > -100000 && num->q < 100000
            && cx_decimal_to_double(num->w, (int)num->q, &v)) {
            *f = num->negative ? -v : v;
            return NUMBER_FLOAT;
        }
        return NUMBER_TEXT;
    }
    if (num->int_digits <= 18) {
        long long v = (long long)num->w;
        *i = num->negative ? -v : v;
        return NUMBER_INT;
    }
    return NUMBER_TEXT;
}

static PyObject *parse_number(decoder *d)
{
    const unsigned char *begin = d->p;
    number num;
    scan_number(begin, d->end, &num);
    if (num.error)
        return fail(d, num.error_at, num.error);
    d->p = num.end;
    double f;
    long long i;
    switch (number_value(&num, &f, &i)) {
    case NUMBER_FLOAT:
        return PyFloat_FromDouble(f);
    case NUMBER_INT:
        return PyLong_FromLongLong(i);
    default:
        break;
    }
    int is_float = num.is_float;
    size_t n = (size_t)(num.end - begin);
    /* the rare long numbers: copy out NUL-terminated and let Python parse them exactly */
    char stack_buf[64];
    char *text = n < sizeof stack_buf ? stack_buf : CX_PYMEM_MALLOC(CX_ALLOC_SCRATCH, n + 1);
    if (text == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(text, begin, n);
    text[n] = '\0';
    PyObject *result;
    if (is_float) {
        double v = PyOS_string_to_double(text, NULL, NULL); /* overflow gives inf, as float() */
        result = (v == -1.0 && PyErr_Occurred()) ? NULL : PyFloat_FromDouble(v);
    } else {
        result = PyLong_FromString(text, NULL, 10);
    }
    if (text != stack_buf)
        CX_PYMEM_FREE(CX_ALLOC_SCRATCH, text);
    if (result == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        /* Python's limit on int digits: a client error, as json.loads reports it */
        PyErr_Clear();
        return fail(d, begin, "number too long");
    }
    return result;
}

/* ---- structure ------------------------------------------------------------------------ */

static PyObject *parse_value(decoder *d);

static int literal(decoder *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) >= n && memcmp(d->p, word, n) == 0) {
        d->p += n;
        return 1;
    }
    return 0;
}

static int push(decoder *d, PyObject *item)
{
    if (d->top == d->cap) {
        size_t cap = d->cap * 2;
        PyObject **stack = CX_PYMEM_MALLOC(CX_ALLOC_SCRATCH, cap * sizeof *stack);
        if (stack == NULL) {
            Py_DECREF(item);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(stack, d->stack, d->top * sizeof *stack);
        if (d->stack != d->small_stack)
            CX_PYMEM_FREE(CX_ALLOC_SCRATCH, d->stack);
        d->stack = stack;
        d->cap = cap;
    }
    d->stack[d->top++] = item;
    return 0;
}

static inline int number_start(unsigned char c)
{
    return c == '-' || (unsigned)(c - '0') < 10;
}

#define NUMBER_BATCH 32

/* A run of numbers separated by ", ", up to NUMBER_BATCH of them, scanned and converted
 * before any object is made: with no call between them the numbers' arithmetic overlaps,
 * where one PyFloat_FromDouble after each held up the next.  Pushes the objects and
 * returns how many; stops before a number it cannot take whole (an error, a long one),
 * which *at_number then says, for parse_value to read from d->p.  -1: no memory. */
static Py_ssize_t number_run(decoder *d, int *at_number)
{
    struct {
        int kind;
        double f;
        long long i;
    } run[NUMBER_BATCH];
    const unsigned char *end = d->end;
    /* the position is a local until the run ends: each number's scan starts from where the
     * last one's ended, and a round trip through d->p put a store and a load on that path */
    const unsigned char *p = d->p;
    int n = 0;
    *at_number = 0;
    for (;;) {
        number num;
        scan_number(p, end, &num);
        if (num.error || (run[n].kind = number_value(&num, &run[n].f, &run[n].i)) == NUMBER_TEXT) {
            *at_number = 1;
            break;
        }
        n++;
        p = num.end;
        if (n == NUMBER_BATCH || end - p < 3 || p[0] != ',' || p[1] != ' ' || !number_start(p[2]))
            break;
        p += 2;
    }
    d->p = p;
    for (int j = 0; j < n; j++) {
        PyObject *item = run[j].kind == NUMBER_FLOAT ? PyFloat_FromDouble(run[j].f) : PyLong_FromLongLong(run[j].i);
        if (item == NULL || push(d, item) < 0) /* either has set MemoryError */
            return -1;
    }
    return n;
}

static PyObject *parse_array(decoder *d)
{
    const unsigned char *open = d->p;
    d->p++;
    if (++d->depth > CX_JSON_MAX_DEPTH)
        return fail(d, open, "nesting too deep");
    size_t base = d->top;
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        d->depth--;
        return PyList_New(0);
    }
    for (;;) {
        if (d->p < d->end && number_start(*d->p)) {
            int at_number;
            Py_ssize_t n = number_run(d, &at_number);
            if (n < 0)
                goto error;
            if (n > 0 && at_number)
                continue;
            if (n > 0)
                goto separator;
        }
        PyObject *item = parse_value(d);
        if (item == NULL || push(d, item) < 0)
            goto error;
    separator:;
        const unsigned char *p = d->p;
        if (d->end - p >= 2 && p[0] == ',') { /* ", " and the next item */
            d->p = p + 1 + (p[1] == ' ');
            skip_ws(d);
            continue;
        }
        skip_ws(d);
        if (d->p >= d->end) {
            fail(d, d->p, "expected ',' or ']'");
            goto error;
        }
        if (*d->p == ']') {
            d->p++;
            break;
        }
        if (*d->p != ',') {
            fail(d, d->p, "expected ',' or ']'");
            goto error;
        }
        d->p++;
        skip_ws(d);
    }
    PyObject *list = PyList_New((Py_ssize_t)(d->top - base));
    if (list == NULL)
        goto error;
    /* the references move from the stack into the list */
    for (size_t i = base; i < d->top; i++)
        PyList_SET_ITEM(list, (Py_ssize_t)(i - base), d->stack[i]);
    d->top = base;
    d->depth--;
    return list;
error:
    while (d->top > base)
        Py_DECREF(d->stack[--d->top]);
    return NULL;
}

static PyObject *parse_object(decoder *d)
{
    const unsigned char *open = d->p;
    d->p++;
    if (++d->depth > CX_JSON_MAX_DEPTH)
        return fail(d, open, "nesting too deep");
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        d->depth--;
        return dict;
    }
    for (;;) {
        if (d->p >= d->end || *d->p != '"') {
            fail(d, d->p, "expected a string key");
            goto error;
        }
        d->p++;
        PyObject *key = parse_string(d, 1);
        if (key == NULL)
            goto error;
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':') {
            Py_DECREF(key);
            fail(d, d->p, "expected ':' after an object key");
            goto error;
        }
        d->p++;
        skip_ws(d);
        PyObject *value = parse_value(d);
        if (value == NULL) {
            Py_DECREF(key);
            goto error;
        }
        int rc = PyDict_SetItem(dict, key, value); /* a repeated key: the last one wins */
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0)
            goto error;
        skip_ws(d);
        if (d->p >= d->end) {
            fail(d, d->p, "expected ',' or '}'");
            goto error;
        }
        if (*d->p == '}') {
            d->p++;
            break;
        }
        if (*d->p != ',') {
            fail(d, d->p, "expected ',' or '}'");
            goto error;
        }
        d->p++;
        skip_ws(d);
    }
    d->depth--;
    return dict;
error:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *parse_value(decoder *d)
{
    if (d->p >= d->end)
        return fail(d, d->p, "expected a value");
    switch (*d->p) {
    case '{':
        return parse_object(d);
    case '[':
        return parse_array(d);
    case '"':
        d->p++;
        return parse_string(d, 0);
    case 't':
        if (literal(d, "true", 4))
            Py_RETURN_TRUE;
        break;
    case 'f':
        if (literal(d, "false", 5))
            Py_RETURN_FALSE;
        break;
    case 'n':
        if (literal(d, "null", 4))
            Py_RETURN_NONE;
        break;
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return parse_number(d);
    default:
        break;
    }
    return fail(d, d->p, "expected a value");
}

PyObject *cx_json_decode(cx_json_key_cache *cache, const char *data, size_t len, cx_json_error *error)
{
    return cx_json_decode_ex(cache, data, len, 0, error);
}

PyObject *cx_json_decode_ex(cx_json_key_cache *cache, const char *data, size_t len, int surrogates,
                            cx_json_error *error)
{
    decoder d; /* field by field: an initializer would zero small_stack on every call */
    d.start = d.p = (const unsigned char *)data;
    d.end = (const unsigned char *)data + len;
    d.depth = 0;
    d.surrogates = surrogates;
    d.cache = cache;
    d.error = error;
    d.stack = d.small_stack;
    d.top = 0;
    d.cap = sizeof d.small_stack / sizeof d.small_stack[0];
    error->message[0] = '\0';
    error->position = 0;
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        return fail(&d, d.p, "unexpected UTF-8 byte order mark");
    skip_ws(&d);
    PyObject *value = parse_value(&d);
    if (d.stack != d.small_stack)
        CX_PYMEM_FREE(CX_ALLOC_SCRATCH, d.stack);
    if (value == NULL)
        return NULL;
    skip_ws(&d);
    if (d.p != d.end) {
        Py_DECREF(value);
        return fail(&d, d.p, "unexpected data after the JSON value");
    }
    return value;
}
