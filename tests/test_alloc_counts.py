"""Every allocation of the C core is freed: in a build with the live-allocation counters
(CORTEX_DEBUG_ALLOC=1 python setup.py build_ext; .ci/sanitize builds so) a server started in
this process, sent a few hundred requests of every kind and stopped leaves each count where
it was before."""
import socket

import pytest
import requests

from cortex_runtime import _core
from cortex_runtime.testing import launch
from conftest import write_project

pytestmark = pytest.mark.skipif(not hasattr(_core, "_alloc_counts"),
                                reason="the C core was built without CORTEX_DEBUG_ALLOC=1")

PREDICTOR = """
from cortex_runtime import Response
class PythonPredictor:
    def __init__(self, config):
        pass
    def predict(self, payload, query_params, headers):
        kind = query_params.get("kind")
        if kind == "boom":
            raise RuntimeError("boom")
        if kind == "response":
            return Response(b"raw", status=201, media_type="application/octet-stream",
                            headers={"X-Mine": "1"})
        if kind == "text":
            return "plain text " + str(len(headers))
        if kind == "bytes":
            return bytes(range(256))
        if kind == "none":
            return None
        return {"got": payload if not isinstance(payload, bytes) else len(payload),
                "q": dict(query_params), "nested": [1, 2.5, {"x": None}] * 20}
"""

YAML = """
- name: echo
  predictor:
    type: python
    path: predictor.py
"""


def raw(port, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def exercise(port):
    base = f"http://127.0.0.1:{port}"
    statuses = []
    with requests.Session() as keep_alive:  # one connection for many requests
        for i in range(40):
            statuses.append(keep_alive.post(f"{base}/echo", json={"i": i, "s": "é" * i}).status_code)
            statuses.append(keep_alive.post(f"{base}/echo?kind=text&a={i}", data=f"t{i}",
                                            headers={"Content-Type": "text/plain; charset=utf-8"}).status_code)
            statuses.append(keep_alive.post(f"{base}/echo", data={"field": str(i), "other": "x y"}).status_code)
            statuses.append(keep_alive.post(f"{base}/echo", files={"f": ("f.bin", b"\0\1" * i)}).status_code)
    closed = {"Connection": "close"}
    for i in range(20):
        for kind in ("boom", "response", "text", "bytes", "none"):
            statuses.append(requests.post(f"{base}/echo?kind={kind}", json={}, headers=closed).status_code)
        statuses.append(requests.post(f"{base}/echo", data=b"{not json", headers={
            "Content-Type": "application/json", **closed}).status_code)
        statuses.append(requests.post(f"{base}/echo", data=b"\xff\xfe", headers={
            "Content-Type": "application/json", **closed}).status_code)
        statuses.append(requests.post(f"{base}/echo", data=b"x" * 5000, headers=closed).status_code)
        statuses.append(requests.get(f"{base}/nowhere", headers=closed).status_code)
        statuses.append(requests.get(f"{base}/echo", headers=closed).status_code)
        statuses.append(requests.delete(f"{base}/echo", headers=closed).status_code)
        statuses.append(requests.get(f"{base}/healthz", headers=closed).status_code)
        statuses.append(requests.get(f"{base}/metrics", headers=closed).status_code)
        statuses.append(requests.options(f"{base}/echo", headers=closed).status_code)
        # malformed, cut short and HTTP/1.0 requests on raw sockets
        raw(port, b"GARBAGE\r\n\r\n")
        raw(port, b"POST /echo HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/json\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        for cut_short in (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                          b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\"",
                          b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # hangs up
                s.sendall(cut_short)
    return statuses


def test_every_allocation_of_a_served_and_stopped_server_is_freed(tmp_path):
    root = write_project(tmp_path / "project", {"cortex.yaml": YAML, "predictor.py": PREDICTOR})
    before = _core._alloc_counts()
    api = launch(root, max_body_size=4096, access_log=False)
    try:
        during = None
        statuses = exercise(api.port)
        during = _core._alloc_counts()
    finally:
        api.stop()
    after = _core._alloc_counts()
    assert len(statuses) > 400
    # every kind of answer was given: ok, created, client errors, the predictor's 500
    assert {200, 201, 400, 404, 405, 413, 500} <= set(statuses)
    # the counters do count: the running server held its own allocations
    assert during is not None and during["server"] > before["server"]
    assert after == before
