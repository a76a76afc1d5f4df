"""AsyncAPI: workloads accepted per second (POST -> 200) and completed per second.

    python bench/asyncapi.py [--duration 5] [--connections 16] [--workloads 3000]

For each store (SQLite with --async-fsync full, SQLite with normal, Redis when redis-server
is on PATH) it starts `serve` on bench/trivial's predictor as an AsyncAPI, pinned to CPU 0:
- accepted/s: wrk (pinned to CPU 1) POSTs {"x":[1,2,3]} for --duration seconds while the
  background worker runs them (the store is written by both, as in production);
- completed/s: a fresh server, --workloads POSTs from 8 client threads with known ids, then
  the time until the last one is `completed` (one process: the queue is FIFO).
Needs Linux, taskset, wrk, 2 CPUs; the numbers describe this machine on this day.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "post.lua")
YAML = """
- name: trivial
  kind: AsyncAPI
  predictor:
    type: python
    path: predictor.py
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project_dir(tmp):
    root = os.path.join(tmp, "project")
    os.makedirs(root, exist_ok=True)
    shutil.copy(os.path.join(HERE, "trivial", "predictor.py"), root)
    with open(os.path.join(root, "cortex.yaml"), "w") as f:
        f.write(YAML)
    return root


def start_serve(project, store_args, tmp):
    port = free_port()
    log = open(os.path.join(tmp, f"serve-{port}.log"), "wb")
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "cortex_runtime", "serve", project,
                             "--port", str(port), "--no-access-log", "--async-max-queue", "10000000",
                             *store_args], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read() == b"ok":
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"serve did not start; see {log.name}")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def accepted_per_s(port, duration, connections):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                          "--latency", "-s", LUA, f"http://127.0.0.1:{port}/trivial"],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)] if p99 else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, p99_ms, int(bad.group(1)) if bad else 0


def completed_per_s(port, workloads):
    import http.client

    ids = [f"bench-{i:07d}" for i in range(workloads)]
    started = time.monotonic()

    def post(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for workload_id in chunk:
            conn.request("POST", "/trivial", body=b'{"x":[1,2,3]}',
                         headers={"Content-Type": "application/json", "X-Request-ID": workload_id})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()

    threads = [threading.Thread(target=post, args=(ids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    last = max(ids)  # the threads interleave: wait for every one, the last-queued first
    for workload_id in [last, *ids]:
        while True:
            body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/trivial/{workload_id}").read())
            if body["status"] in ("completed", "failed"):
                break
            time.sleep(0.005)
    return workloads / (time.monotonic() - started)


def redis_server(tmp):
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(port), "--dir", tmp,
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def flushed(url):
    """Empties the bench's Redis, so every run starts from an empty queue."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"FLUSHALL\r\n")
        s.recv(64)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workloads", type=int, default=3000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cortex-bench-async-") as tmp:
        project = project_dir(tmp)
        stores = [("SQLite, --async-fsync full", lambda d: ["--state-dir", d, "--async-fsync", "full"]),
                  ("SQLite, --async-fsync normal", lambda d: ["--state-dir", d, "--async-fsync", "normal"])]
        redis_proc = None
        if shutil.which("redis-server"):
            redis_proc, url = redis_server(tmp)
            # every run on its own database number: a clean queue
            stores.append(("Redis (appendfsync always)", lambda d, url=url: flushed(url) or ["--async-backend", url]))
        try:
            for label, store_args in stores:
                proc, port = start_serve(project, store_args(tempfile.mkdtemp(dir=tmp)), tmp)
                try:
                    rate, p99, bad = accepted_per_s(port, args.duration, args.connections)
                finally:
                    stop(proc)
                proc, port = start_serve(project, store_args(tempfile.mkdtemp(dir=tmp)), tmp)
                try:
                    done = completed_per_s(port, args.workloads)
                finally:
                    stop(proc)
                rows.append((label, rate, p99, bad, done))
                print(f"{label}: accepted {rate:,.0f}/s (p99 {p99:.2f} ms, non-2xx {bad}), "
                      f"completed {done:,.0f}/s", file=sys.stderr)
        finally:
            if redis_proc:
                redis_proc.terminate()
    print(f"| store | accepted/s (wrk -c{args.connections}) | p99 ms | completed/s (end to end) |")
    print("|---|---:|---:|---:|")
    for label, rate, p99, bad, done in rows:
        print(f"| {label} | {rate:,.0f}{f' ({bad} non-2xx)' if bad else ''} | {p99:.2f} | {done:,.0f} |")


if __name__ == "__main__":
    main()
