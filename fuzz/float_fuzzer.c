/* libFuzzer harness for csrc/float_format.c and csrc/float_parse.c against the C library,
 * no Python involved.  Each input gives:
 *   - a double (its first 8 bytes as bits): cx_float_repr's text must read back (strtod)
 *     as exactly that double, and its digits must be those of the shortest "%.*e" that
 *     reads back (the nearest shortest decimal, which is what repr writes);
 *   - a decimal w 10^q (the next 8 bytes as w, reduced below 10^19, then 2 bytes as q in
 *     [-400, 400]): when cx_decimal_to_double decides it, it must equal strtod("we q").
 * Built and run by fuzz/run.sh (target float). */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "float_format.h"
#include "float_parse.h"
#include "pow10.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cx_pow10_init();
    return 0;
}

/* significant digits (no leading zeros, no trailing zeros) and the decimal exponent of
 * the first of them, from a text like "-0.00123", "1.5e-07" or "%.*e" output */
static void decimal_of(const char *text, char *digits, int *exp10)
{
    const char *p = text;
    if (*p == '-')
        p++;
    int n = 0, point = -1, seen = 0, lead = 0;
    for (; *p && *p != 'e'; p++) {
        if (*p == '.') {
            point = seen;
            continue;
        }
        if (n == 0 && *p == '0') {
            seen++;
            lead++;
            continue;
        }
        digits[n++] = *p;
        seen++;
    }
    if (point < 0)
        point = seen;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    digits[n] = '\0';
    int e = *p == 'e' ? atoi(p + 1) : 0;
    *exp10 = point - lead - 1 + e;
}

static void check_format(double v)
{
    char text[CX_FLOAT_REPR_MAX + 1];
    size_t n = cx_float_repr(v, text);
    if (n == 0)
        return; /* the smallest subnormals are left to Python by design */
    text[n] = '\0';
    double back = strtod(text, NULL);
    if (memcmp(&back, &v, sizeof v) != 0) {
        fprintf(stderr, "%.17g formatted as '%s', which reads back as %.17g\n", v, text, back);
        abort();
    }
    /* the shortest length p: some p-digit decimal next to v's correctly rounded p digits
     * (that one or a neighbour in its last digit) reads back as v */
    char shortest[48], ours_digits[40], ref_digits[40];
    int ours_exp, ref_exp, found = 0, nearest = 0;
    decimal_of(text, ours_digits, &ours_exp);
    for (int p = 1; p <= 17 && !found; p++) {
        snprintf(shortest, sizeof shortest, "%.*e", p - 1, fabs(v));
        decimal_of(shortest, ref_digits, &ref_exp);
        char *e = strchr(shortest, 'e');
        long long m = 0;
        for (const char *c = shortest; c < e; c++)
            if (*c != '.')
                m = m * 10 + (*c - '0');
        int x = atoi(e + 1) - (p - 1);
        for (long long c = m - 1; c <= m + 1; c++) {
            char cand[48];
            snprintf(cand, sizeof cand, "%llde%d", c, x);
            if (c > 0 && strtod(cand, NULL) == fabs(v)) {
                found = p;
                nearest |= c == m;
            }
        }
    }
    int ours_len = (int)strlen(ours_digits);
    if (v != 0.0) {
        /* ours has exactly that length (fewer zeros at its end), and is the correctly
         * rounded one whenever that one reads back: repr's nearest shortest */
        char trimmed[40];
        strcpy(trimmed, ref_digits);
        if (ours_len != found || (nearest && (strcmp(ours_digits, trimmed) != 0 || ours_exp != ref_exp))) {
            fprintf(stderr, "%.17g formatted as '%s'; shortest length %d, nearest '%s'\n", v, text, found,
                    shortest);
            abort();
        }
    }
}

static void check_parse(uint64_t w, int q)
{
    double ours;
    if (!cx_decimal_to_double(w, q, &ours))
        return;
    char text[48];
    snprintf(text, sizeof text, "%" PRIu64 "e%d", w, q);
    double ref = strtod(text, NULL);
    if (memcmp(&ours, &ref, sizeof ref) != 0) {
        fprintf(stderr, "%s parsed as %.17g, strtod gives %.17g\n", text, ours, ref);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    double v;
    memcpy(&v, data, 8);
    if (isfinite(v))
        check_format(v);
    if (size >= 18) {
        uint64_t w;
        memcpy(&w, data + 8, 8);
        w %= 10000000000000000000ULL;
        int q = (int)(((unsigned)data[16] | (unsigned)data[17] << 8) % 801) - 400;
        check_parse(w, q);
    }
    return 0;
}
