"""metrics_client and GET /metrics: what a predictor records and what Prometheus or statsd sees."""
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli

REPO_ROOT = Path(__file__).resolve().parent.parent
CORTEX_MESSAGE = ("Metric name ({}) is invalid because it starts with a cortex exclusive prefix.\n"
                  "The following are prefixes are exclusive to cortex: ('cortex_', 'istio_').")
PROCESSES_UNSUPPORTED = "processes_per_replica > 1 is not supported" in (
    REPO_ROOT / "cortex_runtime" / "serve.py").read_text()

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Exposition text -> {(name, ((label, value), ...)): float}, label values unescaped."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = []
        for key, raw in LABEL.findall(m.group(2) or ""):
            labels.append((key, re.sub(r'\\(.)', lambda e: "\n" if e.group(1) == "n" else e.group(1), raw)))
        samples[(m.group(1), tuple(labels))] = float(m.group(3))
    return samples


def value(samples, name, **labels):
    for (n, ls), v in samples.items():
        if n == name and dict(ls) == labels:
            return v
    raise KeyError(f"{name}{labels} not in {sorted(k for k in samples if k[0] == name)}")


def histogram(samples, name, **labels):
    """-> ([(le, cumulative count)], sum, count) for one label set."""
    buckets = []
    for (n, ls), v in samples.items():
        d = dict(ls)
        if n == name + "_bucket" and {k: x for k, x in d.items() if k != "le"} == labels:
            buckets.append((float(d["le"]), v))
    buckets.sort()
    return buckets, value(samples, name + "_sum", **labels), value(samples, name + "_count", **labels)


def assert_consistent_histogram(buckets, total_sum, count):
    assert buckets and buckets[-1][0] == float("inf"), "the last bucket is +Inf"
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), f"buckets must be cumulative: {buckets}"
    assert buckets[-1][1] == count, "+Inf bucket == _count"
    assert (count == 0) == (total_sum == 0)


USER_METRICS = """
class PythonPredictor:
    def __init__(self, config, metrics_client):
        self.metrics = metrics_client
    def predict(self, payload):
        self.metrics.increment("predictions", tags={"model": payload.get("model", "v1")})
        self.metrics.increment("predictions_untagged")
        self.metrics.gauge("queue_depth", payload.get("depth", 3), tags={"queue": "main"})
        self.metrics.histogram("inference_time_milliseconds", payload.get("ms", 12.5), tags={"model": "v1"})
        return "ok"
"""


def test_builtin_metrics_count_requests_and_time_them(simple_project, serve):
    server = serve(simple_project("class PythonPredictor:\n"
                                  "    def __init__(self, config): pass\n"
                                  "    def predict(self, payload): return payload\n"))
    for i in range(7):
        assert server.post("/echo", json={"i": i}).status_code == 200
    for _ in range(2):
        assert server.post("/echo", data=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    r = server.get("/metrics")
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE cortex_latency histogram" in r.text
    assert "# HELP cortex_in_flight_requests " in r.text
    samples = parse_metrics(r.text)
    assert value(samples, "cortex_status_code", api_name="echo", response_code="2XX") == 7
    assert value(samples, "cortex_status_code", api_name="echo", response_code="4XX") == 2
    assert value(samples, "cortex_status_code", api_name="echo", response_code="5XX") == 0
    assert value(samples, "cortex_in_flight_requests", api_name="echo") == 0
    buckets, total, count = histogram(samples, "cortex_latency", api_name="echo")
    assert count == 9
    assert_consistent_histogram(buckets, total, count)
    # Prometheus' default buckets, in milliseconds
    assert [le for le, _ in buckets] == [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, float("inf")]
    assert 0 < total / count < 10000


def test_user_metrics_are_exported_with_tags_as_labels(simple_project, serve):
    server = serve(simple_project(USER_METRICS))
    for _ in range(3):
        assert server.post("/echo", json={}).status_code == 200
    assert server.post("/echo", json={"model": 'v"2\\x\n', "depth": 7, "ms": 3000}).status_code == 200
    samples = parse_metrics(server.get("/metrics").text)
    assert value(samples, "predictions", model="v1") == 3
    assert value(samples, "predictions", model='v"2\\x\n') == 1, "label values are escaped"
    assert value(samples, "predictions_untagged") == 4
    assert value(samples, "queue_depth", queue="main") == 7, "a gauge shows the last value set"
    buckets, total, count = histogram(samples, "inference_time_milliseconds", model="v1")
    assert (total, count) == (3 * 12.5 + 3000, 4)
    assert_consistent_histogram(buckets, total, count)
    assert dict(buckets)[25] == 3 and dict(buckets)[2500] == 3 and dict(buckets)[5000] == 4


def test_metric_names_with_cortex_or_istio_prefix_are_refused_with_cortex_message(simple_project, serve):
    server = serve(simple_project("""
class PythonPredictor:
    def __init__(self, config, metrics_client):
        self.metrics = metrics_client
    def predict(self, payload):
        try:
            getattr(self.metrics, payload["call"])(payload["name"], 1)
        except ValueError as e:
            return str(e)
        return "accepted"
"""))
    for call in ("increment", "gauge", "histogram"):
        for name in ("cortex_latency", "istio_requests_total"):
            r = server.post("/echo", json={"call": call, "name": name})
            assert r.status_code == 200 and r.text == CORTEX_MESSAGE.format(name)
    assert server.post("/echo", json={"call": "increment", "name": "my_cortex_calls"}).text == "accepted"
    assert "istio_requests_total" not in server.get("/metrics").text


def test_increments_from_8_threads_at_once_lose_nothing(simple_project, serve):
    yaml = """
- name: echo
  predictor:
    type: python
    path: predictor.py
    threads_per_process: 8
"""
    server = serve(simple_project("""
import threading
class PythonPredictor:
    def __init__(self, config, metrics_client):
        self.metrics = metrics_client
    def predict(self, payload):
        start = threading.Barrier(8)
        def work():
            start.wait()
            for _ in range(5000):
                self.metrics.increment("work_items")
                self.metrics.increment("work_items_tagged", 2, tags={"kind": "a"})
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        self.metrics.increment("requests_seen")
        return "done"
""", yaml=yaml))
    import requests
    errors = []

    def client():
        with requests.Session() as s:
            for _ in range(3):
                r = s.post(server.url("/echo"), json={}, timeout=60)
                if r.status_code != 200:
                    errors.append(r.status_code)

    clients = [threading.Thread(target=client) for _ in range(8)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(120)
    assert errors == []
    samples = parse_metrics(server.get("/metrics").text)
    assert value(samples, "requests_seen") == 24
    assert value(samples, "work_items") == 24 * 8 * 5000
    assert value(samples, "work_items_tagged", kind="a") == 24 * 8 * 5000 * 2
    assert value(samples, "cortex_status_code", api_name="echo", response_code="2XX") == 24


def test_label_sets_per_metric_are_bounded_with_one_warning(simple_project, serve):
    server = serve(simple_project("""
class PythonPredictor:
    def __init__(self, config, metrics_client):
        for i in range(600):
            metrics_client.increment("per_user", tags={"user": str(i)})
        metrics_client.increment("per_user", tags={"user": "0"})
    def predict(self, payload):
        return "ok"
"""))
    samples = parse_metrics(server.get("/metrics").text)
    per_user = {dict(ls)["user"]: v for (n, ls), v in samples.items() if n == "per_user"}
    assert len(per_user) == 512 and per_user["0"] == 2
    warnings = [l for l in server.log_lines() if l.get("levelname") == "WARNING" and l.get("metric") == "per_user"]
    assert len(warnings) == 1 and "too many label sets" in warnings[0]["message"]


def test_builtin_metrics_can_be_switched_off(simple_project, serve):
    server = serve(simple_project(USER_METRICS), env={"CORTEX_DISABLE_BUILTIN_METRICS": "1"})
    assert server.post("/echo", json={}).status_code == 200
    text = server.get("/metrics").text
    assert "cortex_" not in text and "predictions_untagged 1" in text


def promtool_or_skip():
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (CI installs the Debian package 'prometheus')")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def test_metrics_pass_promtool_check(simple_project, serve):
    promtool = promtool_or_skip()
    server = serve(simple_project("""
class PythonPredictor:
    def __init__(self, config, metrics_client):
        self.metrics = metrics_client
    def predict(self, payload):
        self.metrics.increment("my.dotted-name", tags={"a b": 'q"uo\\\\te\\n', "9lives": "é"})
        self.metrics.gauge("temperature", -1.5e-7, tags={"le": "x"})
        self.metrics.histogram("sizes", 1e12, tags={"le": "not a bound"})
        self.metrics.histogram("sizes", float("nan"))
        return "ok"
"""))
    assert server.post("/echo", json={}).status_code == 200
    assert server.post("/echo", data=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    text = server.get("/metrics").text
    assert 'temperature{le_="x"}' in text, "a tag named le must not pose as a bucket bound"
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    # exit 1: the exposition does not parse.  Exit 3: lint findings; the only one allowed is the
    # "_total" suffix on counters, since cortex_status_code (and user counters) keep Cortex's names.
    problems = [l for l in (done.stdout + done.stderr).splitlines()
                if l.strip() and 'counter metrics should have "_total" suffix' not in l]
    assert done.returncode in (0, 3) and problems == [], f"promtool said:\n{done.stdout}{done.stderr}\n{text}"


def receive_datagrams(sock, want, timeout=10.0):
    """Collects datagrams until every regex in want matched one; returns them all."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(any(re.fullmatch(w, g) for g in got) for w in want):
            return got
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(65536).decode())
        except socket.timeout:
            break
    missing = [w for w in want if not any(re.fullmatch(w, g) for g in got)]
    raise AssertionError(f"no datagram matching {missing}; got {got}")


def test_statsd_receives_dogstatsd_datagrams(simple_project, serve):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = serve(simple_project(USER_METRICS), env={"CORTEX_STATSD_ADDR": f"127.0.0.1:{port}"})
        assert server.post("/echo", json={"model": "v 1|x"}).status_code == 200
        got = receive_datagrams(sock, [
            r"predictions:1\|c\|#model:v_1_x",
            r"predictions_untagged:1\|c",
            r"queue_depth:3\|g\|#queue:main",
            r"inference_time_milliseconds:12\.5\|h\|#model:v1",
            r"cortex_status_code:1\|c\|#api_name:echo,response_code:2XX",
            r"cortex_latency:[0-9.e-]+\|h\|#api_name:echo",
        ])
        assert all("\n" not in g for g in got)


def test_host_ip_sends_statsd_to_port_9125_and_transport_problems_never_raise(simple_project, serve):
    # HOST_IP as Cortex set it: port 9125, where nothing listens here (the datagrams bounce)
    server = serve(simple_project(USER_METRICS), env={"HOST_IP": "127.0.0.1"})
    for _ in range(20):
        assert server.post("/echo", json={}).status_code == 200
    assert "predictions_untagged 20" in server.get("/metrics").text
    # an address that does not resolve: one warning, metrics still recorded
    server = serve(simple_project(USER_METRICS), env={"CORTEX_STATSD_ADDR": "statsd.invalid:9125"})
    assert server.post("/echo", json={}).status_code == 200
    assert "predictions_untagged 1" in server.get("/metrics").text
    assert any("statsd is off" in l.get("message", "") for l in server.log_lines())


def test_metrics_client_works_without_a_server(simple_project):
    root = simple_project(USER_METRICS)
    done = run_cli("predict", root, "--json", "{}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


FORKED = r"""
import os, sys
from cortex_runtime import _core
from cortex_runtime.metrics import MetricsClient
_core.metrics_setup()
_core.metrics_setup()  # idempotent
children = []
for worker in range(3):
    pid = os.fork()
    if pid == 0:
        client = MetricsClient()
        for _ in range(1000):
            client.increment("forked_calls", tags={"via": "fork"})
        client.gauge("last_worker", worker)
        os._exit(0)
    children.append(pid)
for pid in children:
    assert os.waitpid(pid, 0)[1] == 0
sys.stdout.write(_core.metrics_text())
"""


def test_worker_processes_forked_after_setup_share_one_registry():
    import sys
    done = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    samples = parse_metrics(done.stdout)
    assert value(samples, "forked_calls", via="fork") == 3000
    assert value(samples, "last_worker") in (0, 1, 2)


def test_metrics_c_units_are_pure_c():
    for name in ("metrics.c", "metrics.h", "statsd.c", "statsd.h"):
        text = (REPO_ROOT / "csrc" / name).read_text()
        assert "Python.h" not in text and '#include "module.h"' not in text, name


@pytest.mark.skipif(PROCESSES_UNSUPPORTED, reason="processes_per_replica > 1 not implemented yet")
def test_two_worker_processes_show_the_sum(simple_project, serve):
    import requests
    server = serve(simple_project("""
import os
class PythonPredictor:
    def __init__(self, config, metrics_client):
        self.metrics = metrics_client
    def predict(self, payload):
        self.metrics.increment("calls", tags={"pid": "any"})
        return str(os.getpid())
"""), "--processes", "2")
    pids = set()

    def client():
        for _ in range(25):
            r = requests.post(server.url("/echo"), json={}, headers={"Connection": "close"}, timeout=30)
            assert r.status_code == 200
            pids.add(r.text)

    clients = [threading.Thread(target=client) for _ in range(8)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(120)
    for _ in range(10):  # every worker's /metrics shows the same sums
        r = requests.get(server.url("/metrics"), headers={"Connection": "close"}, timeout=30)
        samples = parse_metrics(r.text)
        assert value(samples, "calls", pid="any") == 200
        assert value(samples, "cortex_status_code", api_name="echo", response_code="2XX") == 200
        assert value(samples, "cortex_in_flight_requests", api_name="echo") == 0
        assert histogram(samples, "cortex_latency", api_name="echo")[2] == 200


def test_metrics_client_type_is_importable_from_the_package():
    from cortex_runtime import metrics, metrics_client
    client = metrics_client.MetricsClient()
    assert metrics_client.MetricsClient is metrics.MetricsClient
    client.increment("importable_total")  # a working client, not a stub
    with pytest.raises(ValueError):
        client.increment("cortex_not_allowed")
