"""/healthz and /metrics latency while predict() keeps the CPU (and the GIL) busy, in one run.

    python bench/healthz.py [--duration 10] [--rate 200] [--busy-ms 50]

One `python -m cortex_runtime serve` of a predictor that spins in pure Python for
--busy-ms per call (holding the GIL all along), pinned to CPU 0 with everything
else of this script on CPU 1 (bench/run.py's helpers). Three phases, each
--duration seconds:

- idle: nobody calls predict; /healthz and /metrics are probed;
- busy: one client keeps predict running back to back (a new call as soon as
  the last one is answered), while /healthz and /metrics are probed;
- busy, closed loop: the same, with wrk hammering /healthz over 4 connections
  as fast as it answers (not what a health checker does: it makes the I/O
  thread CPU-bound too, so the two threads share the core's time slices).

A probe is what a load balancer or kubelet does, only much more often: one
keep-alive connection, one GET every 1/--rate seconds (open loop: the next one is
sent on schedule, not when the last answer came), each timed from send to the
last byte of the answer. The table gives p50, p99 and max in ms per phase and
path; the target is p99 <= 1 ms while busy.
"""
import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench_run  # noqa: E402  (bench/run.py: Server, wrk, parse_wrk, ...)

SPINNER = """
import time
class PythonPredictor:
    def __init__(self, config):
        self.seconds = config["busy_ms"] / 1000.0
    def predict(self, payload):
        end = time.perf_counter() + self.seconds
        n = 0
        while time.perf_counter() < end:  # pure Python: the GIL is held throughout
            n += 1
        return n
"""
TARGET_MS = 1.0


def make_project(root, busy_ms):
    with open(os.path.join(root, "predictor.py"), "w") as f:
        f.write(SPINNER)
    with open(os.path.join(root, "cortex.yaml"), "w") as f:
        f.write("- name: spin\n  predictor:\n    type: python\n    path: predictor.py\n"
                f"    config:\n      busy_ms: {busy_ms}\n")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def probe(port, path, duration, rate):
    """Latencies in ms of GET path, one every 1/rate s on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    interval = 1.0 / rate
    latencies = []
    next_at = time.perf_counter()
    end = next_at + duration
    while next_at < end:
        now = time.perf_counter()
        if now < next_at:
            time.sleep(next_at - now)
        sent = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise bench_run.BenchError(f"GET {path} answered {r.status}")
        latencies.append((time.perf_counter() - sent) * 1000.0)
        next_at += interval
    conn.close()
    return latencies


class Busy:
    """Keeps predict running: a new POST as soon as the last one is answered."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.calls = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            conn.request("POST", "/spin", body=b"{}", headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            self.calls += 1
        conn.close()

    def __enter__(self):
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def probe_both(port, duration, rate):
    """/healthz and /metrics probed at the same time, each at rate."""
    results = {}

    def one(path):
        results[path] = probe(port, path, duration, rate)

    threads = [threading.Thread(target=one, args=(p,)) for p in ("/healthz", "/metrics")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def closed_loop(url, duration):
    argv = ["taskset", "-c", bench_run.WRK_CPU, "wrk", "-t1", "-c4", f"-d{duration}s", "--latency", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise bench_run.BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return bench_run.parse_wrk(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="probes per second per path")
    parser.add_argument("--busy-ms", type=float, default=50.0, help="CPU time of one predict call")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {int(bench_run.WRK_CPU)})
    rows = []
    with tempfile.TemporaryDirectory() as root:
        make_project(root, args.busy_ms)
        port = bench_run.free_port()
        server = bench_run.Server("cortex_runtime", [sys.executable, "-m", "cortex_runtime", "serve", root,
                                                     "--port", str(port), "--no-access-log"],
                                  f"http://127.0.0.1:{port}/spin")
        server.start()
        try:
            for path, lat in probe_both(port, args.duration, args.rate).items():
                rows.append(("idle", path, lat))
            with Busy(port) as busy:
                for path, lat in probe_both(port, args.duration, args.rate).items():
                    rows.append(("busy", path, lat))
                calls = busy.calls
            with Busy(port):
                wrk_result = closed_loop(f"http://127.0.0.1:{port}/healthz", int(args.duration))
        finally:
            server.stop()
    print(f"predict: {args.busy_ms:g} ms of pure-Python CPU per call, {calls} calls during the busy "
          f"probes; probes: {args.rate:g}/s per path, {args.duration:g} s per phase; server on CPU "
          f"{bench_run.SERVER_CPU}, clients on CPU {bench_run.WRK_CPU}\n")
    print("| phase | path | probes | p50 ms | p99 ms | max ms | p99 ≤ 1 ms |")
    print("|---|---|---:|---:|---:|---:|:---:|")
    for phase, path, lat in rows:
        p99 = percentile(lat, 99)
        print(f"| {phase} | `{path}` | {len(lat)} | {percentile(lat, 50):.3f} | {p99:.3f} | "
              f"{max(lat):.3f} | {'yes' if p99 <= TARGET_MS else '**no**'} |")
    print(f"| busy, wrk -c4 closed loop | `/healthz` | {wrk_result['rps']:,.0f}/s | "
          f"{bench_run.fmt(wrk_result.get('p50_ms'), 3)} | {bench_run.fmt(wrk_result.get('p99_ms'), 3)} | "
          f"— | (not a probe) |")


if __name__ == "__main__":
    try:
        main()
    except bench_run.BenchError as e:
        sys.exit(f"error: {e}")
