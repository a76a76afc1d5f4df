/* libFuzzer harness for csrc/content_type.c (pure C).
 *
 * Input: byte 0 chooses the output buffer size (0..63) for cx_content_type_param; byte 1
 * chooses the parameter name; the rest, NUL-terminated, is the Content-Type value.  The
 * output buffer is an exact-size heap block, so any write past outlen is an ASan report.
 * Results must be -1, 0 or 1, and a found value must be a NUL-terminated string that fits.
 * Built by fuzz/run.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "content_type.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {"charset", "boundary", "c", "", "CHARSET", "name"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t outlen = data[0] % 64;
    const char *name = names[data[1] % (sizeof names / sizeof names[0])];
    size_t n = size - 2;
    char *ct = malloc(n + 1);
    if (ct == NULL)
        return 0;
    memcpy(ct, data + 2, n);
    ct[n] = '\0';

    cx_ct_kind kind = cx_content_type_kind(ct);
    if ((int)kind < CX_CT_BYTES || kind > CX_CT_MULTIPART)
        abort();
    if (cx_content_type_kind(NULL) != CX_CT_BYTES)
        abort();

    char *out = malloc(outlen ? outlen : 1);
    if (out == NULL) {
        free(ct);
        return 0;
    }
    int rc = cx_content_type_param(ct, name, out, outlen);
    if (rc < -1 || rc > 1)
        abort();
    if (rc == 1) {
        if (outlen == 0 || memchr(out, '\0', outlen) == NULL)
            abort();
        if (strlen(out) > n)
            abort();
    }
    if (cx_content_type_param(NULL, name, out, outlen) != 0)
        abort();
    free(out);
    free(ct);
    return 0;
}
