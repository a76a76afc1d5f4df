"""Throughput and latency of cortex_runtime against FastAPI+uvicorn, in one run.

    python bench/run.py [--duration 10] [--connections 1,16,64] [--runtime-only]

Both servers run the same predictor (bench/trivial/predictor.py) pinned to CPU 0;
wrk runs pinned to CPU 1, so the load generator never takes cycles from the
server it measures. Machines like the ones this runs on are noisy from one
minute to the next, so what to read is the ratio between the two servers,
measured point by point in the same run, not the absolute numbers.

Needs Linux, `taskset` and `wrk` on PATH, cortex_runtime installed in this
interpreter and, unless --runtime-only, the packages in bench/requirements.txt.
"""
import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.join(HERE, "trivial")
LUA = os.path.join(HERE, "post.lua")
RESULTS = os.path.join(HERE, "results")
BODY = b'{"x":[1,2,3]}'
EXPECTED = b'{"y": 6}'
SERVER_CPU = "0"
WRK_CPU = "1"
START_TIMEOUT_S = 60
WARMUP_S = 2


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_tools(args):
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            raise BenchError(f"'{tool}' is not on PATH (Debian/Ubuntu: apt-get install "
                             f"{'util-linux' if tool == 'taskset' else 'wrk'})")
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs at least 2 CPUs: the server on CPU 0, wrk on CPU 1")
    if not args.reference_only:
        # A subprocess, from a directory without a cortex_runtime/ in it, so what is
        # checked is the installed package, the one `-m cortex_runtime` will run.
        probe = subprocess.run([sys.executable, "-c", "import cortex_runtime._core"],
                               cwd=HERE, capture_output=True, text=True)
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            raise BenchError(f"cortex_runtime is not importable with {sys.executable} ({last}): "
                             f"pip install -e . (or use --reference-only)")
    if not args.runtime_only:
        missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
        if missing:
            raise BenchError(f"the reference server needs {', '.join(missing)}, missing from "
                             f"{sys.executable}: pip install -r bench/requirements.txt "
                             f"(or use --runtime-only)")
        slow = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is None]
        if slow:
            print(f"warning: {', '.join(slow)} missing: the reference falls back to "
                  f"asyncio/h11 and will be slower than what Cortex ran", file=sys.stderr)


class Server:
    """One server process pinned to SERVER_CPU, its output drained in the background."""

    def __init__(self, name, argv, url):
        self.name = name
        self.url = url
        self.argv = ["taskset", "-c", SERVER_CPU, *argv]
        self.proc = None
        self.lines = []
        self.listening = threading.Event()
        self.info = {}

    def start(self):
        # cwd=HERE: keeps the source tree's cortex_runtime/ off sys.path, see check_tools.
        self.proc = subprocess.Popen(self.argv, cwd=HERE, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        healthz = self.url.rsplit("/", 1)[0] + "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} during "
                                 f"start-up:\n" + self.tail())
            if self.listening.wait(0.1) or http_status(healthz) == 200:
                return
        raise BenchError(f"{self.name} did not report ready within {START_TIMEOUT_S} s:\n"
                         + self.tail())

    def _drain(self):
        # Always read, so a chatty server never blocks on a full pipe mid-run.
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            del self.lines[:-200]
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("message") in ("listening", "reference"):
                self.info.update(record)
                if record["message"] == "listening":
                    self.listening.set()

    def tail(self, n=30):
        return "\n".join("    " + line for line in self.lines[-n:])

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if not self.alive():
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed"


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def verify(server):
    req = urllib.request.Request(server.url, data=BODY, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except OSError as e:
        raise BenchError(f"{server.name}: POST {server.url} failed: {e}")
    if status != 200 or body != EXPECTED:
        raise BenchError(f"{server.name}: POST {server.url} answered {status} {body[:200]!r}, "
                         f"expected 200 {EXPECTED!r}")


UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text):
    """wrk --latency output -> {rps, p50_ms, p99_ms, errors}; raises if it is not there."""
    out = {}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m:
        raise BenchError("no Requests/sec line in wrk's output:\n" + text)
    out["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        if not m:
            raise BenchError(f"no {pct}% latency line in wrk's output:\n" + text)
        out[f"p{pct}_ms"] = float(m.group(1)) * UNIT_MS[m.group(2)]
    errors = []
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errors.append(f"{m.group(1)} non-2xx")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += [f"{n} {kind}" for kind, n in
                   zip(("connect", "read", "write", "timeout"), m.groups()) if n != "0"]
    out["errors"] = errors
    return out


def wrk(url, connections, duration):
    argv = ["taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
            "--latency", "-s", LUA, url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def fmt(x, digits):
    return "—" if x is None else f"{x:,.{digits}f}"


def table(rows):
    head = ("| connections | cortex_runtime req/s | p50 ms | p99 ms "
            "| FastAPI+uvicorn req/s | p50 ms | p99 ms | ratio |")
    lines = [head, "|" + "---:|" * 8]
    for n, rt, ref in rows:
        ratio = rt["rps"] / ref["rps"] if rt and ref else None
        cells = [str(n)]
        for res in (rt, ref):
            cells += [fmt(res and res["rps"], 0), fmt(res and res["p50_ms"], 2),
                      fmt(res and res["p99_ms"], 2)]
        cells.append("—" if ratio is None else f"{ratio:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_machine():
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    first = (wrk_version.stdout + wrk_version.stderr).strip().splitlines()
    return (f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{first[0] if first else 'wrk'}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per point (default 10)")
    p.add_argument("--connections", default="1,16,64",
                   help="comma-separated connection counts (default 1,16,64)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--runtime-only", action="store_true",
                       help="skip the FastAPI+uvicorn reference (no fastapi needed)")
    which.add_argument("--reference-only", action="store_true",
                       help="skip cortex_runtime (to check the reference on its own)")
    args = p.parse_args(argv)
    try:
        args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        p.error(f"--connections: expected numbers like 1,16,64, got {args.connections!r}")
    if not args.connections or min(args.connections) < 1 or args.duration < 1:
        p.error("--connections and --duration must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        check_tools(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    servers = {}
    if not args.reference_only:
        port = free_port()
        servers["runtime"] = Server(
            "cortex_runtime",
            [sys.executable, "-m", "cortex_runtime", "serve", PROJECT, "--port", str(port),
             "--no-access-log"],
            f"http://127.0.0.1:{port}/trivial")
    if not args.runtime_only:
        port = free_port()
        servers["reference"] = Server(
            "FastAPI+uvicorn",
            [sys.executable, os.path.join(HERE, "reference_fastapi.py"), "--port", str(port)],
            f"http://127.0.0.1:{port}/trivial")

    raw = []
    rows = []
    try:
        for s in servers.values():
            s.start()
            verify(s)
            wrk(s.url, 16, WARMUP_S)
        print(f"# {describe_machine()}", flush=True)
        if "reference" in servers:
            info = servers["reference"].info
            print(f"# reference: loop={info.get('loop', '?')} http={info.get('http', '?')}")
        print(f"# {args.duration} s per point; servers on CPU {SERVER_CPU}, wrk on CPU {WRK_CPU}",
              flush=True)
        # Alternating servers point by point spreads any drift of the machine over
        # both columns instead of putting it all into one.
        for n in args.connections:
            got = {}
            for key, s in servers.items():
                text = wrk(s.url, n, args.duration)
                if not s.alive():
                    raise BenchError(f"{s.name} died under load:\n" + s.tail())
                raw.append(f"## {s.name}, {n} connections\n{text}")
                got[key] = parse_wrk(text)
                err = got[key]["errors"]
                print(f"  {s.name:16} c={n:<4} {got[key]['rps']:>10,.0f} req/s  "
                      f"p50 {got[key]['p50_ms']:.2f} ms  p99 {got[key]['p99_ms']:.2f} ms"
                      + (f"  ERRORS: {', '.join(err)}" if err else ""), flush=True)
            rows.append((n, got.get("runtime"), got.get("reference")))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        for s in servers.values():
            code = s.stop()
            if code not in (None, 0, -signal.SIGTERM):
                print(f"warning: {s.name} exited with {code} on SIGTERM", file=sys.stderr)

    print()
    print(table(rows))
    if any(r and r["errors"] for _, *pair in rows for r in pair):
        print("\nwarning: some points had errors (see above); their numbers are not comparable",
              file=sys.stderr)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(RESULTS, f"{stamp}.md"), "w") as f:
        f.write(f"# {describe_machine()}\n\n{table(rows)}\n\n" + "\n".join(raw))
    print(f"\nraw wrk output: {os.path.relpath(os.path.join(RESULTS, stamp + '.md'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
