"""cortex_runtime.Response: what predict() returns to set status, headers or media type."""
from ._core import json_dumps

class Response:
    """Response(body, status=200, headers=None, media_type=None).

    bytes bodies are sent as they are, str bodies as UTF-8, anything else as JSON; the
    media type defaults to what the same value returned bare would get.
    """

    def __init__(self, body=b"", status=200, headers=None, media_type=None):
        if isinstance(body, (bytes, bytearray, memoryview)):
            self.body = bytes(body)
            default_type = "application/octet-stream"
        elif isinstance(body, str):
            self.body = body.encode("utf-8")
            default_type = "text/plain; charset=utf-8"
        else:
            self.body = json_dumps(body).encode("utf-8")
            default_type = "application/json"
        self.status_code = int(status)
        self.headers = dict(headers or {})
        self.media_type = media_type if media_type is not None else default_type

    def __repr__(self):
        return f"Response(status={self.status_code}, media_type={self.media_type!r}, {len(self.body)} bytes)"


def response_parts(obj):
    """(status, body, media_type or None, [(name, value)]) for Response-like objects, else None."""
    if isinstance(obj, Response):
        headers = [(str(k), str(v)) for k, v in obj.headers.items()]
        has_type = any(k.lower() == "content-type" for k, _ in headers)
        return obj.status_code, obj.body, None if has_type else obj.media_type, headers
    cls = type(obj)
    if cls.__module__.startswith("starlette") and hasattr(obj, "raw_headers") and hasattr(obj, "body"):
        # starlette already rendered its headers, Content-Type included
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in obj.raw_headers
                   if k.lower() != b"content-length"]
        return int(obj.status_code), bytes(obj.body), None, headers
    return None
