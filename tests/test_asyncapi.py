"""kind: AsyncAPI on the default SQLite store: POST -> {"id"}, GET <endpoint>/<id> -> status,
predict in the background; durability across kills and restarts; the queue bound."""
import json
import re
import signal
import time

import pytest
import requests

ASYNC_YAML = """
- name: job
  kind: AsyncAPI
  predictor:
    type: python
    path: predictor.py
"""

# predict logs "predicting"; {"wait": path} blocks until that file exists; {"mode": ...}
# picks a misbehaviour; otherwise it describes the payload it got.
PREDICTOR = """
import os, threading, time
from cortex_internal.lib.log import logger

class PythonPredictor:
    def __init__(self, config):
        self.init_thread = threading.get_ident()

    def predict(self, payload, request_id):
        logger.info("predicting", extra={"workload": request_id})
        if isinstance(payload, dict):
            if payload.get("wait"):
                while not os.path.exists(payload["wait"]):
                    time.sleep(0.01)
            mode = payload.get("mode")
            if mode == "str":
                return "not a dict"
            if mode == "unserialisable":
                return {"x": object()}
            if mode == "raise":
                raise ValueError("the model broke")
        return {"type": type(payload).__name__, "payload": payload if isinstance(payload, (dict, str)) else repr(payload),
                "request_id": request_id, "same_thread": threading.get_ident() == self.init_thread}
"""

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\Z")


@pytest.fixture
def async_project(simple_project):
    return lambda source=PREDICTOR, yaml=ASYNC_YAML: simple_project(source, yaml=yaml)


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


def submit(server, path="/job", **kwargs):
    r = server.post(path, **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    return r.json()["id"]


def wait_status(server, workload_id, wanted, timeout=20.0, path="/job"):
    deadline = time.monotonic() + timeout
    while True:
        r = server.get(f"{path}/{workload_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in wanted:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"workload {workload_id} still {body['status']}; log:\n{server.stdout_text()}")
        time.sleep(0.02)


def predict_count(server, workload_id):
    return sum(1 for line in server.log_lines()
               if line.get("message") == "predicting" and line.get("workload") == workload_id)


def test_status_goes_from_in_queue_to_in_progress_to_completed(async_project, serve, state_dir, tmp_path):
    server = serve(async_project(), "--state-dir", state_dir)
    release = tmp_path / "release"
    first = submit(server, json={"wait": str(release)})
    second = submit(server, json={"n": 2})
    assert wait_status(server, first, {"in_progress"}) == {"id": first, "status": "in_progress"}
    assert server.get(f"/job/{second}").json() == {"id": second, "status": "in_queue"}
    release.touch()
    done = wait_status(server, first, {"completed"})
    assert set(done) == {"id", "status", "result", "timestamp"}
    assert TIMESTAMP.match(done["timestamp"]), done["timestamp"]
    assert done["result"]["request_id"] == first
    # predict ran on the thread that ran __init__ (threads_per_process = 1)
    assert done["result"]["same_thread"] is True
    assert wait_status(server, second, {"completed"})["result"]["payload"] == {"n": 2}
    # GET on the endpoint itself keeps the fixed message; the id answers on every route
    assert "make a prediction" in server.get("/job").json()["message"]
    assert server.get(f"/predict/{first}").json()["status"] == "completed"
    assert server.get(f"/{first}").json()["status"] == "completed"
    assert any(l.get("message") == "async workloads are stored here" and l.get("backend") == "sqlite"
               and l.get("database", "").startswith(str(state_dir)) for l in server.log_lines())


def test_post_is_answered_while_the_only_predict_thread_is_busy(async_project, serve, state_dir, tmp_path):
    server = serve(async_project(), "--state-dir", state_dir)
    release = tmp_path / "release"
    first = submit(server, json={"wait": str(release)})
    wait_status(server, first, {"in_progress"})
    started = time.monotonic()
    ids = [submit(server, json={"n": i}) for i in range(5)]
    assert time.monotonic() - started < 2.0
    assert all(server.get(f"/job/{i}").json()["status"] == "in_queue" for i in ids)
    release.touch()
    for i in ids:
        wait_status(server, i, {"completed"})


def test_result_rules_non_dict_unserialisable_and_exceptions_fail(async_project, serve, state_dir):
    server = serve(async_project(), "--state-dir", state_dir)
    as_str = submit(server, json={"mode": "str"})
    unserialisable = submit(server, json={"mode": "unserialisable"})
    raising = submit(server, json={"mode": "raise"})
    for workload_id in (as_str, unserialisable, raising):
        assert wait_status(server, workload_id, {"completed", "failed"}) == {"id": workload_id, "status": "failed"}
    server.wait_for_log(lambda l: l.get("message") == "user response must be json serializable dictionary, "
                                                      "got <class 'str'> instead" and l.get("request_id") == as_str)
    server.wait_for_log(lambda l: l.get("message", "").startswith(
        "user response must be json serializable dictionary, got <class 'dict'> instead")
        and l.get("request_id") == unserialisable)
    line = server.wait_for_log(lambda l: l.get("request_id") == raising and "exc_info" in l)
    assert line["levelname"] == "ERROR" and raising in line["message"]
    assert "ValueError: the model broke" in line["exc_info"]
    # the server keeps working
    ok = submit(server, json={"fine": True})
    assert wait_status(server, ok, {"completed"})["result"]["payload"] == {"fine": True}


@pytest.mark.parametrize("path", ["/job/unknown-id", "/job/..%2F..%2Fetc%2Fpasswd", "/job/" + "a" * 129,
                                  "/job/a.b", "/job/%2e%2e", "/job/a%20b", "/job/x/y"])
def test_unknown_or_malformed_id_is_404(async_project, serve, state_dir, path):
    server = serve(async_project(), "--state-dir", state_dir)
    r = server.get(path)
    assert r.status_code == 404
    # the server keeps answering
    workload_id = submit(server, json={})
    assert wait_status(server, workload_id, {"completed"})["status"] == "completed"


def test_payload_is_decoded_by_the_stored_content_type(async_project, serve, state_dir):
    server = serve(async_project(), "--state-dir", state_dir)
    as_json = submit(server, data=b'{"k": [1, 2.5]}', headers={"Content-Type": "application/json"})
    as_text = submit(server, data="h\xe9llo".encode("latin-1"),
                     headers={"Content-Type": "text/plain; charset=latin-1"})
    as_bytes = submit(server, data=b"\x00\xffraw", headers={"Content-Type": "application/octet-stream"})
    no_type = submit(server, data=b"plain")
    bad_json = submit(server, data=b'{"k": ', headers={"Content-Type": "application/json"})
    assert wait_status(server, as_json, {"completed"})["result"]["payload"] == {"k": [1, 2.5]}
    text = wait_status(server, as_text, {"completed"})["result"]
    assert (text["type"], text["payload"]) == ("str", "h\xe9llo")
    raw = wait_status(server, as_bytes, {"completed"})["result"]
    assert (raw["type"], raw["payload"]) == ("bytes", repr(b"\x00\xffraw"))
    assert wait_status(server, no_type, {"completed"})["result"]["type"] == "bytes"
    assert wait_status(server, bad_json, {"completed", "failed"})["status"] == "failed"
    line = server.wait_for_log(lambda l: l.get("request_id") == bad_json and l.get("levelname") == "ERROR")
    assert "invalid JSON" in line["message"]


def test_valid_x_request_id_is_the_id_and_a_repeat_is_not_run_twice(async_project, serve, state_dir):
    server = serve(async_project(), "--state-dir", state_dir)
    given = submit(server, json={"n": 1}, headers={"X-Request-ID": "client-id_42"})
    assert given == "client-id_42"
    assert wait_status(server, given, {"completed"})["result"]["request_id"] == "client-id_42"
    again = submit(server, json={"n": 2}, headers={"X-Request-ID": "client-id_42"})
    assert again == given
    assert predict_count(server, given) == 1
    assert server.get(f"/job/{given}").json()["result"]["payload"] == {"n": 1}
    # not an id's shape: a fresh one
    fresh = submit(server, json={}, headers={"X-Request-ID": "has spaces/and slashes"})
    assert re.fullmatch(r"[0-9a-f-]{36}", fresh)


def test_sigkill_during_in_progress_then_restart_completes_it(async_project, serve, state_dir, tmp_path):
    path = async_project()
    server = serve(path, "--state-dir", state_dir)
    release = tmp_path / "release"
    killed = submit(server, json={"wait": str(release)})
    queued = submit(server, json={"n": 2})
    wait_status(server, killed, {"in_progress"})
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    release.touch()
    restarted = serve(path, "--state-dir", state_dir)
    assert wait_status(restarted, killed, {"completed"})["result"]["request_id"] == killed
    assert wait_status(restarted, queued, {"completed"})["result"]["payload"] == {"n": 2}
    restarted.wait_for_log(lambda l: l.get("message", "").startswith("re-queued 1 workload"))


def test_results_survive_a_restart_and_sigterm_exits_0(async_project, serve, state_dir):
    path = async_project()
    server = serve(path, "--state-dir", state_dir)
    workload_id = submit(server, json={"keep": "me"})
    before = wait_status(server, workload_id, {"completed"})
    assert server.terminate() == 0
    again = serve(path, "--state-dir", state_dir)
    assert again.get(f"/job/{workload_id}").json() == before


def test_queue_bound_is_503(async_project, serve, state_dir, tmp_path):
    server = serve(async_project(), "--state-dir", state_dir, "--async-max-queue", "2")
    release = tmp_path / "release"
    running = submit(server, json={"wait": str(release)})
    wait_status(server, running, {"in_progress"})  # claimed: no longer pending
    queued = [submit(server, json={"n": i}) for i in range(2)]
    full = server.post("/job", json={"n": 3})
    assert full.status_code == 503
    assert "queue is full" in full.json()["error"]
    release.touch()
    for workload_id in [running, *queued]:
        wait_status(server, workload_id, {"completed"})
    assert submit(server, json={"n": 4})


def test_async_predict_may_take_payload_and_request_id_only(simple_project, serve):
    source = PREDICTOR.replace("def predict(self, payload, request_id):",
                               "def predict(self, payload, query_params):")
    server = serve(simple_project(source, yaml=ASYNC_YAML), wait=False)
    assert server.proc.wait(timeout=60) != 0
    assert ('invalid signature for method "predict(self, payload, query_params)": '
            '"query_params" is not a supported argument') in server.stderr_text()


def test_realtime_and_async_apis_share_the_init_thread(simple_project, serve, state_dir):
    yaml = ASYNC_YAML + """
- name: now
  predictor:
    type: python
    path: predictor.py
"""
    server = serve(simple_project(PREDICTOR, yaml=yaml), "--state-dir", state_dir)
    realtime = server.post("/now", json={"n": 1})
    assert realtime.status_code == 200 and realtime.json()["same_thread"] is True
    workload_id = submit(server, json={"n": 2})
    assert wait_status(server, workload_id, {"completed"})["result"]["same_thread"] is True
    # the status route belongs to the AsyncAPI only
    assert server.get(f"/now/{workload_id}").status_code == 404


def test_several_threads_run_workloads_concurrently(async_project, serve, state_dir, tmp_path):
    server = serve(async_project(), "--state-dir", state_dir, "--threads", "3")
    release = tmp_path / "release"
    ids = [submit(server, json={"wait": str(release), "n": i}) for i in range(3)]
    for workload_id in ids:
        wait_status(server, workload_id, {"in_progress"})
    release.touch()
    for workload_id in ids:
        wait_status(server, workload_id, {"completed"})


def test_sigterm_lets_the_running_workload_finish_and_leaves_the_queue_for_later(
        async_project, serve, state_dir, tmp_path):
    path = async_project()
    server = serve(path, "--state-dir", state_dir)
    release = tmp_path / "release"
    running = submit(server, json={"wait": str(release)})
    queued = submit(server, json={"n": 2})
    wait_status(server, running, {"in_progress"})
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the drain has begun; the running predict holds the process
    assert server.proc.poll() is None
    release.touch()
    assert server.proc.wait(timeout=30) == 0
    restarted = serve(path, "--state-dir", state_dir)
    assert restarted.get(f"/job/{running}").json()["status"] == "completed"
    assert predict_count(restarted, running) == 0
    assert wait_status(restarted, queued, {"completed"})["result"]["payload"] == {"n": 2}


def test_worker_processes_share_the_sqlite_store(async_project, serve, state_dir):
    server = serve(async_project(), "--state-dir", state_dir, "--processes", "2", "--no-access-log")
    ids = [server.post("/job", json={"n": i}, headers={"Connection": "close"}).json()["id"] for i in range(40)]
    for i, workload_id in enumerate(ids):
        assert wait_status(server, workload_id, {"completed"})["result"]["payload"] == {"n": i}
    counts = [predict_count(server, workload_id) for workload_id in ids]
    assert counts == [1] * 40
