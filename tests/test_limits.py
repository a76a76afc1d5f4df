"""Readiness, load limits and the built-in metrics: decided in C, visible over HTTP."""
import threading
import time

import pytest
import requests

from conftest import SLOW_INIT


BLOCKING = """
import os, time
from cortex_internal.lib.log import logger
class PythonPredictor:
    def __init__(self, config):
        self.release = config["release"]
    def predict(self, payload):
        logger.info("entered")
        while not os.path.exists(self.release):
            time.sleep(0.02)
        return "done"
"""


def yaml_with(config_release, extra=""):
    return f"""
- name: limited
  predictor:
    type: python
    path: predictor.py
    config:
      release: {config_release}
{extra}
"""


def test_healthz_is_503_until_init_finishes_then_200(simple_project, serve, tmp_path):
    release = tmp_path / "release-init"
    root = simple_project(SLOW_INIT, yaml=yaml_with(release))
    server = serve(root, wait=False)
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        try:
            status = server.get("/healthz", timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    assert status is not None, "server never accepted connections during __init__"
    assert status.status_code == 503
    early = server.post("/limited", json={})
    assert early.status_code == 503
    release.touch()
    server.wait_listening()
    ready = server.get("/healthz")
    assert (ready.status_code, ready.text) == (200, "ok")
    assert server.post("/limited", json={}).text == "ready"


def test_requests_beyond_max_replica_concurrency_get_503_at_once(simple_project, serve, tmp_path):
    release = tmp_path / "release-predict"
    extra = "  autoscaling:\n    max_replica_concurrency: 2\n"
    root = simple_project(BLOCKING, yaml=yaml_with(release, extra))
    server = serve(root)
    results = []

    def call():
        results.append(requests.post(server.url("/limited"), json={}, timeout=60))

    first = [threading.Thread(target=call) for _ in range(2)]
    for t in first:
        t.start()
    server.wait_for_log(lambda l: l.get("message") == "entered")
    # one request runs, one waits for the worker: both count as in flight
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = server.get("/metrics").text
        if 'cortex_in_flight_requests{api_name="limited"} 2' in metrics:
            break
        time.sleep(0.02)
    refused = server.post("/limited", json={})
    assert refused.status_code == 503
    assert "error" in refused.json()
    release.touch()
    for t in first:
        t.join(60)
    assert sorted(r.text for r in results) == ["done", "done"]
    assert server.post("/limited", json={}).status_code == 200
    entered = [l for l in server.log_lines() if l.get("message") == "entered"]
    assert len(entered) == 3, "the refused request must never reach the predictor"


def test_metrics_count_responses_by_status_class(simple_project, serve, tmp_path):
    release = tmp_path / "released"
    release.touch()
    root = simple_project(BLOCKING, yaml=yaml_with(release))
    server = serve(root)
    for _ in range(3):
        assert server.post("/limited", json={}).status_code == 200
    assert server.post("/limited", data=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert server.request("PUT", "/limited").status_code == 405
    text = server.get("/metrics").text
    assert "# TYPE cortex_status_code counter" in text
    assert 'cortex_status_code{api_name="limited",response_code="2XX"} 3' in text
    assert 'cortex_status_code{api_name="limited",response_code="4XX"} 2' in text
    assert 'cortex_in_flight_requests{api_name="limited"} 0' in text


PARALLEL = """
import threading, time
class PythonPredictor:
    def __init__(self, config):
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
    def predict(self, payload):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.3)
        with self.lock:
            self.running -= 1
        return {"peak": self.peak, "thread": threading.get_ident()}
"""


@pytest.mark.parametrize("threads", [1, 4])
def test_threads_per_process_bounds_concurrent_predicts(simple_project, serve, threads):
    yaml = f"""
- name: limited
  predictor:
    type: python
    path: predictor.py
    threads_per_process: {threads}
"""
    server = serve(simple_project(PARALLEL, yaml=yaml))
    results = []
    callers = [threading.Thread(target=lambda: results.append(
        requests.post(server.url("/limited"), json={}, timeout=60).json())) for _ in range(8)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert len(results) == 8
    assert max(r["peak"] for r in results) == threads


def test_single_thread_runs_init_and_predict_on_the_same_thread(simple_project, serve):
    source = """
import threading
class PythonPredictor:
    def __init__(self, config):
        self.init_thread = threading.get_ident()
    def predict(self, payload):
        return {"same": threading.get_ident() == self.init_thread}
"""
    server = serve(simple_project(source))
    for _ in range(3):
        assert server.post("/echo", json={}).json() == {"same": True}
