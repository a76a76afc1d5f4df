"""Routes, methods, redirects, CORS, X-Request-ID, /healthz and the body-size limit,
over real HTTP."""
import json
import re
import socket
import uuid

import pytest
import requests

from conftest import LiveServer, write_project

GET_MESSAGE = (b'{"message":"make a prediction by sending a post request to this endpoint '
               b'with a json payload"}')

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Allow-Credentials": "true",
}

ECHO_PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        self.name = config.get("name", "echo")

    def predict(self, request_id, query_params):
        return {"api": self.name, "request_id": request_id, "query_params": query_params}
"""

SINK_PREDICTOR = """
from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        logger.info("predict called", extra={"n": len(payload)})
        return {"n": len(payload)}
"""

SINGLE_YAML = """
- name: echo
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""

MULTI_YAML = """
- name: alpha
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    config:
      name: alpha
- name: beta
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    config:
      name: beta
  networking:
    endpoint: /custom/path
"""


def start(tmp_path_factory, label, files, *args):
    root = write_project(tmp_path_factory.mktemp(label) / "project", files)
    server = LiveServer(root, args, None, root.parent)
    try:
        server.wait_listening()
    except BaseException:
        server.close()
        raise
    return server


def is_uuid4(value) -> bool:
    try:
        return uuid.UUID(value).version == 4
    except (TypeError, ValueError):
        return False


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    server = start(tmp_path_factory, "single",
                   {"cortex.yaml": SINGLE_YAML, "predictor.py": ECHO_PREDICTOR})
    yield server
    server.close()


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    server = start(tmp_path_factory, "multi",
                   {"cortex.yaml": MULTI_YAML, "predictor.py": ECHO_PREDICTOR})
    yield server
    server.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    yaml = SINGLE_YAML.replace("name: echo", "name: sink")
    server = start(tmp_path_factory, "limited",
                   {"cortex.yaml": yaml, "predictor.py": SINK_PREDICTOR},
                   "--max-body-size", "100")
    yield server
    server.close()


# -- one API: endpoint, /predict and / -----------------------------------------

@pytest.mark.parametrize("path", ["/echo", "/predict", "/"])
def test_post_to_endpoint_predict_and_root_calls_predict_with_one_api(single, path):
    r = single.post(path, data=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.json()["api"] == "echo"


@pytest.mark.parametrize("path", ["/echo", "/predict", "/"])
def test_get_returns_make_a_prediction_message(single, path):
    r = single.get(path)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.content == GET_MESSAGE


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/echo", "/predict"])
def test_other_methods_are_405_method_not_allowed(single, method, path):
    r = single.request(method, path, data=b"x")
    assert r.status_code == 405
    assert r.text == "Method Not Allowed"
    assert r.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("path", ["/nope", "/echoo", "/predictx", "/predict/x", "/echo/extra",
                                  "/healthzz"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_path_is_404_not_found(single, method, path):
    r = single.request(method, path, data=b"{}")
    assert r.status_code == 404
    assert r.text == "Not Found"
    assert r.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("path, location", [
    ("/predict/", "/predict"),
    ("/predict/?a=1&b=two", "/predict?a=1&b=two"),
    ("/echo/", "/echo"),
    ("/echo/?x=%20y", "/echo?x=%20y"),
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_trailing_slash_redirects_307_keeping_query(single, method, path, location):
    r = single.request(method, path, data=b"{}")
    assert r.status_code == 307
    assert r.headers["Location"] == location


@pytest.mark.parametrize("path", ["/echo", "/predict", "/"])
def test_options_is_204_with_cors_headers(single, path):
    r = single.request("OPTIONS", path)
    assert r.status_code == 204
    assert r.content == b""
    for name, value in CORS.items():
        assert r.headers.get(name) == value, name


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_2xx_responses_carry_cors_headers(single, method):
    r = single.request(method, "/echo", data=b"{}")
    assert r.status_code == 200
    for name, value in CORS.items():
        assert r.headers.get(name) == value, name


def test_healthz_is_200_ok_once_listening(single):
    r = single.get("/healthz")
    assert r.status_code == 200
    assert r.text == "ok"


# -- X-Request-ID ---------------------------------------------------------------

@pytest.mark.parametrize("request_id", [
    "abc-123",
    "with space and ~!@#$%^&*()_+{}|:<>?`",
    "x" * 128,
    "1",
])
def test_printable_request_id_is_echoed_and_passed_to_predict(single, request_id):
    r = single.post("/echo", headers={"X-Request-ID": request_id})
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == request_id
    assert r.json()["request_id"] == request_id


@pytest.mark.parametrize("request_id", ["x" * 129, "", "caf\xe9"])
def test_unusable_request_id_is_replaced_by_fresh_uuid4(single, request_id):
    r = single.post("/echo", headers={"X-Request-ID": request_id})
    assert r.status_code == 200
    got = r.headers["X-Request-ID"]
    assert is_uuid4(got), got
    assert r.json()["request_id"] == got


def test_missing_request_id_gets_fresh_uuid4_per_request_same_as_predict_argument(single):
    first = single.post("/echo")
    second = single.post("/echo")
    assert is_uuid4(first.headers["X-Request-ID"])
    assert is_uuid4(second.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    assert first.json()["request_id"] == first.headers["X-Request-ID"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nope", 404),
    ("PUT", "/echo", 405),
    ("GET", "/predict/", 307),
    ("OPTIONS", "/echo", 204),
    ("GET", "/healthz", 200),
])
def test_every_response_carries_request_id(single, method, path, status):
    r = single.request(method, path)
    assert r.status_code == status
    assert is_uuid4(r.headers.get("X-Request-ID")), r.headers
    r = single.request(method, path, headers={"X-Request-ID": "mine-42"})
    assert r.status_code == status
    assert r.headers.get("X-Request-ID") == "mine-42"


# -- several APIs on one port ---------------------------------------------------

def test_each_api_is_served_at_its_endpoint(multi):
    assert multi.post("/alpha").json()["api"] == "alpha"
    assert multi.post("/custom/path").json()["api"] == "beta"


def test_custom_endpoint_replaces_the_default_one(multi):
    r = multi.post("/beta")
    assert r.status_code == 404
    assert r.text == "Not Found"


def test_get_on_custom_endpoint_returns_message(multi):
    r = multi.get("/custom/path")
    assert r.status_code == 200
    assert r.content == GET_MESSAGE


def test_custom_endpoint_trailing_slash_redirects_307(multi):
    r = multi.post("/custom/path/?q=1")
    assert r.status_code == 307
    assert r.headers["Location"] == "/custom/path?q=1"


@pytest.mark.parametrize("host, api", [
    ("api-alpha", "alpha"),
    ("api-beta", "beta"),
    ("api-alpha:8888", "alpha"),
    ("api-beta:8888", "beta"),
])
@pytest.mark.parametrize("path", ["/predict", "/"])
def test_predict_and_root_route_by_host_header_with_several_apis(multi, host, api, path):
    r = multi.post(path, headers={"Host": host})
    assert r.status_code == 200
    assert r.json()["api"] == api


@pytest.mark.parametrize("host", [None, "api-gamma", "alpha", "api-", "localhost:8888"])
@pytest.mark.parametrize("path", ["/predict", "/"])
def test_predict_and_root_are_404_without_matching_host_with_several_apis(multi, host, path):
    headers = {"Host": host} if host else {}
    r = multi.post(path, headers=headers)
    assert r.status_code == 404
    assert r.text == "Not Found"


def test_query_params_reach_the_right_api(multi):
    r = multi.post("/predict?k=v", headers={"Host": "api-beta"})
    assert r.json() == {"api": "beta", "request_id": r.headers["X-Request-ID"],
                        "query_params": {"k": "v"}}


# -- --max-body-size --------------------------------------------------------------

def test_body_over_max_body_size_is_413_json_error(limited):
    r = requests.post(limited.url("/sink"), data=b"x" * 101, timeout=30,
                      headers={"Content-Type": "application/octet-stream",
                               "X-Request-ID": "too-big-1"})
    assert r.status_code == 413
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.content.startswith(b'{"error":"') and r.content.endswith(b'"}'), r.content
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert r.headers["X-Request-ID"] == "too-big-1"


def test_body_of_exactly_max_body_size_is_accepted(limited):
    r = requests.post(limited.url("/sink"), data=b"y" * 100, timeout=30,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json() == {"n": 100}


def test_oversize_body_never_reaches_predictor_and_next_request_works(limited):
    r = requests.post(limited.url("/sink"), data=b"z" * 150, timeout=30,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413
    # a new connection afterwards is served normally
    r = requests.post(limited.url("/sink"), data=b"w" * 99, timeout=30,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json() == {"n": 99}
    limited.wait_for_log(lambda l: l.get("message") == "predict called" and l.get("n") == 99)
    assert not [l for l in limited.log_lines() if l.get("n") == 150]


def test_oversize_json_body_is_413_not_400(limited):
    body = json.dumps({"k": "v" * 200}).encode()
    r = requests.post(limited.url("/sink"), data=body, timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "error" in r.json()


def test_oversize_request_gets_an_access_line_with_413(limited):
    r = requests.post(limited.url("/sink"), data=b"q" * 130, timeout=30,
                      headers={"Content-Type": "application/octet-stream",
                               "X-Request-ID": "too-big-access"})
    assert r.status_code == 413
    line = limited.wait_for_log(lambda l: l.get("request_id") == "too-big-access"
                                and "status_code" in l)
    assert line["status_code"].startswith("413 ")
    assert line["path"] == "/sink"


def test_oversize_content_length_is_413_before_the_body_is_sent(limited):
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream"
                     b"\r\nContent-Length: 10000000\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, f"closed without a response: {head!r}"
            head += chunk
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert re.search(rb"(?im)^x-request-id: \S", head), head


def test_chunked_body_over_the_limit_is_413(limited):
    def chunks(total):
        for _ in range(total // 10):
            yield b"c" * 10

    r = requests.post(limited.url("/sink"), data=chunks(150), timeout=30,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413
    r = requests.post(limited.url("/sink"), data=chunks(50), timeout=30,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json() == {"n": 50}


# -- resilience: bad clients do not disturb the next request ---------------------------------

def test_client_hanging_up_mid_body_does_not_disturb_the_next_request(single):
    with socket.create_connection(("127.0.0.1", single.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
    r = single.post("/echo", headers={"X-Request-ID": "after-hangup"})
    assert r.status_code == 200
    assert r.json()["request_id"] == "after-hangup"


def test_garbage_bytes_do_not_disturb_the_next_request(single):
    with socket.create_connection(("127.0.0.1", single.port), timeout=10) as sock:
        sock.sendall(b"\x00\xff\xfe garbage \r\n\r\n\x16\x03\x01 not http\r\n\r\n")
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except (socket.timeout, ConnectionResetError):
            pass
    r = single.post("/echo")
    assert r.status_code == 200
    assert r.json()["api"] == "echo"


def test_control_character_in_request_id_gets_a_fresh_uuid4(single):
    with socket.create_connection(("127.0.0.1", single.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Request-ID: ab\x01cd\r\n"
                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        data = b""
        sock.settimeout(10)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    match = re.search(rb"(?im)^x-request-id: ([^\r\n]*)", head)
    assert match, data
    assert is_uuid4(match.group(1).decode()), match.group(1)
