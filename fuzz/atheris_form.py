"""atheris harness: cortex_runtime._payload.decode_form, the form decoder.

    fuzz/run.sh SECONDS form          (or: python fuzz/atheris_form.py CORPUS -max_total_time=N)

Property: decode_form(body, content_type) returns a dict of str -> str | bytes, or raises
ValueError (the server turns that into a 400); any other exception, or any other result,
is a finding.

Input layout: byte 0 picks the content type -- 0-2: multipart/form-data with a boundary
taken from the input, 3: application/x-www-form-urlencoded, 4-5: free text from the
input; then a 1-byte length and that many bytes for the boundary / the free content
type (decoded as latin-1 or, with byte 0 bit 7, as UTF-8 with replacement); the rest is
the body.  For multipart, "{B}" in the body is replaced by the boundary so the mutator
only has to find short tokens.
"""
import sys

import atheris

with atheris.instrument_imports(include=["cortex_runtime._payload", "email"]):
    import email.parser  # noqa: F401  (decode_form imports these lazily: instrument them)
    import email.policy  # noqa: F401
    import email.message  # noqa: F401
    import email._header_value_parser  # noqa: F401
    from cortex_runtime._payload import decode_form


def split(data: bytes):
    selector = data[0]
    n = data[1] if len(data) > 1 else 0
    param = data[2:2 + n]
    body = data[2 + n:]
    text = param.decode("utf-8", "replace") if selector & 0x80 else param.decode("latin-1")
    kind = (selector & 0x7F) % 6
    if kind <= 2:
        quoted = f'"{text}"' if kind == 1 else text
        prefix = ["multipart/form-data", "Multipart/Form-Data ", " multipart/form-data"][kind]
        content_type = f"{prefix}; boundary={quoted}"
        body = body.replace(b"{B}", text.encode("latin-1", "replace"))
    elif kind == 3:
        content_type = "application/x-www-form-urlencoded"
    else:
        content_type = text
    return body, content_type


def check(body: bytes, content_type: str):
    try:
        result = decode_form(body, content_type)
    except ValueError:
        return None
    if not isinstance(result, dict):
        raise AssertionError(f"decode_form returned {type(result).__name__}")
    for key, value in result.items():
        if not isinstance(key, str):
            raise AssertionError(f"key {key!r} is {type(key).__name__}, not str")
        if not isinstance(value, (str, bytes)):
            raise AssertionError(f"value of {key!r} is {type(value).__name__}")
    return result


def TestOneInput(data: bytes):
    if not data:
        return
    check(*split(data))


def main():
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
