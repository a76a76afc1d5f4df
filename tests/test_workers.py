"""processes_per_replica: several worker processes on one port, supervised."""
import os
import signal
import threading
import time

import requests

from conftest import SLOW_INIT

PIDS = """
import os, time
from cortex_internal.lib.log import logger
class PythonPredictor:
    def __init__(self, config):
        self.slow = config.get("slow", 0)
    def predict(self, payload):
        if payload and payload.get("sleep"):
            logger.info("sleeping", extra={"pid": os.getpid()})
            time.sleep(payload["sleep"])
        return {"pid": os.getpid()}
"""


def workers_yaml(n, extra=""):
    return f"""
- name: pids
  predictor:
    type: python
    path: predictor.py
    processes_per_replica: {n}
{extra}
"""


def pids_seen(server, count, want=None):
    """The worker pids that answered up to count fresh connections (fewer once want distinct
    ones answered: which process accepts a connection is the kernel's choice, and under load
    one can win many in a row)."""
    seen = set()
    for _ in range(count):
        if want is not None and len(seen) >= want:
            break
        # a new connection each time, so the kernel can hand it to any worker
        r = requests.post(server.url("/pids"), json={}, headers={"Connection": "close"}, timeout=30)
        assert r.status_code == 200
        seen.add(r.json()["pid"])
    return seen


def test_two_workers_answer_from_distinct_processes(simple_project, serve):
    server = serve(simple_project(PIDS, yaml=workers_yaml(2)))
    seen = pids_seen(server, 400, want=2)
    assert len(seen) == 2
    assert server.proc.pid not in seen
    assert server.get("/healthz").text == "ok"
    listening = [l for l in server.log_lines() if l.get("message") == "listening"]
    assert len(listening) == 1


def test_processes_flag_overrides_the_file(simple_project, serve):
    server = serve(simple_project(PIDS, yaml=workers_yaml(1)), "--processes", "3")
    assert len(pids_seen(server, 600, want=3)) == 3


def test_a_killed_worker_is_logged_and_replaced_while_others_serve(simple_project, serve):
    server = serve(simple_project(PIDS, yaml=workers_yaml(2)), "--no-access-log")
    before = pids_seen(server, 300, want=2)
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(20):  # the surviving worker keeps answering meanwhile
        assert requests.post(server.url("/pids"), json={}, timeout=30).status_code == 200
    line = server.wait_for_log(lambda l: l.get("levelname") == "ERROR" and l.get("pid") == victim)
    assert "SIGKILL" in line["message"]
    deadline = time.monotonic() + 30
    after = set()
    while time.monotonic() < deadline and len(after) < 2:
        after = pids_seen(server, 20)
    assert len(after) == 2 and victim not in after
    assert server.get("/healthz").text == "ok"


def test_sigterm_drains_every_worker_and_exits_zero(simple_project, serve):
    server = serve(simple_project(PIDS, yaml=workers_yaml(2)))
    result = {}

    def slow_call():
        result["response"] = requests.post(server.url("/pids"), json={"sleep": 1.0}, timeout=30)

    caller = threading.Thread(target=slow_call)
    caller.start()
    server.wait_for_log(lambda l: l.get("message") == "sleeping")
    server.proc.send_signal(signal.SIGTERM)
    caller.join(30)
    assert result["response"].status_code == 200
    assert server.proc.wait(timeout=30) == 0


def test_init_failure_in_workers_is_one_clear_line_and_nonzero_exit(simple_project, serve):
    source = """
class PythonPredictor:
    def __init__(self, config):
        raise ValueError("no model here")
    def predict(self, payload):
        return 1
"""
    server = serve(simple_project(source, yaml=workers_yaml(2)), wait=False)
    assert server.proc.wait(timeout=60) != 0
    errors = [l for l in server.stderr_text().splitlines() if l.startswith("error: ")]
    assert errors == ["error: predictor.py: __init__: no model here: runtime exception"]
    assert "Traceback" not in server.stderr_text()


def test_port_in_use_is_a_startup_error_with_workers(simple_project, serve):
    first = serve(simple_project(PIDS, yaml=workers_yaml(2)))
    second = serve(simple_project(PIDS, yaml=workers_yaml(2)), "--port", str(first.port), wait=False)
    # the fixture passes its own --port first; argparse keeps the last one
    assert second.proc.wait(timeout=60) != 0
    assert "already in use" in second.stderr_text()




def test_while_the_workers_start_healthz_and_predictions_answer_503_at_once(simple_project, serve, tmp_path):
    release = tmp_path / "release"
    extra = f"    config:\n      release: {release}\n"
    server = serve(simple_project(SLOW_INIT, yaml=workers_yaml(2, extra)), wait=False)
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        try:
            status = requests.get(server.url("/healthz"), timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    assert status is not None, "no worker answered during __init__"
    assert (status.status_code, status.text) == (503, "starting")
    early = requests.post(server.url("/pids"), json={}, timeout=2)
    assert early.status_code == 503 and "not ready" in early.json()["error"]
    release.touch()
    server.wait_listening()
    assert server.get("/healthz").text == "ok"
    for _ in range(10):
        r = requests.post(server.url("/pids"), json={}, headers={"Connection": "close"}, timeout=30)
        assert (r.status_code, r.text) == (200, "ready")
