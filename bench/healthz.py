"""/healthz and /metrics latency while predict() keeps the CPU (and the GIL) busy, in one run.

    python bench/healthz.py [--duration 10] [--rate 200] [--busy-ms 50] [--server-cpus 0]

One `python -m cortex_runtime serve` of a predictor that spins in pure Python for
--busy-ms per call (holding the GIL all along), pinned to CPU 0 with everything
else of this script on CPU 1 (bench/run.py's helpers; --server-cpus 0,1 lets the
server use both cores, as a two-core replica would). Three phases, each
--duration seconds:

- idle: nobody calls predict; /healthz and /metrics are probed;
- busy: one client keeps predict running back to back (a new call as soon as
  the last one is answered), while /healthz and /metrics are probed;
- busy, closed loop: the same, with wrk hammering /healthz over 4 connections
  as fast as it answers (not what a health checker does: it makes the I/O
  thread CPU-bound too, so the two threads share the core's time slices).

A probe is what a load balancer or kubelet does, only much more often: /healthz
and then /metrics, each on its own keep-alive connection, one GET every 1/--rate
seconds (open loop: the next one is sent on schedule, not when the last answer
came), each timed from send to the last byte of the answer; the busy client is a
process of its own, so nothing else in the prober competes for its GIL. The table gives p50, p99 and max in ms per phase and
path; the target is p99 <= 1 ms while busy.
"""
import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
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


BUSY_CLIENT = """
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
calls = 0
try:
    while True:
        conn.request("POST", "/spin", body=b"{}", headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        calls += 1
except KeyboardInterrupt:
    print(calls)
"""


class Busy:
    """Keeps predict running: a new POST as soon as the last one is answered.  Its own
    process, so its wake-ups never hold this one's GIL while a probe is timed."""

    def __init__(self, port):
        self.port = port
        self.calls = 0
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(["taskset", "-c", bench_run.WRK_CPU, sys.executable, "-c",
                                      BUSY_CLIENT, str(self.port)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        self.calls = int(out.strip() or 0)


def probe_both(port, duration, rate):
    """/healthz, then /metrics, each probed for duration at rate by this one thread."""
    return {path: probe(port, path, duration, rate) for path in ("/healthz", "/metrics")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="probes per second per path")
    parser.add_argument("--busy-ms", type=float, default=50.0, help="CPU time of one predict call")
    parser.add_argument("--server-cpus", default=bench_run.SERVER_CPU,
                        help=f"taskset CPU list for the server (default {bench_run.SERVER_CPU}: one core "
                             f"for predict and the I/O thread; 0,1: a two-core replica)")
    args = parser.parse_args(argv)
    bench_run.SERVER_CPU = args.server_cpus
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
                wrk_result = bench_run.parse_wrk(
                    bench_run.wrk(f"http://127.0.0.1:{port}/healthz", 4, int(args.duration), lua=None))
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
