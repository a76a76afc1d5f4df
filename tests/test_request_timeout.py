"""--request-timeout: a request its predict() has not answered in time gets 504 at once;
the predict call runs on (Python cannot be interrupted) and its late answer is dropped."""
import json
import threading
import time

import pytest
import requests

from conftest import parse_json_lines

# predict sleeps for payload["sleep"] seconds, then notes the request it answered in a file
SLEEPER = """
import time
class PythonPredictor:
    def __init__(self, config):
        self.answered = config["answered"]
    def predict(self, payload, request_id):
        time.sleep(payload.get("sleep", 0))
        with open(self.answered, "a") as f:
            f.write(request_id + "\\n")
        return {"slept": payload.get("sleep", 0)}
    def post_predict(self, response, payload):
        with open(self.answered + ".post", "a") as f:
            f.write(payload.get("tag", "-") + "\\n")
"""


def yaml_for(answered, threads=1, extra=""):
    return f"""
- name: slow
  predictor:
    type: python
    path: predictor.py
    threads_per_process: {threads}
    config:
      answered: {answered}
{extra}
"""


def lines_of(path):
    return path.read_text().split() if path.exists() else []


def test_a_predict_slower_than_the_timeout_gets_504_with_a_json_error_and_a_log_line(
        simple_project, serve, tmp_path):
    answered = tmp_path / "answered"
    server = serve(simple_project(SLEEPER, yaml=yaml_for(answered)), "--request-timeout", "0.5")
    started = time.monotonic()
    r = server.post("/slow", json={"sleep": 2.5, "tag": "late-one"}, headers={"X-Request-ID": "late-one"}, timeout=30)
    elapsed = time.monotonic() - started
    assert r.status_code == 504
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-Request-ID"] == "late-one"
    assert "timed out" in r.json()["error"] and "0.5 s" in r.json()["error"]
    assert elapsed < 2.0, f"the 504 came only after {elapsed:.2f} s, not at the timeout"
    warning = server.wait_for_log(lambda l: l.get("request_id") == "late-one" and l["levelname"] == "WARNING")
    assert "timed out" in warning["message"]
    access = server.wait_for_log(lambda l: l.get("request_id") == "late-one" and "status_code" in l)
    assert access["status_code"] == "504 Gateway Timeout"
    # the predict call ran to its end; its answer was dropped, and post_predict never ran for it
    deadline = time.monotonic() + 10
    while "late-one" not in lines_of(answered) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines_of(answered) == ["late-one"]
    fast = server.post("/slow", json={"sleep": 0, "tag": "quick-one"}, headers={"X-Request-ID": "quick-one"})
    assert (fast.status_code, fast.json()) == (200, {"slept": 0})
    time.sleep(0.5)
    assert lines_of(tmp_path / "answered.post") == ["quick-one"]


def test_requests_within_the_timeout_are_answered_normally(simple_project, serve, tmp_path):
    answered = tmp_path / "answered"
    server = serve(simple_project(SLEEPER, yaml=yaml_for(answered)), "--request-timeout", "2")
    for _ in range(20):
        r = server.post("/slow", json={"sleep": 0.01})
        assert (r.status_code, r.json()) == (200, {"slept": 0.01})
    metrics = server.get("/metrics").text
    assert 'cortex_status_code{api_name="slow",response_code="2XX"} 20' in metrics
    assert 'cortex_status_code{api_name="slow",response_code="5XX"} 0' in metrics


def test_with_spare_threads_other_requests_are_served_while_a_timed_out_predict_runs_on(
        simple_project, serve, tmp_path):
    answered = tmp_path / "answered"
    server = serve(simple_project(SLEEPER, yaml=yaml_for(answered, threads=2)), "--request-timeout", "0.5")
    slow = {}

    def call_slow():
        slow["r"] = requests.post(server.url("/slow"), json={"sleep": 4}, timeout=30)

    t = threading.Thread(target=call_slow)
    t.start()
    t.join(timeout=3)
    assert not t.is_alive() and slow["r"].status_code == 504
    # its predict still sleeps on one thread; the other thread serves
    for _ in range(5):
        r = server.post("/slow", json={"sleep": 0})
        assert r.status_code == 200
    assert server.get("/healthz").status_code == 200


def test_with_one_thread_a_request_queued_past_the_timeout_gets_504_and_never_reaches_predict(
        simple_project, serve, tmp_path):
    answered = tmp_path / "answered"
    server = serve(simple_project(SLEEPER, yaml=yaml_for(answered)), "--request-timeout", "0.6")
    results = {}

    def call(name, body):
        results[name] = requests.post(server.url("/slow"), json=body, headers={"X-Request-ID": name},
                                      timeout=30)

    first = threading.Thread(target=call, args=("first", {"sleep": 2}))
    first.start()
    time.sleep(0.2)  # first is in predict now; second waits for the only thread
    second = threading.Thread(target=call, args=("second", {"sleep": 0}))
    second.start()
    first.join(10)
    second.join(10)
    assert results["first"].status_code == 504
    assert results["second"].status_code == 504
    time.sleep(2.5)  # the first predict ends; the queued one is dropped, not run late
    assert lines_of(answered) == ["first"]
    after = server.post("/slow", json={"sleep": 0}, headers={"X-Request-ID": "after"})
    assert after.status_code == 200
    assert lines_of(answered) == ["first", "after"]
    metrics = server.get("/metrics").text
    assert 'cortex_status_code{api_name="slow",response_code="5XX"} 2' in metrics
    assert 'cortex_in_flight_requests{api_name="slow"} 0' in metrics


BATCH_SLEEPER = """
import time
class PythonPredictor:
    def __init__(self, config):
        pass
    def predict(self, payload):
        time.sleep(max(p["sleep"] for p in payload))
        return [p["sleep"] for p in payload]
"""


def test_a_slow_batch_answers_each_of_its_requests_504(simple_project, serve):
    yaml = """
- name: batched
  predictor:
    type: python
    path: predictor.py
    server_side_batching:
      max_batch_size: 4
      batch_interval: 0.2
"""
    server = serve(simple_project(BATCH_SLEEPER, yaml=yaml), "--request-timeout", "0.7")
    results = []

    def call():
        results.append(requests.post(server.url("/batched"), json={"sleep": 1.5}, timeout=30))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [r.status_code for r in results] == [504] * 4
    time.sleep(1.2)
    fine = server.post("/batched", json={"sleep": 0})
    assert (fine.status_code, fine.json()) == (200, 0)


def test_the_pytest_fixture_takes_a_request_timeout(cortex_api, simple_project, tmp_path):
    answered = tmp_path / "answered"
    api = cortex_api(simple_project(SLEEPER, yaml=yaml_for(answered, threads=2)), request_timeout=0.3)
    assert api.post(json={"sleep": 1}).status_code == 504
    assert api.post(json={"sleep": 0}).status_code == 200
    assert any(l.get("levelname") == "WARNING" and "timed out" in l["message"] for l in api.logs())


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_request_timeout_is_refused_by_the_cli(simple_project, value):
    from conftest import run_cli
    root = simple_project(SLEEPER, yaml=yaml_for("/tmp/unused"))
    result = run_cli("serve", str(root), "--request-timeout", value, timeout=30)
    assert result.returncode == 2
    assert "--request-timeout" in result.stderr
