#include "content_type.h"

#include <string.h>
#include <strings.h>

static int has_prefix(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

cx_ct_kind cx_content_type_kind(const char *ct)
{
    if (ct == NULL)
        return CX_CT_BYTES;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (has_prefix(ct, "application/json"))
        return CX_CT_JSON;
    if (has_prefix(ct, "text/plain"))
        return CX_CT_TEXT;
    if (has_prefix(ct, "application/x-www-form-urlencoded"))
        return CX_CT_FORM_URLENCODED;
    if (has_prefix(ct, "multipart/form-data"))
        return CX_CT_MULTIPART;
    return CX_CT_BYTES;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

int cx_content_type_param(const char *ct, const char *name, char *out, size_t outlen)
{
    if (ct == NULL || outlen == 0)
        return 0;
    size_t name_len = strlen(name);
    const char *p = strchr(ct, ';');
    while (p != NULL) {
        p++;
        while (is_space(*p))
            p++;
        if (strncasecmp(p, name, name_len) == 0) {
            const char *v = p + name_len;
            while (is_space(*v))
                v++;
            if (*v == '=') {
                v++;
                while (is_space(*v))
                    v++;
                size_t n = 0;
                if (*v == '"') {
                    v++;
                    while (v[n] && v[n] != '"')
                        n++;
                } else {
                    while (v[n] && v[n] != ';' && !is_space(v[n]))
                        n++;
                }
                if (n >= outlen)
                    return -1;
                memcpy(out, v, n);
                out[n] = '\0';
                return 1;
            }
        }
        /* skip a quoted value so a ';' inside quotes does not start a parameter */
        int quoted = 0;
        while (*p && (quoted || *p != ';')) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        p = *p ? p : NULL;
    }
    return 0;
}
