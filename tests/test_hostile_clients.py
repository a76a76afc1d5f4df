"""Clients that misbehave on the wire: each case is followed by a normal request that must
be answered, so no client can take the server down or out of step."""
import os
import re
import resource
import socket
import threading
import time

import pytest
import requests

from conftest import LiveServer, write_project

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass
    def predict(self, payload):
        return {"got": payload}
"""

YAML = """
- name: echo
  predictor:
    type: python
    path: predictor.py
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = write_project(tmp_path_factory.mktemp("hostile") / "project",
                         {"cortex.yaml": YAML, "predictor.py": PREDICTOR})
    live = LiveServer(root, ["--idle-timeout", "2", "--max-body-size", "1000", "--no-access-log"],
                      None, tmp_path_factory.mktemp("hostile-out"))
    live.wait_listening()
    yield live
    live.close()


def assert_still_serving(server):
    r = requests.post(server.url("/echo"), json={"ok": 1}, timeout=10)
    assert r.status_code == 200 and r.json() == {"got": {"ok": 1}}


def raw(server, data: bytes, read_timeout=5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1."), response[:200]
    return int(response.split(b" ", 2)[1])


def test_slowloris_headers_are_cut_at_the_timeout_while_others_are_served(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False
    try:
        while time.monotonic() - started < 8:
            assert_still_serving(server)  # others are served meanwhile
            try:
                s.sendall(b"X")  # one byte at a time, never finishing the headers
            except OSError:
                closed = True
                break
            s.settimeout(0.5)
            try:
                if s.recv(1024) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
    finally:
        s.close()
    assert closed, "a connection trickling headers was never cut"
    assert_still_serving(server)


def test_body_trickle_is_cut_at_the_timeout(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    s.settimeout(6)
    try:
        data = s.recv(1024)
    except socket.timeout:
        data = None
    s.close()
    assert data is not None, "a stalled body kept its connection open past the idle timeout"
    assert_still_serving(server)


def test_oversized_headers_are_refused(server):
    response = raw(server, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert status_of(response) in (413, 431)
    assert_still_serving(server)


def test_oversized_url_is_refused(server):
    response = raw(server, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) in (414, 431)
    assert_still_serving(server)


@pytest.mark.parametrize("garbage", [
    b"\x00\x01\x02\x03garbage\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"\r\n\r\n\r\n",
])
def test_invalid_http_gets_an_error_or_a_closed_socket(server, garbage):
    response = raw(server, garbage, read_timeout=3)
    if response:
        assert status_of(response) >= 400
    assert_still_serving(server)


def test_content_length_shorter_than_the_body_keeps_the_stream_in_step(server):
    body = b'{"a": 1}'
    # the 3 extra bytes become the start of a (bad) second request on the same connection
    response = raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body + b"XYZ", read_timeout=3)
    assert status_of(response) == 200
    assert b'{"got": {"a": 1}}' in response
    assert_still_serving(server)


def test_content_length_longer_than_the_body_times_out_cleanly(server):
    response = raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 50\r\n\r\n{}", read_timeout=6)
    assert b"200 OK" not in response
    assert_still_serving(server)


def test_declared_body_over_the_limit_is_413_before_sending_it(server):
    response = raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", read_timeout=3)
    assert status_of(response) == 413
    assert_still_serving(server)


@pytest.mark.parametrize("chunks", [
    b"zz\r\nabc\r\n0\r\n\r\n",          # not hex
    b"5\r\nab\r\n0\r\n\r\n",             # shorter than declared
    b"FFFFFFFFFFFFFFFFFF\r\n",           # absurd size
])
def test_chunked_encoding_errors(server, chunks):
    response = raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + chunks, read_timeout=3)
    assert b"200 OK" not in response or b'"got"' not in response
    assert_still_serving(server)


def test_pipelined_requests_are_answered_in_order(server):
    one = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n"
           b'{"n":1}')
    two = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n"
           b'{"n":2}')
    three = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = raw(server, one + two + three)
    first = response.find(b'{"got": {"n": 1}}')
    second = response.find(b'{"got": {"n": 2}}')
    assert 0 <= first < second
    assert response.rstrip().endswith(b"ok")
    assert_still_serving(server)


def test_a_client_that_never_reads_its_response_does_not_block_others(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    try:
        for _ in range(2000):  # pipelined, never read: the responses pile up
            s.sendall(request)
    except OSError:
        pass  # the server may cut us off: that is fine too
    try:
        for _ in range(5):
            assert_still_serving(server)
    finally:
        s.close()
    assert_still_serving(server)


def test_many_idle_connections_are_bounded_and_survivable(server):
    sockets = []
    try:
        for _ in range(500):
            try:
                sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
            except OSError:
                break
        assert_still_serving(server)
    finally:
        for s in sockets:
            s.close()
    assert_still_serving(server)


def test_client_hanging_up_mid_response_is_harmless(server):
    def hang_up():
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        s.close()

    threads = [threading.Thread(target=hang_up) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_still_serving(server)


def test_a_predict_longer_than_the_idle_timeout_still_gets_its_answer(simple_project, serve):
    source = """
import time
class PythonPredictor:
    def __init__(self, config):
        pass
    def predict(self, payload):
        time.sleep(2.5)
        return "slow but fine"
"""
    live = serve(simple_project(source), "--idle-timeout", "1")
    r = live.post("/echo", json={})
    assert (r.status_code, r.text) == (200, "slow but fine")


def open_idle(port, count, timeout=10.0):
    """count TCP connections that send nothing (raises if one cannot be opened)."""
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


def closed_by_peer(sockets):
    """How many of these connections the server has closed (EOF or reset waiting to be read)."""
    closed = 0
    for s in sockets:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def server_sockets(pid):
    """Sockets the serve process has open (Linux /proc)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def wait_for_sockets(pid, count, timeout=30.0):
    """Waits until the server has accepted count connections (a connect returns once the
    kernel has queued it, before the server's accept); returns how many it holds."""
    deadline = time.monotonic() + timeout
    while (held := server_sockets(pid)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return held


@pytest.fixture
def fd_room():
    """Raises this process's soft RLIMIT_NOFILE to its hard limit (for thousands of client
    sockets), back afterwards; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


IDLE = 10_000


def test_ten_thousand_idle_connections_are_held_and_a_request_still_gets_through(
        simple_project, serve, fd_room):
    if fd_room < IDLE + 200:
        pytest.skip(f"the hard open-file limit ({fd_room}) is too low for {IDLE} client sockets")
    live = serve(simple_project(PREDICTOR), "--no-access-log")
    sockets = open_idle(live.port, IDLE)
    try:
        r = requests.post(live.url("/echo"), json={"ok": 1}, timeout=10)
        assert r.status_code == 200 and r.json() == {"got": {"ok": 1}}
        # all of them open at the server too (the listening socket and the one request aside)
        assert wait_for_sockets(live.proc.pid, IDLE) >= IDLE
        assert closed_by_peer(sockets) == 0
    finally:
        for s in sockets:
            s.close()
    assert_still_serving(live)
    assert live.proc.poll() is None


def test_beyond_max_connections_new_ones_wait_in_the_backlog_until_one_closes(simple_project, serve):
    live = serve(simple_project(PREDICTOR), "--no-access-log", "--max-connections", "20")
    idle = open_idle(live.port, 20)
    waiting = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    extra = []
    try:
        waiting.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 8\r\nConnection: close\r\n\r\n{\"n\": 1}")
        # the server holds 20 connections: the 21st is not accepted, so not answered...
        waiting.settimeout(1.5)
        with pytest.raises(socket.timeout):
            waiting.recv(1)
        # ...and more still connect (into the kernel's backlog) without the server minding
        extra = open_idle(live.port, 200)
        assert live.proc.poll() is None
        assert closed_by_peer(idle) == 0
        # one held connection closes: the first waiting one is accepted and answered
        idle.pop().close()
        waiting.settimeout(10)
        answer = b""
        while chunk := waiting.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"got": {"n": 1}}')
    finally:
        waiting.close()
        for s in idle + extra:
            s.close()
    assert_still_serving(live)


def test_max_connections_above_the_open_file_limit_is_lowered_with_a_warning(simple_project, serve):
    def low_limit():  # in the serve process only
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    live = serve(simple_project(PREDICTOR), "--no-access-log", "--max-connections", "5000",
                 preexec_fn=low_limit)
    line = live.wait_for_log(lambda l: l.get("levelname") == "WARNING")
    m = re.fullmatch(r"--max-connections 5000 is more than the open-file limit allows "
                     r"\(RLIMIT_NOFILE (\d+), hard (\d+)\): holding at most (\d+) connections",
                     line["message"])
    assert m, line["message"]
    soft, hard, holding = map(int, m.groups())
    # 200 as set, or a few less under valgrind, which keeps some descriptors for itself
    assert 150 <= soft == hard <= 200 and holding == soft - 128
    idle = open_idle(live.port, holding)
    try:
        assert wait_for_sockets(live.proc.pid, holding) >= holding
        # beyond that connections wait instead of the server running out of descriptors
        extra = open_idle(live.port, 300)
        held = server_sockets(live.proc.pid)
        for s in extra:
            s.close()
        assert live.proc.poll() is None and closed_by_peer(idle) == 0
        assert held <= holding + 3, held  # the listening socket and a few of Python's beside them
    finally:
        for s in idle:
            s.close()
    assert_still_serving(live)
    assert "Too many open files" not in live.stdout_text() + live.stderr_text()
