"""Python halves of payload decoding that are not on the hot path: forms via the stdlib
parsers, and the headers mapping."""
from collections.abc import Mapping
from urllib.parse import parse_qsl


def decode_form(body: bytes, content_type: str) -> dict:
    if content_type.lower().lstrip().startswith("multipart/form-data"):
        return _decode_multipart(body, content_type)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"the body is not valid UTF-8: {e}") from None
    return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))


def _decode_multipart(body: bytes, content_type: str) -> dict:
    try:
        return _multipart_fields(body, content_type)
    except ValueError:
        raise
    except Exception as e:  # the stdlib email parser fails on some malformed headers (IndexError)
        raise ValueError(f"multipart body could not be parsed: {type(e).__name__}: {e}") from None


def _multipart_fields(body: bytes, content_type: str) -> dict:
    # imported here: the email package costs ~10 ms, and most APIs never see a form
    from email.parser import BytesParser
    from email.policy import HTTP
    from email.utils import collapse_rfc2231_value

    if "boundary=" not in content_type.lower():
        raise ValueError("multipart/form-data without a boundary")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ValueError("multipart body could not be parsed")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name is None:
            raise ValueError("a multipart part has no field name")
        name = collapse_rfc2231_value(name)  # name*=... can come back as (charset, lang, value)
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            fields[name] = data
        else:
            charset = part.get_content_charset() or "utf-8"
            try:
                fields[name] = data.decode(charset)
            except (LookupError, UnicodeDecodeError) as e:
                raise ValueError(f"field {name!r}: {e}") from None
    return fields


class Headers(Mapping):
    """Request headers; lookups ignore case, repeated headers are joined with ", "."""

    __slots__ = ("_items",)

    def __init__(self, pairs):
        items = {}
        for name, value in pairs:
            key = name.lower()
            if key in items:
                items[key] = (items[key][0], items[key][1] + ", " + value)
            else:
                items[key] = (name, value)
        self._items = items

    def __getitem__(self, name):
        return self._items[name.lower()][1]

    def __contains__(self, name):
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self):
        return (original for original, _ in self._items.values())

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return f"Headers({dict(self.items())!r})"
