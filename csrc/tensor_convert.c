#include "tensor_convert.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cortex's client turned TensorFlow Serving's PredictResponse into Python values with
 * protobuf's json_format.MessageToDict, whose float fields come out as ToShortestFloat(v):
 * the text of v with 6, 7, 8, then 9 significant digits ('%.{p}g'), the first that reads
 * back as the same float32.  Doing that with text costs ~0.4 us a value; here each
 * candidate is computed exactly with double arithmetic instead:
 *
 *   m = round-half-even(|x| * 10^s), s = p - 1 - floor(log10 |x|)   (m has p digits)
 *   c = m / 10^s (or m * 10^-s)                                      (the candidate)
 *
 * Every 10^k with 0 <= k <= 22 is exact in a double (5^22 < 2^53), so c is one correctly
 * rounded operation on exact operands: the very double float(text) gives (Clinger's fast
 * path).  |x| * 10^s is not exact, but fma() gives its rounding error exactly, and the sign
 * of that error is all the rounding of m needs (see round_half_even).  Values whose s is
 * beyond +-22 (|x| below ~1e-14 or above ~1e22) take CPython's own formatting and parsing,
 * which is exactly what ToShortestFloat does, only slower.
 *
 * For normal floats this is also numpy's shortest text (str(np.float32(x))): a float32's
 * rounding interval is narrower than the gap between 6-digit decimals, so a shorter text
 * that reads back is the 6-digit one with its zeros dropped.  Subnormals are coarser, and
 * numpy's shortest can be shorter than ToShortestFloat's (1e-45, not 1.4013e-45): for them
 * the digits start at 1, as numpy's do.  And a power of two has a rounding interval twice as
 * wide above as below: when the nearest p-digit decimal is below and outside it, the one
 * above may still be inside, and numpy takes it (ToShortestFloat would go on to p + 1
 * digits: 2^-96 is 1.2621775e-29 for numpy, 1.26217745e-29 for protobuf); so does this. */

#define POW10_EXACT_MAX 22

static const double pow10_exact[POW10_EXACT_MAX + 1] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* The smallest double that a cast to float rounds to infinity: FLT_MAX plus half its ulp
 * (a tie, and FLT_MAX's last bit is odd).  Casting a finite double beyond float's range is
 * undefined in C, so candidates are compared with this first. */
static const double FLOAT_OVERFLOW = 0x1.ffffffp127;

/* Round-half-even of the exact value hi + lo, where 1 <= hi < 2^52 and lo is hi's rounding
 * error (|lo| <= ulp(hi) / 2).  The fraction f of hi is then a multiple of ulp(hi), so
 * f != 1/2 decides alone, and at f == 1/2 the sign of lo does (zero: a true tie). */
static double round_half_even(double hi, double lo)
{
    double n = floor(hi);
    double f = hi - n; /* exact */
    if (f > 0.5)
        return n + 1.0;
    if (f < 0.5)
        return n;
    if (lo != 0.0)
        return lo > 0.0 ? n + 1.0 : n;
    return fmod(n, 2.0) == 0.0 ? n : n + 1.0;
}

/* Whether a normal float32 is a power of two above the smallest normal: the floats below it
 * are half as far apart as those above (FLT_MIN's neighbours are all 2^-149 apart). */
static int lopsided(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, 4);
    return (bits & 0x7fffff) == 0 && ((bits >> 23) & 0xff) > 1;
}

/* The double of x's shortest text, for finite nonzero x: 1 when found here, 0 when x is
 * outside the exact range (the caller takes the slow path). */
static int shortest_fast(float x, double *out)
{
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
    /* the reasoning above needs each operation rounded to double (x87 keeps more bits) */
    (void)x;
    (void)out;
    return 0;
#endif
    double a = fabs((double)x);
    int e2;
    (void)frexp(a, &e2); /* a = f * 2^e2, 1/2 <= f < 1 */
    /* floor(log10 a) or one less; the loop below corrects it from m's digit count */
    int e10 = (int)floor((e2 - 1) * 0.30102999566398120);
    for (int p = 6; p <= 9; p++) {
        for (;;) {
            int s = p - 1 - e10;
            if (s > POW10_EXACT_MAX || s < -POW10_EXACT_MAX)
                return 0;
            double hi, lo;
            if (s >= 0) {
                hi = a * pow10_exact[s];
                lo = fma(a, pow10_exact[s], -hi); /* exactly a * 10^s - hi */
            } else {
                hi = a / pow10_exact[-s];
                /* exactly a - hi * 10^-s: the same sign as a / 10^-s - hi, and smaller than
                 * half of hi's ulp once divided, which is all round_half_even needs */
                lo = fma(-hi, pow10_exact[-s], a);
            }
            double m = round_half_even(hi, lo);
            if (m < pow10_exact[p - 1]) { /* e10 was one too large */
                e10--;
                continue;
            }
            if (m > pow10_exact[p]) { /* one too small (m == 10^p is a rounding up) */
                e10++;
                continue;
            }
            double c = s >= 0 ? m / pow10_exact[s] : m * pow10_exact[-s];
            if ((float)c != (float)a && c < a && lopsided(x)) {
                m += 1.0; /* the p-digit decimal above a */
                c = s >= 0 ? m / pow10_exact[s] : m * pow10_exact[-s];
            }
            if ((float)c == (float)a) {
                *out = x < 0 ? -c : c;
                return 1;
            }
            break; /* p digits do not identify x: one more */
        }
    }
    return 0; /* unreachable: 9 significant digits identify every float32 */
}

/* Whether the decimal c (a double) reads back as x: a cast of a double beyond float's range
 * is undefined, so those are compared first. */
static int reads_back(double c, float x)
{
    return fabs(c) < FLOAT_OVERFLOW && (float)c == x;
}

/* text is PyOS_double_to_string's 'e' form, "[-]d.ddde[+-]XX" with at most 9 digits: the
 * double of the decimal one unit of its last digit further from zero (-1.0 with an
 * exception on failure). */
static double next_decimal_up(const char *text)
{
    const char *q = text;
    int negative = *q == '-';
    if (negative)
        q++;
    long long digits = 0;
    int after_point = 0, seen_point = 0;
    for (; *q && *q != 'e'; q++) {
        if (*q == '.') {
            seen_point = 1;
            continue;
        }
        digits = digits * 10 + (*q - '0');
        after_point += seen_point;
    }
    long exponent = *q == 'e' ? strtol(q + 1, NULL, 10) : 0;
    char buffer[48];
    snprintf(buffer, sizeof buffer, "%s%llde%ld", negative ? "-" : "", digits + 1,
             exponent - after_point);
    return PyOS_string_to_double(buffer, NULL, NULL);
}

/* ToShortestFloat with CPython's own correctly rounded formatting ('e' with p - 1 digits
 * after the point is '%.{p}g' as a number) and parsing, from 1 digit for subnormals: 0 with
 * *out set, -1 with an exception. */
static int shortest_exact(float x, double *out)
{
    double d = (double)x;
    for (int p = fabsf(x) < FLT_MIN ? 1 : 6; p <= 9; p++) {
        /* CPython's allocation, freed with PyMem_Free: not one of ours to count */
        char *text = PyOS_double_to_string(d, 'e', p - 1, 0, NULL);
        if (text == NULL)
            return -1;
        double c = PyOS_string_to_double(text, NULL, NULL);
        if (c == -1.0 && PyErr_Occurred())
            goto error;
        if (!reads_back(c, x) && fabs(c) < fabs(d) && lopsided(x)) {
            c = next_decimal_up(text); /* as in shortest_fast */
            if (c == -1.0 && PyErr_Occurred())
                goto error;
        }
        PyMem_Free(text);
        if (reads_back(c, x)) {
            *out = c;
            return 0;
        }
        continue;
    error:
        PyMem_Free(text);
        return -1;
    }
    *out = d; /* unreachable, as above */
    return 0;
}

/* What JSON has no number for, as protobuf's JSON mapping spells it (new reference). */
static PyObject *non_finite(double v)
{
    return PyUnicode_InternFromString(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
}

static PyObject *float32_item(float x, int exact)
{
    if (!isfinite(x))
        return non_finite(x);
    double v = x; /* zeros keep their sign: float(str(np.float32(-0.0))) is -0.0 */
    if (x != 0.0f && (exact || !shortest_fast(x, &v)) && shortest_exact(x, &v) < 0)
        return NULL;
    return PyFloat_FromDouble(v);
}

static PyObject *float64_item(double x)
{
    return isfinite(x) ? PyFloat_FromDouble(x) : non_finite(x);
}

/* 'f' or 'd' for a buffer format of native float32 or float64, else 0 */
static char float_format(const Py_buffer *view)
{
    const char *format = view->format;
    const uint16_t probe = 1;
    uint8_t first;
    memcpy(&first, &probe, 1);
    const char native_order = first ? '<' : '>';
    if (format[0] == '@' || format[0] == '=' || format[0] == native_order)
        format++;
    if (format[0] == 'f' && format[1] == '\0' && view->itemsize == 4)
        return 'f';
    if (format[0] == 'd' && format[1] == '\0' && view->itemsize == 8)
        return 'd';
    return 0;
}

PyObject *cx_float_list(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "float_list(buffer, exact=False) takes 1 or 2 arguments");
        return NULL;
    }
    int exact = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if (exact < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    PyObject *list = NULL; /* owned; NULL on error */
    char kind = float_format(&view);
    if (kind == 0) {
        PyErr_Format(PyExc_TypeError, "float_list needs a buffer of native float32 or float64, "
                     "got format '%s'", view.format);
        goto done;
    }
    Py_ssize_t n = view.len / view.itemsize;
    list = PyList_New(n);
    if (list == NULL)
        goto done;
    const char *data = view.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item;
        if (kind == 'f') {
            float x;
            memcpy(&x, data + i * 4, 4); /* the buffer need not be aligned */
            item = float32_item(x, exact);
        } else {
            double x;
            memcpy(&x, data + i * 8, 8);
            item = float64_item(x);
        }
        if (item == NULL) {
            Py_CLEAR(list); /* the slots not yet set are NULL, which list_dealloc skips */
            goto done;
        }
        PyList_SET_ITEM(list, i, item); /* steals item */
    }
done:
    PyBuffer_Release(&view);
    return list;
}
