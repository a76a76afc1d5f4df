#include "json_encode.h"

#include "float_format.h"
#include "pow10.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc_count.h"

/* Containers deeper than this are checked against the path for cycles; a cycle repeats
 * forever, so it is always found, and shallow documents never pay for the check. */
#define CYCLE_CHECK_DEPTH 64

typedef struct {
    cx_buf *out;
    cx_json_key_texts *keys; /* NULL: no cache */
    int str_fallback; /* unknown types become str(obj), like json.dumps(default=str) */
    int depth;
    int path_cap;
    PyObject **path; /* the containers being encoded, outermost first (borrowed) */
    PyObject *small_path[CYCLE_CHECK_DEPTH];
} encoder;

static int nomem(void)
{
    PyErr_NoMemory();
    return -1;
}

/* cx_buf_append without the call when the bytes fit (the common case); the same checks
 * (cap keeps one spare byte, the limit holds) and the same fallback otherwise. */
static inline int put(cx_buf *out, const void *bytes, size_t n)
{
    if (out->len + n + 1 <= out->cap && (out->limit == 0 || out->len + n <= out->limit)) {
        memcpy(out->data + out->len, bytes, n);
        out->len += n;
        return 0;
    }
    return cx_buf_append(out, bytes, n) == 0 ? 0 : nomem();
}

#define APPEND(e, literal) put((e)->out, literal, sizeof(literal) - 1)

/* Room for exactly n more bytes at out->data + out->len (the caller then adds n to len);
 * NULL with MemoryError set. */
static inline char *reserve(cx_buf *out, size_t n)
{
    if (out->len + n + 1 <= out->cap && (out->limit == 0 || out->len + n <= out->limit))
        return out->data + out->len;
    return cx_buf_reserve(out, n) == 0 ? out->data + out->len : (nomem(), NULL);
}

static const char hex_digits[] = "0123456789abcdef";

/* type(obj).__name__, as json's messages name types */
static const char *short_type_name(PyObject *obj)
{
    const char *name = Py_TYPE(obj)->tp_name;
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* Bytes each code point below 256 takes with ensure_ascii escaping, as json's ESCAPE_ASCII
 * writes it: 1 for ' '..'~' except '"' and '\\', 2 for the short escapes, 6 for \u00XX. */
static const unsigned char escaped_len[256] = {
    6, 6, 6, 6, 6, 6, 6, 6, 2, 2, 2, 6, 2, 2, 6, 6, /* \b \t \n \f \r */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, /* '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 6, /* DEL */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
};

/* The high bit of each byte of x that is below 0x20, '"', '\\', DEL or >= 0x80 (what
 * ensure_ascii escapes); a borrow can set more only above a real one, so the lowest set
 * bit is exact. */
static inline uint64_t needs_escape(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\'), del = x ^ (ones * 0x7f);
    return (((x - ones * 0x20) & ~x) | ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) |
            ((del - ones) & ~del) | x) & highs;
}

/* Copies the 1-byte text bytes[0, n) to q eight bytes at a time, each word stored before it
 * is judged (what needs escaping is written over later), up to the first byte that needs an
 * escape: its index, or n; up to 8 bytes past q + n may be written.  With tail_word, the
 * last 1-7 bytes are one word loaded to end at the text's end, the bytes already looked at
 * shifted out: those before the text are a compact str's header, so the caller passes it
 * only for a text of 8 bytes or more or a compact str; without it they are left to the
 * caller (the index returned is then where the words stopped). */
static inline size_t copy_unescaped(char *q, const unsigned char *bytes, size_t n, int tail_word)
{
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t x;
        memcpy(&x, bytes + i, 8);
        memcpy(q + i, &x, 8);
        uint64_t hit = needs_escape(x);
        if (hit)
            return i + (__builtin_ctzll(hit) >> 3);
    }
    if (i < n && tail_word) {
        int drop = 8 * (8 - (int)(n - i));
        uint64_t x;
        memcpy(&x, bytes + n - 8, 8);
        x >>= drop;
        memcpy(q + i, &x, 8);
        uint64_t hit = needs_escape(x) & (~0ULL >> drop);
        return hit ? i + (__builtin_ctzll(hit) >> 3) : n;
    }
    return i;
}

static inline size_t code_point_len(Py_UCS4 c)
{
    return c < 256 ? escaped_len[c] : c < 0x10000 ? 6 : 12;
}

static inline char *put_u4(char *o, Py_UCS4 unit)
{
    o[0] = '\\';
    o[1] = 'u';
    o[2] = hex_digits[(unit >> 12) & 0xf];
    o[3] = hex_digits[(unit >> 8) & 0xf];
    o[4] = hex_digits[(unit >> 4) & 0xf];
    o[5] = hex_digits[unit & 0xf];
    return o + 6;
}

static inline char *put_escaped(char *o, Py_UCS4 c)
{
    switch (c) {
    case '"': *o++ = '\\'; *o++ = '"'; return o;
    case '\\': *o++ = '\\'; *o++ = '\\'; return o;
    case '\n': *o++ = '\\'; *o++ = 'n'; return o;
    case '\r': *o++ = '\\'; *o++ = 'r'; return o;
    case '\t': *o++ = '\\'; *o++ = 't'; return o;
    case '\b': *o++ = '\\'; *o++ = 'b'; return o;
    case '\f': *o++ = '\\'; *o++ = 'f'; return o;
    default:
        if (c >= 0x10000) { /* a UTF-16 pair, as json writes astral characters */
            Py_UCS4 v = c - 0x10000;
            o = put_u4(o, 0xd800 | (v >> 10));
            return put_u4(o, 0xdc00 | (v & 0x3ff));
        }
        return put_u4(o, c);
    }
}

/* The escaped text of s[i:], whose first character needs escaping; room is reserved for
 * exactly what it takes (a second pass over the string), so the buffer's limit holds. */
#define ESCAPE_REST(TYPE)                                                                     \
    do {                                                                                      \
        const TYPE *chars = data;                                                             \
        size_t need = (size_t)i + 2;                                                          \
        for (Py_ssize_t j = i; j < n; j++)                                                    \
            need += code_point_len(chars[j]);                                                 \
        char *o = reserve(out, need);                                                         \
        if (o == NULL)                                                                        \
            return -1;                                                                        \
        char *start = o;                                                                      \
        *o++ = '"';                                                                           \
        for (Py_ssize_t j = 0; j < i; j++)                                                    \
            *o++ = (char)chars[j];                                                            \
        for (Py_ssize_t j = i; j < n; j++) {                                                  \
            Py_UCS4 c = chars[j];                                                             \
            if (c < 256 && escaped_len[c] == 1)                                               \
                *o++ = (char)c;                                                               \
            else                                                                              \
                o = put_escaped(o, c);                                                        \
        }                                                                                     \
        *o++ = '"';                                                                           \
        out->len += (size_t)(o - start);                                                      \
        return 0;                                                                             \
    } while (0)

/* Strings up to this many characters are escaped in one pass into room for the worst case
 * (6 bytes a character, 12 for the astral ones); longer ones, and buffers with a limit, are
 * measured first, so a big string never reserves several times its size. */
#define ONE_PASS_CHARS 4096

/* chars[i:] escaped at q (room reserved), then the closing quote; out->len becomes q's end */
#define ESCAPE_TAIL(TYPE)                                                                     \
    do {                                                                                      \
        const TYPE *chars = data;                                                             \
        for (Py_ssize_t j = i; j < n; j++) {                                                  \
            Py_UCS4 c = chars[j];                                                             \
            if (c < 256 && escaped_len[c] == 1)                                               \
                *q++ = (char)c;                                                               \
            else                                                                              \
                q = put_escaped(q, c);                                                        \
        }                                                                                     \
        *q++ = '"';                                                                           \
        out->len = (size_t)(q - out->data);                                                   \
        return 0;                                                                             \
    } while (0)

/* ensure_ascii: everything outside ' '..'~' is escaped, as json's ESCAPE_ASCII does.  The
 * common string needs nothing escaped: one scan that copies as it goes. */
static int append_escaped(cx_buf *out, PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t i = 0;
    if (out->limit == 0 && n <= ONE_PASS_CHARS) {
        /* 8 more: the last word of the text may be stored whole */
        char *o = reserve(out, (size_t)n * (kind == PyUnicode_4BYTE_KIND ? 12 : 6) + 2 + 8);
        if (o == NULL)
            return -1;
        *o = '"';
        char *q = o + 1;
        if (kind == PyUnicode_1BYTE_KIND) {
            const unsigned char *bytes = data;
            i = (Py_ssize_t)copy_unescaped(q, bytes, (size_t)n, n >= 8 || PyUnicode_IS_COMPACT(s));
            while (i < n && escaped_len[bytes[i]] == 1) { /* a short legacy str */
                q[i] = (char)bytes[i];
                i++;
            }
            q += i;
            ESCAPE_TAIL(Py_UCS1);
        }
        if (kind == PyUnicode_2BYTE_KIND)
            ESCAPE_TAIL(Py_UCS2);
        ESCAPE_TAIL(Py_UCS4);
    }
    if (kind == PyUnicode_1BYTE_KIND) {
        const unsigned char *bytes = data;
        while (i < n && escaped_len[bytes[i]] == 1)
            i++;
        if (i == n) {
            char *o = reserve(out, (size_t)n + 2);
            if (o == NULL)
                return -1;
            o[0] = '"';
            memcpy(o + 1, bytes, (size_t)n);
            o[n + 1] = '"';
            out->len += (size_t)n + 2;
            return 0;
        }
        ESCAPE_REST(Py_UCS1);
    }
    if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *units = data;
        while (i < n && units[i] < 256 && escaped_len[units[i]] == 1)
            i++;
        ESCAPE_REST(Py_UCS2);
    }
    const Py_UCS4 *points = data;
    while (i < n && points[i] < 256 && escaped_len[points[i]] == 1)
        i++;
    ESCAPE_REST(Py_UCS4);
}

int cx_json_encode_str(PyObject *s, cx_buf *out)
{
    return append_escaped(out, s);
}

static int append_text(encoder *e, PyObject *text)
{
    /* reprs of ints and floats are ASCII */
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
    if (utf8 == NULL)
        return -1;
    return put(e->out, utf8, (size_t)n);
}

static const uint64_t pow10_u64[] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
    1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
    1000000000000000000ULL, 10000000000000000000ULL,
};

static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* v in decimal, as "%lld" writes it */
static int append_long_long(cx_buf *out, long long v)
{
    char digits[24];
    char *end = digits + sizeof digits;
    char *p = end;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        p -= 2;
        memcpy(p, digit_pairs + 2 * r, 2);
    }
    if (u >= 10) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * u, 2);
    } else {
        *--p = (char)('0' + u);
    }
    if (v < 0)
        *--p = '-';
    return put(out, p, (size_t)(end - p));
}

static int append_int(encoder *e, PyObject *obj)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow)
        return append_long_long(e->out, v);
    /* int.__repr__, as json does for ints and their subclasses (and its digit limit) */
    PyObject *text = PyLong_Type.tp_repr(obj);
    if (text == NULL)
        return -1;
    int rc = append_text(e, text);
    Py_DECREF(text);
    return rc;
}

static int append_double(cx_buf *out, double v)
{
    if (isnan(v))
        return put(out, "NaN", 3);
    if (isinf(v))
        return v > 0 ? put(out, "Infinity", 8) : put(out, "-Infinity", 9);
    char text[CX_FLOAT_REPR_MAX];
    size_t n;
    if (out->limit == 0 && out->len + CX_FLOAT_REPR_MAX + 1 <= out->cap) {
        /* straight into the buffer when the room is there already */
        n = cx_float_repr(v, out->data + out->len);
        if (n) {
            out->len += n;
            return 0;
        }
    } else if ((n = cx_float_repr(v, text)) != 0) {
        return put(out, text, n);
    }
    /* float.__repr__ is exactly this call (CPython's allocation: not one of ours to count) */
    char *slow = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (slow == NULL)
        return -1;
    int rc = put(out, slow, strlen(slow));
    PyMem_Free(slow);
    return rc;
}

static int encode(encoder *e, PyObject *obj);

/* What the fast paths below may write at once: ", " and a float's repr with the blocks it
 * writes past its end, or ", " and a cached key's text. */
#define ITEM_ROOM 64

/* The fast paths write into spare capacity without the exact accounting a limit needs. */
static inline int has_room(const cx_buf *out)
{
    return out->limit == 0 && out->len + ITEM_ROOM < out->cap;
}

/* Where the loops below may write with the fast paths: before this, has_room holds.  The
 * loops keep their write position in a local and store it to out->len only around the
 * slow paths: through out->len, every item's write had to wait on the last one's store
 * (the char stores may alias it, so it was reloaded each time). */
static inline char *fast_end(const cx_buf *out)
{
    return out->limit == 0 && out->cap > ITEM_ROOM ? out->data + out->cap - ITEM_ROOM : out->data;
}

/* A compact ASCII str needing no escapes, quoted, at o when it fits before cap_end with
 * the whole words written past its end; its length, or 0 (then what was written does not
 * count and append_escaped does it).  Strs are most of a document's values, and this is
 * append_escaped's common case without the call, the kind dispatch and the reserve. */
static inline size_t ascii_text(char *o, PyObject *s, const char *cap_end)
{
    if (!PyUnicode_IS_COMPACT_ASCII(s))
        return 0;
    size_t n = (size_t)PyUnicode_GET_LENGTH(s);
    if ((size_t)(cap_end - o) < n + 2 + 8)
        return 0;
    const unsigned char *bytes = (const unsigned char *)(((PyASCIIObject *)s) + 1);
    *o = '"';
    char *q = o + 1;
    if (copy_unescaped(q, bytes, n, 1) != n)
        return 0;
    q[n] = '"';
    return n + 2;
}

/* The text of a float (finite, not one of the few subnormals repr formats itself), an int
 * of 64 bits or an ascii_text str at o, with ITEM_ROOM - 2 bytes there and the buffer's
 * capacity ending at cap_end; its length, or 0 when obj is none of those and nothing counts
 * as written.  No Python code runs, so the caller needs no reference of its own to obj. */
static inline size_t scalar_text(char *o, PyObject *obj, const char *cap_end)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (type == &PyUnicode_Type)
        return ascii_text(o, obj, cap_end);
    if (type == &PyFloat_Type) {
        double v = PyFloat_AS_DOUBLE(obj);
        return isfinite(v) ? cx_float_repr(v, o) : 0;
    }
    if (type == &PyLong_Type) {
        /* up to two digits (60 bits) read from the object itself, as 3.11 lays it out (the
         * sign in ob_size): most ints, without a call each */
        unsigned long long u;
#if PY_VERSION_HEX < 0x030C0000 /* 3.12 keeps the sign and size elsewhere (lv_tag) */
        Py_ssize_t size = Py_SIZE(obj);
        size_t sign = size < 0;
        if (size >= -2 && size <= 2) {
            const digit *dg = ((PyLongObject *)obj)->ob_digit;
            u = size == 0 ? 0 : dg[0];
            if (size == 2 || size == -2)
                u |= (unsigned long long)dg[1] << PyLong_SHIFT;
        } else
#else
        size_t sign;
#endif
        {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
            if (overflow)
                return 0;
            sign = v < 0;
            u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        }
        /* written backwards from the end the digit count gives: no copy afterwards */
        /* floor(log10(2^bits)) is the digit count or one less; u | 1 counts 0 as 1 */
        int t = ((64 - __builtin_clzll(u | 1)) * 1233) >> 12;
        size_t n = (size_t)t + ((u | 1) >= pow10_u64[t]);
        o[0] = '-'; /* counted only for a negative v */
        char *p = o + sign + n;
        while (u >= 100) {
            unsigned r = (unsigned)(u % 100);
            u /= 100;
            p -= 2;
            memcpy(p, digit_pairs + 2 * r, 2);
        }
        if (u >= 10)
            memcpy(p - 2, digit_pairs + 2 * u, 2);
        else
            p[-1] = (char)('0' + u);
        return sign + n;
    }
    if (obj == Py_None) {
        memcpy(o, "null", 4);
        return 4;
    }
    if (obj == Py_True) {
        memcpy(o, "true", 4);
        return 4;
    }
    if (obj == Py_False) {
        memcpy(o, "false", 5);
        return 5;
    }
    return 0;
}


static int enter(encoder *e, PyObject *container)
{
    if (e->depth >= CYCLE_CHECK_DEPTH) {
        for (int i = 0; i < e->depth; i++) {
            if (e->path[i] == container) {
                PyErr_SetString(PyExc_ValueError, "Circular reference detected");
                return -1;
            }
        }
    }
    if (Py_EnterRecursiveCall(" while encoding a JSON object"))
        return -1;
    if (e->depth == e->path_cap) {
        int cap = e->path_cap * 2;
        PyObject **path = CX_PYMEM_MALLOC(CX_ALLOC_SCRATCH, (size_t)cap * sizeof *path);
        if (path == NULL) {
            Py_LeaveRecursiveCall();
            return nomem();
        }
        memcpy(path, e->path, (size_t)e->depth * sizeof *path);
        if (e->path != e->small_path)
            CX_PYMEM_FREE(CX_ALLOC_SCRATCH, e->path);
        e->path = path;
        e->path_cap = cap;
    }
    e->path[e->depth++] = container;
    return 0;
}

static void leave(encoder *e)
{
    e->depth--;
    Py_LeaveRecursiveCall();
}

/* Lists and tuples themselves; the size is read again after each item, as the list may
 * change under a str() fallback or a numpy tolist(). */
/* One item borrowed from the container being encoded.  A str runs no Python code, so the
 * container's reference keeps it alive; anything else may run some (a str() fallback, a
 * numpy tolist()) that could drop it from the container, so it is held for the call. */
static int encode_member(encoder *e, PyObject *item)
{
    if (Py_TYPE(item) == &PyUnicode_Type)
        return append_escaped(e->out, item);
    Py_INCREF(item);
    int bad = encode(e, item);
    Py_DECREF(item);
    return bad ? -1 : 0;
}

static int encode_items(encoder *e, PyObject *seq)
{
    if (enter(e, seq) < 0)
        return -1;
    int rc = -1;
    cx_buf *out = e->out;
    if (APPEND(e, "[") < 0)
        goto out;
    char *o = out->data + out->len, *end = fast_end(out);
    /* the items and their count are read again only after a slow path, the one place
     * Python code can change the list; the char stores would have made each item's
     * lookup reload them and test the type again */
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t size = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *item = items[i];
        if (o < end) {
            /* the separator is written either way and counted only after the first */
            size_t sep = i > 0 ? 2 : 0;
            memcpy(o, ", ", 2);
            size_t n = scalar_text(o + sep, item, end + ITEM_ROOM);
            if (n) {
                o += sep + n;
                continue;
            }
        }
        out->len = (size_t)(o - out->data);
        if (i > 0 && APPEND(e, ", ") < 0)
            goto out;
        if (encode_member(e, item) < 0)
            goto out;
        o = out->data + out->len;
        end = fast_end(out);
        items = PySequence_Fast_ITEMS(seq);
        size = PySequence_Fast_GET_SIZE(seq);
    }
    out->len = (size_t)(o - out->data);
    rc = APPEND(e, "]");
out:
    leave(e);
    return rc;
}

static int encode_sequence(encoder *e, PyObject *seq)
{
    if (PyList_CheckExact(seq) || PyTuple_CheckExact(seq))
        return encode_items(e, seq);
    PyObject *fast = PySequence_Fast(seq, "expected a sequence");
    if (fast == NULL)
        return -1;
    int rc = -1;
    if (enter(e, seq) < 0)
        goto done;
    if (APPEND(e, "[") < 0)
        goto out;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        if (i > 0 && APPEND(e, ", ") < 0)
            goto out;
        if (encode_member(e, PySequence_Fast_GET_ITEM(fast, i)) < 0)
            goto out;
    }
    rc = APPEND(e, "]");
out:
    leave(e);
done:
    Py_DECREF(fast);
    return rc;
}

/* Dict keys as json.dumps converts them. */
static int encode_key(encoder *e, PyObject *key)
{
    if (PyUnicode_Check(key))
        return append_escaped(e->out, key);
    if (APPEND(e, "\"") < 0)
        return -1;
    int rc;
    if (key == Py_True)
        rc = APPEND(e, "true");
    else if (key == Py_False)
        rc = APPEND(e, "false");
    else if (key == Py_None)
        rc = APPEND(e, "null");
    else if (PyFloat_Check(key))
        rc = append_double(e->out, PyFloat_AS_DOUBLE(key));
    else if (PyLong_Check(key))
        rc = append_int(e, key);
    else {
        /* json's C encoder names the key's type by its full tp_name ("numpy.int64") */
        PyErr_Format(PyExc_TypeError, "keys must be str, int, float, bool or None, not %.100s",
                     Py_TYPE(key)->tp_name);
        return -1;
    }
    if (rc < 0)
        return -1;
    return APPEND(e, "\"");
}

static int encode_pair(encoder *e, PyObject *key, PyObject *value, int first)
{
    if (!first && APPEND(e, ", ") < 0)
        return -1;
    if (encode_key(e, key) < 0 || APPEND(e, ": ") < 0)
        return -1;
    return encode(e, value);
}

static inline size_t key_slot(PyObject *key)
{
    /* the object's address, its low (alignment) bits mixed in by a multiply */
    return (size_t)(((uint64_t)(uintptr_t)key * 0x9e3779b97f4a7c15ULL) >> 32) % CX_JSON_KEY_TEXTS;
}

/* ", " (unless first), the key as a JSON string and ": ", from the cache when the same str
 * object was written before.  Identity is what is checked: the cache holds a reference, so
 * the address cannot be reused by another object while the entry stands, and a str's text
 * never changes. */
static int cached_key(encoder *e, PyObject *key, int first)
{
    cx_buf *out = e->out;
    cx_json_key_text *slot = &e->keys->slots[key_slot(key)];
    if (slot->key == key && has_room(out)) {
        char *o = out->data + out->len;
        size_t sep = first ? 0 : 2;
        memcpy(o, ", ", 2);
        memcpy(o + sep, slot->text, sizeof slot->text); /* the whole block: its length counts */
        out->len += sep + slot->len;
        return 0;
    }
    if (!first && APPEND(e, ", ") < 0)
        return -1;
    size_t start = out->len;
    if (append_escaped(out, key) < 0 || APPEND(e, ": ") < 0)
        return -1;
    size_t n = out->len - start;
    if (n <= sizeof slot->text) {
        memcpy(slot->text, out->data + start, n);
        slot->len = (unsigned char)n;
        Py_INCREF(key);
        Py_XSETREF(slot->key, key); /* the old str's dealloc runs no Python code */
    }
    return 0;
}

void cx_json_key_texts_clear(cx_json_key_texts *cache)
{
    for (size_t i = 0; i < CX_JSON_KEY_TEXTS; i++)
        Py_CLEAR(cache->slots[i].key);
}

static int encode_dict(encoder *e, PyObject *dict)
{
    if (enter(e, dict) < 0)
        return -1;
    int rc = -1;
    if (APPEND(e, "{") < 0)
        goto out;
    if (PyDict_CheckExact(dict)) {
        cx_buf *out = e->out;
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        int first = 1;
        char *o = out->data + out->len, *end = fast_end(out);
        while (PyDict_Next(dict, &pos, &key, &value)) {
            /* key and value are borrowed: scalars and strs run no Python code; anything else
             * gets references of its own, as its encoding may change the dict */
            cx_json_key_text *slot;
            if (Py_TYPE(key) == &PyUnicode_Type && e->keys != NULL
                && (slot = &e->keys->slots[key_slot(key)])->key == key && o < end) {
                /* a key written before: cached_key's fast path, at o */
                size_t sep = first ? 0 : 2;
                memcpy(o, ", ", 2);
                memcpy(o + sep, slot->text, sizeof slot->text); /* the whole block: its length counts */
                o += sep + slot->len;
            } else {
                out->len = (size_t)(o - out->data);
                if (Py_TYPE(key) == &PyUnicode_Type && e->keys != NULL) {
                    if (cached_key(e, key, first) < 0)
                        goto out;
                } else {
                    Py_INCREF(key);
                    int bad = (!first && APPEND(e, ", ") < 0) || encode_key(e, key) < 0 || APPEND(e, ": ") < 0;
                    Py_DECREF(key);
                    if (bad)
                        goto out;
                }
                o = out->data + out->len;
                end = fast_end(out);
            }
            first = 0;
            if (o < end) {
                size_t n = scalar_text(o, value, end + ITEM_ROOM);
                if (n) {
                    o += n;
                    continue;
                }
            }
            out->len = (size_t)(o - out->data);
            if (encode_member(e, value) < 0)
                goto out;
            o = out->data + out->len;
            end = fast_end(out);
        }
        out->len = (size_t)(o - out->data);
    } else { /* subclasses: their items(), as json uses */
        PyObject *items = PyMapping_Items(dict);
        if (items == NULL)
            goto out;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
            PyObject *pair = PyList_GET_ITEM(items, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_ValueError, "items must return 2-tuples");
                Py_DECREF(items);
                goto out;
            }
            if (encode_pair(e, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), i == 0)) {
                Py_DECREF(items);
                goto out;
            }
        }
        Py_DECREF(items);
    }
    rc = APPEND(e, "}");
out:
    leave(e);
    return rc;
}

static int is_numpy(PyObject *obj)
{
    return strncmp(Py_TYPE(obj)->tp_name, "numpy.", 6) == 0;
}

static int encode(encoder *e, PyObject *obj)
{
    /* the exact built-in types first: one pointer compare each, no subtype walk */
    PyTypeObject *type = Py_TYPE(obj);
    if (type == &PyUnicode_Type)
        return append_escaped(e->out, obj);
    if (type == &PyFloat_Type)
        return append_double(e->out, PyFloat_AS_DOUBLE(obj));
    if (type == &PyLong_Type)
        return append_int(e, obj);
    if (type == &PyDict_Type)
        return encode_dict(e, obj);
    if (type == &PyList_Type)
        return encode_items(e, obj);
    if (obj == Py_None)
        return APPEND(e, "null");
    if (obj == Py_True)
        return APPEND(e, "true");
    if (obj == Py_False)
        return APPEND(e, "false");
    if (PyUnicode_Check(obj))
        return append_escaped(e->out, obj);
    if (PyLong_Check(obj))
        return append_int(e, obj);
    if (PyFloat_Check(obj))
        return append_double(e->out, PyFloat_AS_DOUBLE(obj));
    if (PyList_Check(obj) || PyTuple_Check(obj))
        return encode_sequence(e, obj);
    if (PyDict_Check(obj))
        return encode_dict(e, obj);
    if (is_numpy(obj)) {
        /* arrays and scalars: what .tolist() gives, found by name so numpy is never imported */
        PyObject *plain = PyObject_CallMethod(obj, "tolist", NULL);
        if (plain == NULL)
            return -1;
        int rc = -1;
        if (is_numpy(plain))
            PyErr_Format(PyExc_TypeError, "Object of type %.100s is not JSON serializable", short_type_name(obj));
        else if (enter(e, obj) == 0) {
            rc = encode(e, plain);
            leave(e);
        }
        Py_DECREF(plain);
        return rc;
    }
    if (e->str_fallback) {
        PyObject *text = PyObject_Str(obj);
        if (text == NULL)
            return -1;
        int rc = append_escaped(e->out, text);
        Py_DECREF(text);
        return rc;
    }
    PyErr_Format(PyExc_TypeError, "Object of type %.100s is not JSON serializable", short_type_name(obj));
    return -1;
}

static int run(PyObject *obj, cx_buf *out, cx_json_key_texts *keys, int str_fallback)
{
    encoder e;
    e.out = out;
    e.keys = keys;
    e.str_fallback = str_fallback;
    e.depth = 0;
    e.path_cap = CYCLE_CHECK_DEPTH;
    e.path = e.small_path;
    int rc = encode(&e, obj);
    if (e.path != e.small_path)
        CX_PYMEM_FREE(CX_ALLOC_SCRATCH, e.path);
    return rc;
}

int cx_json_encode_ex(PyObject *obj, cx_buf *out, int str_fallback)
{
    return run(obj, out, NULL, str_fallback);
}

int cx_json_encode(PyObject *obj, cx_buf *out)
{
    return run(obj, out, NULL, 0);
}

int cx_json_encode_keyed(PyObject *obj, cx_buf *out, cx_json_key_texts *keys)
{
    return run(obj, out, keys, 0);
}
