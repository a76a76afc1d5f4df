"""Shutdown drain on SIGTERM and the idle-connection timeout, observed from real sockets."""
import re
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import LiveServer, run_cli, write_project

YAML = """
- name: slow
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""

# predict logs "started", then either sleeps or waits until the test creates a release file.
PREDICTOR = """
import os
import time

from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        if not isinstance(payload, dict):
            return "quick"
        logger.info("started", extra={"tag": payload["tag"]})
        if "sleep" in payload:
            time.sleep(payload["sleep"])
        if "release" in payload:
            deadline = time.monotonic() + 30
            while not os.path.exists(payload["release"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        return "done " + payload["tag"]
"""

CLOSE_WAIT = 5.0  # generous upper bound for "closed by the server"


def start(tmp_path, *args):
    root = write_project(tmp_path / "project", {"cortex.yaml": YAML, "predictor.py": PREDICTOR})
    server = LiveServer(root, args, None, tmp_path)
    try:
        server.wait_listening()
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture
def server(tmp_path):
    srv = start(tmp_path)
    yield srv
    srv.close()


class InFlight(threading.Thread):
    """POSTs payload in a thread on its own connection; .response or .error once done."""

    def __init__(self, server, payload):
        super().__init__(daemon=True)
        self.server, self.payload = server, payload
        self.response = self.error = None
        self.start()

    def run(self):
        import requests
        try:
            self.response = requests.post(self.server.url("/slow"), json=self.payload, timeout=60)
        except Exception as e:  # reported by the assertions
            self.error = e


def wait_started(server, tag):
    server.wait_for_log(lambda l: l.get("message") == "started" and l.get("tag") == tag)


def read_http_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed mid-response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed mid-body")
        body += chunk
    return head, body


def closed_by_server(sock, timeout=CLOSE_WAIT) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def keep_alive_socket(server):
    """A connection that has completed one HTTP/1.1 request and is now idle."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head, body = read_http_response(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == b"ok"
    return sock


# -- SIGTERM drain --------------------------------------------------------------------------------

def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(server):
    request = InFlight(server, {"tag": "drain-1", "sleep": 1})
    wait_started(server, "drain-1")
    assert server.terminate(signal.SIGTERM) == 0
    request.join(60)
    assert request.error is None, request.error
    assert request.response.status_code == 200
    assert request.response.text == "done drain-1"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("processes", [1, 2])
def test_a_second_signal_during_the_drain_exits_at_once_with_a_warning(tmp_path, sig, processes):
    args = ("--processes", "2") if processes > 1 else ()
    server = start(tmp_path, *args)
    try:
        request = InFlight(server, {"tag": "stuck", "sleep": 20})
        wait_started(server, "stuck")
        server.proc.send_signal(sig)
        time.sleep(0.5)
        assert server.proc.poll() is None, "the first signal must drain, not exit"
        started = time.monotonic()
        server.proc.send_signal(sig)
        code = server.proc.wait(timeout=10)
        assert time.monotonic() - started < 5
        assert code == 1
        line = server.wait_for_log(lambda l: "second" in l.get("message", ""))
        assert line["levelname"] == "WARNING" and signal.Signals(sig).name in line["message"]
        request.join(10)
        assert request.response is None or request.response.status_code != 200
    finally:
        server.close()


def test_sigterm_refuses_new_connections_while_draining(server, tmp_path):
    release = tmp_path / "release"
    request = InFlight(server, {"tag": "drain-2", "release": str(release)})
    wait_started(server, "drain-2")
    server.proc.send_signal(signal.SIGTERM)
    refused = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not refused:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=2):
                pass
        except ConnectionRefusedError:
            refused = True
        except OSError:
            pass
        if not refused:
            time.sleep(0.02)
    still_in_flight = request.is_alive()
    release.touch()
    request.join(60)
    assert refused, "new connections were still accepted after SIGTERM"
    assert still_in_flight, "the in-flight request ended before the test released it"
    assert request.error is None, request.error
    assert request.response.status_code == 200
    assert request.response.text == "done drain-2"
    assert server.proc.wait(timeout=30) == 0  # SIGTERM already sent; no second signal


def test_sigterm_closes_idle_keep_alive_connections_at_once(server, tmp_path):
    idle = keep_alive_socket(server)
    release = tmp_path / "release"
    request = InFlight(server, {"tag": "drain-3", "release": str(release)})
    wait_started(server, "drain-3")
    server.proc.send_signal(signal.SIGTERM)
    try:
        closed = closed_by_server(idle)
        still_in_flight = request.is_alive()
    finally:
        idle.close()
        release.touch()
    request.join(60)
    assert closed, "idle keep-alive connection stayed open during the drain"
    assert still_in_flight
    assert request.response is not None and request.response.status_code == 200
    assert server.proc.wait(timeout=30) == 0  # SIGTERM already sent; no second signal


def test_sigterm_without_requests_exits_0_and_port_is_free(server):
    port = server.port
    assert server.terminate(signal.SIGTERM) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- idle timeout ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_idle(tmp_path_factory):
    srv = start(tmp_path_factory.mktemp("idle"), "--idle-timeout", "1")
    yield srv
    srv.close()


def test_serve_help_mentions_idle_timeout():
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    assert "--idle-timeout" in result.stdout


def test_silent_connection_is_closed_after_idle_timeout_others_served(short_idle):
    sock = socket.create_connection(("127.0.0.1", short_idle.port), timeout=10)
    try:
        # another client is served while this one sits idle; fresh connections, since with a
        # 1 s idle timeout the fixture's pooled keep-alive one may be closed just as it is reused
        r = requests.post(short_idle.url("/slow"), json=[1], timeout=30)
        assert r.status_code == 200 and r.text == "quick"
        assert closed_by_server(sock)
    finally:
        sock.close()
    r = requests.post(short_idle.url("/slow"), json=[2], timeout=30)
    assert r.status_code == 200


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(short_idle):
    sock = keep_alive_socket(short_idle)
    try:
        assert closed_by_server(sock)
    finally:
        sock.close()
    assert requests.get(short_idle.url("/healthz"), timeout=30).text == "ok"


def test_stalled_request_headers_are_closed_after_idle_timeout(short_idle):
    sock = socket.create_connection(("127.0.0.1", short_idle.port), timeout=10)
    try:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
        # the server may answer (e.g. 408) or just close; either way the connection ends
        sock.settimeout(CLOSE_WAIT)
        ended = False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    ended = True
                    break
        except ConnectionResetError:
            ended = True
        except socket.timeout:
            ended = False
        assert ended
    finally:
        sock.close()
    assert requests.post(short_idle.url("/slow"), json=[3], timeout=30).status_code == 200
