/* Content-Type classification and parameter lookup.  Pure C. */
#ifndef CX_CONTENT_TYPE_H
#define CX_CONTENT_TYPE_H

#include <stddef.h>

typedef enum {
    CX_CT_BYTES = 0, /* anything else, or no Content-Type */
    CX_CT_JSON,
    CX_CT_TEXT,
    CX_CT_FORM_URLENCODED,
    CX_CT_MULTIPART,
} cx_ct_kind;

/* Cortex matched by case-insensitive prefix, so "application/jsonx" counts as JSON too. */
cx_ct_kind cx_content_type_kind(const char *content_type);

/* Copies parameter `name` (e.g. "charset") of a Content-Type value into out, unquoted.
 * Returns 1 when found and it fits, 0 when absent, -1 when longer than outlen - 1. */
int cx_content_type_param(const char *content_type, const char *name, char *out, size_t outlen);

#endif
