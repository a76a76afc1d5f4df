"""server_side_batching: requests gathered in C, one predict() call per batch."""
import threading

import requests

BATCH = """
from cortex_internal.lib.log import logger
class PythonPredictor:
    def __init__(self, config):
        self.mode = config.get("mode", "ok")
    def predict(self, payload, request_id):
        assert isinstance(payload, list) and isinstance(request_id, list)
        logger.info("batch", extra={"size": len(payload)})
        if self.mode == "dict":
            return {"not": "a list"}
        if self.mode == "short":
            return [0] * (len(payload) - 1)
        return [{"echo": p["i"], "size": len(payload), "rid": r} for p, r in zip(payload, request_id)]
"""


def batching_yaml(mode="ok", size=8, interval="100ms", threads=1):
    return f"""
- name: batched
  predictor:
    type: python
    path: predictor.py
    threads_per_process: {threads}
    config:
      mode: {mode}
    server_side_batching:
      max_batch_size: {size}
      batch_interval: {interval}
"""


def call_concurrently(server, count, path="/batched"):
    results = [None] * count

    def call(i):
        results[i] = requests.post(server.url(path), json={"i": i}, headers={"X-Request-ID": f"req-{i}"},
                                   timeout=60)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_each_of_64_concurrent_clients_gets_its_own_answer(simple_project, serve):
    server = serve(simple_project(BATCH, yaml=batching_yaml(size=16)), "--no-access-log")
    results = call_concurrently(server, 64)
    for i, r in enumerate(results):
        assert r.status_code == 200
        body = r.json()
        assert body["echo"] == i and body["rid"] == f"req-{i}"
    sizes = [l["size"] for l in server.log_lines() if l.get("message") == "batch"]
    assert sum(sizes) == 64
    assert max(sizes) > 1, "requests were never gathered into a batch"
    assert max(sizes) <= 16


def test_a_lone_request_is_answered_after_the_interval(simple_project, serve):
    server = serve(simple_project(BATCH, yaml=batching_yaml(interval="50ms")))
    r = server.post("/batched", json={"i": 7})
    assert r.status_code == 200 and r.json()["echo"] == 7 and r.json()["size"] == 1


def test_non_list_result_is_500_for_every_request_of_the_batch(simple_project, serve):
    server = serve(simple_project(BATCH, yaml=batching_yaml(mode="dict")))
    for r in call_concurrently(server, 4):
        assert r.status_code == 500
        assert r.headers["Content-Type"].startswith("text/plain")
        assert r.text == ("error: please return a list when using server side batching, "
                          "got <class 'dict'>: runtime exception")
    assert server.post("/batched", json={"i": 1}).status_code == 500  # and still serving


def test_wrong_length_result_is_500_for_every_request(simple_project, serve):
    server = serve(simple_project(BATCH, yaml=batching_yaml(mode="short")))
    for r in call_concurrently(server, 3):
        assert r.status_code == 500
        assert r.text.startswith("error: please return a list when using server side batching, got <class 'list'>")


def test_a_malformed_payload_is_answered_alone_and_the_batch_goes_on(simple_project, serve):
    server = serve(simple_project(BATCH, yaml=batching_yaml(interval="200ms")))
    bad = {}

    def post_bad():
        bad["r"] = requests.post(server.url("/batched"), data=b"{", headers={"Content-Type": "application/json"},
                                 timeout=60)

    t = threading.Thread(target=post_bad)
    t.start()
    good = call_concurrently(server, 3)
    t.join(60)
    assert bad["r"].status_code == 400
    assert all(r.status_code == 200 for r in good)
