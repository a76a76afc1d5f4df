"""The `payload` argument by Content-Type, and the 400s for bodies that do not decode."""
import json
import re

import pytest

from conftest import SHARED_TESTDATA, LiveServer, write_project

SUITE = SHARED_TESTDATA / "json-test-suite" / "test_parsing"
assert SUITE.is_dir(), f"the JSON test suite is missing at {SUITE}"
Y_FILES = sorted(SUITE.glob("y_*.json"))
N_FILES = sorted(SUITE.glob("n_*.json"))
I_FILES = sorted(SUITE.glob("i_*.json"))

PREDICTOR = """
from collections.abc import Mapping


def enc(x):
    if isinstance(x, bytes):
        return {"__bytes__": x.hex()}
    if isinstance(x, Mapping):
        return {k: enc(v) for k, v in x.items()}
    if isinstance(x, list):
        return [enc(v) for v in x]
    return x


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"type": type(payload).__name__, "mapping": isinstance(payload, Mapping),
                "v": enc(payload)}
"""

RAW_PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"v": payload}
"""

NO_PAYLOAD_PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, request_id):
        return "no payload here"
"""

YAML = """
- name: typed
  kind: RealtimeAPI
  predictor:
    type: python
    path: typed.py
- name: raw
  kind: RealtimeAPI
  predictor:
    type: python
    path: raw.py
- name: nopayload
  kind: RealtimeAPI
  predictor:
    type: python
    path: nopayload.py
"""

POSITION = re.compile(r"(char|byte) \d")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = write_project(tmp_path_factory.mktemp("payload") / "project", {
        "cortex.yaml": YAML, "typed.py": PREDICTOR, "raw.py": RAW_PREDICTOR,
        "nopayload.py": NO_PAYLOAD_PREDICTOR})
    srv = LiveServer(root, [], None, root.parent)
    try:
        srv.wait_listening()
        yield srv
    finally:
        srv.close()


def post(server, path, body, content_type=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    return server.post(path, data=body, headers=headers, **kwargs)


def typed(server, body, content_type=None):
    r = post(server, "/typed", body, content_type)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def assert_json_error(r):
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.content.startswith(b'{"error":"'), r.content
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    return body["error"]


# -- application/json -------------------------------------------------------------

def test_json_object_payload_is_a_dict(server):
    got = typed(server, b'{"key": "value", "n": [1, 2.5, null]}', "application/json")
    assert got == {"type": "dict", "mapping": True,
                   "v": {"key": "value", "n": [1, 2.5, None]}}


@pytest.mark.parametrize("body, value, type_name", [
    (b"42", 42, "int"),
    (b"-1.5", -1.5, "float"),
    (b"1.0", 1.0, "float"),
    (b"1e2", 100.0, "float"),
    (b"123456789012345678901234567890", 123456789012345678901234567890, "int"),
    (b'"just a string"', "just a string", "str"),
    (b"null", None, "NoneType"),
    (b"true", True, "bool"),
    (b"[1, \"two\", {}]", [1, "two", {}], "list"),
    (b' \n\t{} \r\n', {}, "dict"),
])
def test_json_payload_of_any_type_is_decoded(server, body, value, type_name):
    got = typed(server, body, "application/json")
    assert got["type"] == type_name
    assert got["v"] == value


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8",
    "Application/JSON",
    "APPLICATION/JSON;charset=UTF-8",
    "application/json; foo=bar",
])
def test_json_content_type_matches_case_insensitively_with_parameters(server, content_type):
    got = typed(server, b'{"a": 1}', content_type)
    assert got["type"] == "dict" and got["v"] == {"a": 1}


def test_json_escapes_decode_like_python(server):
    body = rb'["caf\u00e9", "\ud83d\ude00", "a\nb", "\/", "\"q\""]'
    got = typed(server, body, "application/json")
    assert got["v"] == json.loads(body)


def test_malformed_json_is_400_with_position(server):
    r = post(server, "/typed", b'{"a": 1, "b": tru}', "application/json")
    error = assert_json_error(r)
    assert error.startswith("invalid JSON: "), error
    assert POSITION.search(error), error


@pytest.mark.parametrize("body", [b"", b"{", b'{"a" 1}', b"[1,]", b"[1] x", b"'single'",
                                  b"{'a': 1}", b"01", b"tru"])
def test_invalid_json_documents_are_400_invalid_json(server, body):
    error = assert_json_error(post(server, "/typed", body, "application/json"))
    assert error.startswith("invalid JSON: "), error


@pytest.mark.parametrize("body", [
    b'{"a": "\xff"}',
    b'["\xc3\x28"]',
    b'"\xed\xa0\x80"',          # encoded surrogate
    b'["\xc0\xaf"]',            # overlong
    b'\xff{}',
    b'{"k\xfe": 1}',
])
def test_json_body_that_is_not_utf8_is_400_mentioning_utf8(server, body):
    error = assert_json_error(post(server, "/typed", body, "application/json"))
    assert "utf-8" in error.lower(), error


@pytest.mark.parametrize("body", [b"NaN", b"[NaN]", b"Infinity", b"[-Infinity]",
                                  b'{"a": Infinity}'])
def test_nan_and_infinity_literals_are_400(server, body):
    assert_json_error(post(server, "/typed", body, "application/json"))


def test_100000_nested_arrays_is_400_and_server_keeps_serving(server):
    assert_json_error(post(server, "/typed", b"[" * 100000, "application/json"))
    assert_json_error(post(server, "/typed", b"[" * 100000 + b"]" * 100000,
                           "application/json"))
    got = typed(server, b'{"still": "alive"}', "application/json")
    assert got["v"] == {"still": "alive"}


def test_512_nested_arrays_are_accepted(server):
    body = b"[" * 512 + b"]" * 512
    r = post(server, "/raw", body, "application/json")
    assert r.status_code == 200, r.text
    assert json.loads(r.content)["v"] == json.loads(body)


def test_malformed_json_to_predictor_without_payload_is_200(server):
    r = post(server, "/nopayload", b'{"broken": ', "application/json")
    assert r.status_code == 200
    assert r.text == "no payload here"


def test_undecoded_body_keeps_keep_alive_connection_in_step(server):
    # same Session = same keep-alive connection
    for _ in range(3):
        r = post(server, "/nopayload", b'{"x": "' + b"y" * 5000 + b'"}', "application/json")
        assert r.status_code == 200 and r.text == "no payload here"
        got = typed(server, b'[1]', "application/json")
        assert got["v"] == [1]


def test_bad_json_does_not_break_keep_alive_connection(server):
    for _ in range(3):
        assert_json_error(post(server, "/typed", b'{"x": ', "application/json"))
        assert typed(server, b'{"ok": true}', "application/json")["v"] == {"ok": True}


# -- text/plain ---------------------------------------------------------------------

def test_text_plain_is_str_decoded_as_utf8_by_default(server):
    got = typed(server, "h\u00e9llo w\u00f6rld \u2713".encode(), "text/plain")
    assert got == {"type": "str", "mapping": False, "v": "h\u00e9llo w\u00f6rld \u2713"}


@pytest.mark.parametrize("content_type, body, text", [
    ("text/plain; charset=latin-1", b"\xe9", "\u00e9"),
    ("text/plain; charset=ISO-8859-1", b"caf\xe9", "caf\u00e9"),
    ("TEXT/PLAIN; CHARSET=UTF-8", "\u00e9".encode(), "\u00e9"),
    ("text/plain; charset=utf-16-le", "hi".encode("utf-16-le"), "hi"),
    ("text/plain; charset=us-ascii", b"plain", "plain"),
    ("text/plain;charset=utf-8", b"", ""),
])
def test_text_plain_is_decoded_with_its_charset(server, content_type, body, text):
    got = typed(server, body, content_type)
    assert got["type"] == "str"
    assert got["v"] == text


@pytest.mark.parametrize("content_type, body, codec", [
    ("text/plain", b"\xff\xfe bad", "utf-8"),
    ("text/plain; charset=utf-8", b"ok \xc3", "utf-8"),
    ("text/plain; charset=ascii", b"caf\xe9", "ascii"),
])
def test_undecodable_text_is_400_naming_the_codec(server, content_type, body, codec):
    r = post(server, "/typed", body, content_type)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("text/plain")
    assert codec in r.text.lower(), r.text


def test_unknown_charset_is_400_naming_it(server):
    r = post(server, "/typed", b"hello", "text/plain; charset=no-such-codec-x")
    assert r.status_code == 400
    assert "no-such-codec-x" in r.text, r.text


# -- forms --------------------------------------------------------------------------

def test_urlencoded_form_is_mapping_of_field_to_str(server):
    got = typed(server, b"a=1&b=x+y&c=caf%C3%A9&d=%26%3D",
                "application/x-www-form-urlencoded")
    assert got["mapping"] is True
    assert got["v"] == {"a": "1", "b": "x y", "c": "caf\u00e9", "d": "&="}


def test_urlencoded_content_type_is_case_insensitive(server):
    got = typed(server, b"k=v", "Application/X-WWW-Form-Urlencoded; charset=utf-8")
    assert got["mapping"] is True and got["v"] == {"k": "v"}


def test_multipart_text_fields_are_str_and_files_are_bytes(server):
    r = server.post("/typed", data={"field": "value \u00e9"},
                    files={"upload": ("blob.bin", b"\x00\xffdata", "application/octet-stream")})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["mapping"] is True
    assert got["v"] == {"field": "value \u00e9", "upload": {"__bytes__": "00ff64617461"}}


# -- everything else: bytes ------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["application/octet-stream", "image/png",
                                          "application/x-custom", "text/csv"])
def test_other_content_types_give_raw_bytes(server, content_type):
    body = b"\x89PNG\r\n\x1a\n\x00\xff binary"
    got = typed(server, body, content_type)
    assert got == {"type": "bytes", "mapping": False, "v": {"__bytes__": body.hex()}}


def test_missing_content_type_gives_raw_bytes(server):
    body = b'{"looks": "like json"}'
    got = typed(server, body)
    assert got["type"] == "bytes"
    assert got["v"] == {"__bytes__": body.hex()}


def test_empty_body_without_content_type_is_empty_bytes(server):
    r = server.post("/typed")
    assert r.status_code == 200
    assert r.json() == {"type": "bytes", "mapping": False, "v": {"__bytes__": ""}}


# -- JSON test suite ---------------------------------------------------------------------

@pytest.mark.parametrize("path", Y_FILES, ids=lambda p: p.name)
def test_json_suite_accepted_file_reaches_predictor_as_json_loads_gives(server, path):
    body = path.read_bytes()
    r = post(server, "/raw", body, "application/json")
    assert r.status_code == 200, r.text
    assert json.loads(r.content)["v"] == json.loads(body)


@pytest.mark.parametrize("path", N_FILES, ids=lambda p: p.name)
def test_json_suite_rejected_file_is_400(server, path):
    assert_json_error(post(server, "/raw", path.read_bytes(), "application/json"))


@pytest.mark.parametrize("path", I_FILES, ids=lambda p: p.name)
def test_json_suite_implementation_defined_file_is_200_or_400_never_5xx(server, path):
    r = post(server, "/raw", path.read_bytes(), "application/json")
    assert r.status_code in (200, 400), (r.status_code, r.text)
    if r.status_code == 400:
        assert_json_error(r)
    assert typed(server, b"[true]", "application/json")["v"] == [True]
