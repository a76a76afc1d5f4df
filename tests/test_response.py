"""What the client receives for each kind of value `predict` returns, and for predict errors."""
import json
import re

import numpy as np
import pytest

from conftest import LiveServer, write_project

PREDICTOR = """
import numpy as np
from cortex_runtime import Response


class Weird:
    pass


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        if "raise" in payload:
            raise ValueError(payload["raise"])
        return eval(payload["expr"])
"""

YAML = """
- name: ret
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""

PLEASE = ("please return an object that is JSON serializable (including its nested fields), "
          "a bytes object, a string, or a Response object")

CORS_ORIGIN = "Access-Control-Allow-Origin"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = write_project(tmp_path_factory.mktemp("response") / "project",
                         {"cortex.yaml": YAML, "predictor.py": PREDICTOR})
    srv = LiveServer(root, [], None, root.parent)
    try:
        srv.wait_listening()
        yield srv
    finally:
        srv.close()


def returning(server, expr, **kwargs):
    return server.post("/ret", json={"expr": expr}, **kwargs)


def media_type(r):
    return r.headers["Content-Type"].split(";")[0].strip()


def plain(value):
    """What the server must encode numpy values as: their .tolist() equivalents."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# -- bytes and str ------------------------------------------------------------------------

def test_bytes_are_200_octet_stream_exact(server):
    r = returning(server, "b'\\x00\\x01binary\\xff\\r\\n'")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.content == b"\x00\x01binary\xff\r\n"


def test_empty_bytes_are_200_empty_body(server):
    r = returning(server, "b''")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.content == b""


def test_str_is_200_text_plain_utf8(server):
    r = returning(server, "'h\\u00e9llo \\u4e2d \\U0001f600'")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.content == "h\u00e9llo \u4e2d \U0001f600".encode()


def test_str_that_looks_like_json_is_still_text(server):
    r = returning(server, "'{\"a\": 1}'")
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.content == b'{"a": 1}'


# -- JSON: byte-identical to json.dumps ----------------------------------------------------

JSON_EXPRS = [
    "{'a': {'b': [1, 2, {'c': None}]}, 't': True, 'f': False}",
    "['caf\\u00e9', '\\u4e2d\\u6587', '\\U0001f600', '\\u2028']",
    "['a\\x00b\\n\\t\"\\\\\\x7f\\x1f/']",
    "[0.1, 1e100, 1e-07, -0.0, 1.5, 123456789.123, 5e-324, 1.7976931348623157e308]",
    "[1e16, 1e22, 1.23e-18, 100.0, 2.5e-5]",
    "float('nan')",
    "[float('inf'), float('-inf'), float('nan')]",
    "2 ** 100",
    "[-(2 ** 70), 0, -1, 2 ** 64]",
    "(1, (2, 'x'), [])",
    "None",
    "True",
    "0",
    "1.0",
    "[]",
    "{}",
    "{1: 'a', 2.5: 'b', None: 'c', False: 'd'}",
    "{'deep': [[[[{'x': [[]]}]]]]}",
    "list(range(300))",
    "{'k' * 3: [1.0, 2.0], '': ''}",
]


@pytest.mark.parametrize("expr", JSON_EXPRS)
def test_other_values_are_200_json_byte_identical_to_json_dumps(server, expr):
    r = returning(server, expr)
    assert r.status_code == 200, r.text
    assert media_type(r) == "application/json"
    assert r.content == json.dumps(eval(expr)).encode()


NUMPY_EXPRS = [
    "np.array([[1, 2], [3, 4]])",
    "np.array([0.5, 0.1], dtype=np.float32)",
    "np.float32(0.1)",
    "np.int64(7)",
    "np.array(5)",
    "np.zeros((2, 0))",
    "np.array([True, False])",
    "np.array(['a', 'b\\u00e9'])",
    "np.array([np.nan, 1.5])",
    "{'i': np.int64(7), 'f': np.float64(0.1), 'b': np.bool_(True), 'u8': np.uint8(255),"
    " 'a': np.arange(3)}",
    "[np.float32(1.5), np.int32(-3), np.uint64(2 ** 63), (np.int16(2),)]",
    "{'nested': {'m': np.eye(2), 'l': [np.array([1.25]), np.float16(0.5)]}}",
]


@pytest.mark.parametrize("expr", NUMPY_EXPRS)
def test_numpy_values_anywhere_are_encoded_as_tolist(server, expr):
    r = returning(server, expr)
    assert r.status_code == 200, r.text
    assert media_type(r) == "application/json"
    assert r.content == json.dumps(plain(eval(expr, {"np": np}))).encode()


# -- Response -------------------------------------------------------------------------------

def test_response_passes_status_headers_and_media_type_through(server):
    r = returning(server, "Response(b'\\x89PNG', status=201, headers={'X-Custom': 'yes'},"
                          " media_type='image/png')")
    assert r.status_code == 201
    assert r.headers["X-Custom"] == "yes"
    assert r.headers["Content-Type"] == "image/png"
    assert r.content == b"\x89PNG"


def test_response_defaults_to_status_200(server):
    r = returning(server, "Response(b'plain bytes')")
    assert r.status_code == 200
    assert r.content == b"plain bytes"


def test_response_with_str_body_is_utf8_encoded(server):
    r = returning(server, "Response('h\\u00e9llo', status=418, media_type='text/html')")
    assert r.status_code == 418
    assert media_type(r) == "text/html"
    assert r.content == "h\u00e9llo".encode()


def test_response_with_error_status_is_sent_as_is(server):
    r = returning(server, "Response(b'nothing here', status=404, media_type='text/plain')")
    assert r.status_code == 404
    assert r.content == b"nothing here"


def test_response_still_carries_request_id_and_cors(server):
    r = returning(server, "Response(b'x', status=202, headers={'X-Other': '1'})",
                  headers={"X-Request-ID": "resp-rid-1"})
    assert r.status_code == 202
    assert r.headers["X-Request-ID"] == "resp-rid-1"
    assert r.headers[CORS_ORIGIN] == "*"
    assert r.headers["X-Other"] == "1"


@pytest.mark.parametrize("expr", ["b'x'", "'x'", "[1]"])
def test_every_return_kind_carries_cors_headers(server, expr):
    r = returning(server, expr)
    assert r.status_code == 200
    assert r.headers[CORS_ORIGIN] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"


# -- failures -------------------------------------------------------------------------------

def log_text(line):
    return f"{line.get('message', '')}\n{line.get('exc_info', '')}"


@pytest.mark.parametrize("expr, type_name", [
    ("Weird()", "Weird"),
    ("{'s': {1, 2}}", "set"),
    ("[1, object()]", "object"),
    ("{'fn': len}", "builtin_function_or_method"),
])
def test_non_serialisable_value_is_500_and_logged_with_type_name(server, expr, type_name):
    r = returning(server, expr)
    assert r.status_code == 500
    pattern = re.compile(rf"\b{re.escape(type_name)}\b")
    server.wait_for_log(lambda l: l.get("levelname") == "ERROR" and PLEASE in log_text(l)
                        and pattern.search(log_text(l).replace(PLEASE, "")))
    assert returning(server, "[1]").status_code == 200


def test_non_serialisable_error_does_not_leak_a_partial_body(server):
    r = returning(server, "{'ok': [1, 2, 3], 'bad': Weird()}")
    assert r.status_code == 500
    assert b'"ok"' not in r.content


def test_predict_raising_is_500_internal_server_error(server):
    r = server.post("/ret", json={"raise": "kaboom-1"})
    assert r.status_code == 500
    assert r.content == b"internal server error"


def test_predict_raising_logs_traceback_with_request_id(server):
    r = server.post("/ret", json={"raise": "kaboom-logged-2"},
                    headers={"X-Request-ID": "raise-rid-2"})
    assert r.status_code == 500
    assert r.headers["X-Request-ID"] == "raise-rid-2"
    line = server.wait_for_log(lambda l: "kaboom-logged-2" in l.get("exc_info", ""))
    assert list(line)[:5] == ["asctime", "levelname", "message", "process", "exc_info"]
    assert line["levelname"] == "ERROR"
    assert "Traceback" in line["exc_info"]
    assert "ValueError: kaboom-logged-2" in line["exc_info"]
    assert line["request_id"] == "raise-rid-2"


def test_server_keeps_serving_after_predict_raises(server):
    for i in range(3):
        assert server.post("/ret", json={"raise": f"again-{i}"}).status_code == 500
        r = returning(server, "{'fine': True}")
        assert r.status_code == 200
        assert r.content == b'{"fine": true}'
