"""Throughput and latency of cortex_runtime against FastAPI+uvicorn and granian, in one run.

    python bench/run.py [--duration 10] [--connections 1,16,64] [--runtime-only]
                        [--no-fastapi] [--no-granian] [--chart bench/results.png]

All servers run the same predictor (bench/trivial/predictor.py) pinned to CPU 0;
wrk runs pinned to CPU 1, so the load generator never takes cycles from the
server it measures. Machines like the ones this runs on are noisy from one
minute to the next, so what to read is the ratio between the servers,
measured point by point in the same run, not the absolute numbers.

Needs Linux, `taskset` and `wrk` on PATH, cortex_runtime installed in this
interpreter and, for each peer not skipped, the packages in bench/requirements.txt
(fastapi + uvicorn for the reference, granian for the second peer, matplotlib
for --chart).
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


def peers(args):
    """Which servers this run starts, in the order they are loaded and tabled.

    Accepts the Namespace of parse_args or a smaller one (bench/metrics.py passes
    only runtime_only and reference_only)."""
    if getattr(args, "reference_only", False):
        return ["reference"]
    out = ["runtime"]
    if not getattr(args, "runtime_only", False):
        if not getattr(args, "no_fastapi", False):
            out.append("reference")
        if not getattr(args, "no_granian", False):
            out.append("granian")
    return out


def check_tools(args):
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            raise BenchError(f"'{tool}' is not on PATH (Debian/Ubuntu: apt-get install "
                             f"{'util-linux' if tool == 'taskset' else 'wrk'})")
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs at least 2 CPUs: the server on CPU 0, wrk on CPU 1")
    wanted = peers(args)
    if "runtime" in wanted:
        # A subprocess, from a directory without a cortex_runtime/ in it, so what is
        # checked is the installed package, the one `-m cortex_runtime` will run.
        probe = subprocess.run([sys.executable, "-c", "import cortex_runtime._core"],
                               cwd=HERE, capture_output=True, text=True)
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            raise BenchError(f"cortex_runtime is not importable with {sys.executable} ({last}): "
                             f"pip install -e . (or use --reference-only)")
    if "granian" in wanted and importlib.util.find_spec("granian") is None:
        raise BenchError(f"the granian peer needs granian, missing from {sys.executable}: "
                         f"pip install -r bench/requirements.txt (or use --no-granian)")
    if getattr(args, "chart", None) and importlib.util.find_spec("matplotlib") is None:
        raise BenchError(f"--chart needs matplotlib, missing from {sys.executable}: "
                         f"pip install -r bench/requirements.txt")
    if "reference" in wanted:
        missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
        if missing:
            raise BenchError(f"the reference server needs {', '.join(missing)}, missing from "
                             f"{sys.executable}: pip install -r bench/requirements.txt "
                             f"(or use --no-fastapi)")
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
            if isinstance(record, dict) and record.get("message") in ("listening", "reference",
                                                                       "granian"):
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


def process_tree(pid):
    """pid and every process descending from it (granian runs a supervisor and a worker)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def cpu_and_switches(pid):
    """(CPU seconds, context switches) of the process tree at pid, all threads."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = switches = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            seconds += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            switches += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return seconds, switches


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
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    out["requests"] = int(m.group(1)) if m else None
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


def wrk(url, connections, duration, lua=LUA):
    """wrk's output for one point; lua=None sends plain GETs."""
    argv = ["taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
            "--latency", *(["-s", lua] if lua else []), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def measure_point(server, connections, duration):
    """wrk's raw output and its parse for one point, with the server's CPU (cpu_us) and
    context switches (switches) per request over it."""
    cpu_before, switches_before = cpu_and_switches(server.proc.pid)
    text = wrk(server.url, connections, duration)
    cpu_after, switches_after = cpu_and_switches(server.proc.pid)
    if not server.alive():
        raise BenchError(f"{server.name} died under load:\n" + server.tail())
    got = parse_wrk(text)
    served = max(got["requests"] or got["rps"] * duration, 1)
    got["cpu_us"] = (cpu_after - cpu_before) * 1e6 / served
    got["switches"] = (switches_after - switches_before) / served
    return text, got


def fmt(x, digits):
    return "—" if x is None else f"{x:,.{digits}f}"


NAMES = {"runtime": "cortex_runtime", "reference": "FastAPI+uvicorn", "granian": "granian"}
RATIO_HEADS = {"reference": "runtime ÷ FastAPI", "granian": "runtime ÷ granian"}


def table(rows):
    """rows: [(connections, {key: parse_wrk result or None})], keys as in peers()."""
    keys = [k for k in NAMES if any(got.get(k) for _, got in rows)]
    ratios = [k for k in RATIO_HEADS if "runtime" in keys and k in keys]
    head = ["connections"]
    for k in keys:
        head += [f"{NAMES[k]} req/s", "p50 ms", "p99 ms"]
    head += [RATIO_HEADS[k] for k in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n, got in rows:
        cells = [str(n)]
        for k in keys:
            res = got.get(k)
            cells += [fmt(res and res["rps"], 0), fmt(res and res["p50_ms"], 2),
                      fmt(res and res["p99_ms"], 2)]
        for k in ratios:
            rt, peer = got.get("runtime"), got.get(k)
            cells.append(f"{rt['rps'] / peer['rps']:.2f}×" if rt and peer else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_table(rows):
    """Server CPU time (all its threads and processes, from /proc) per request served, and
    context switches per request, per server and point."""
    keys = [k for k in NAMES if any(got.get(k) for _, got in rows)]
    head = "| connections | " + " | ".join(f"{NAMES[k]} CPU µs/req | cs/req" for k in keys) + " |"
    lines = [head, "|---:|" + "---:|---:|" * len(keys)]
    for n, got in rows:
        cells = []
        for k in keys:
            r = got.get(k)
            cells += [fmt(r and r.get("cpu_us"), 1), fmt(r and r.get("switches"), 2)]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(rows, path, subtitle=""):
    """requests/s and p99 per server against connections, two panels, one small PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in NAMES if any(got.get(k) for _, got in rows)]
    conns = [n for n, _ in rows]
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=90)
    width = 0.8 / max(len(keys), 1)
    colors = {"runtime": "#1f77b4", "reference": "#ff7f0e", "granian": "#2ca02c"}
    for i, k in enumerate(keys):
        xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(conns))]
        rps = [got[k]["rps"] if got.get(k) else 0 for _, got in rows]
        p99 = [got[k]["p99_ms"] if got.get(k) else 0 for _, got in rows]
        ax_rps.bar(xs, rps, width, label=NAMES[k], color=colors[k])
        ax_p99.bar(xs, p99, width, label=NAMES[k], color=colors[k])
    for ax, title, unit in ((ax_rps, "requests/s (higher is better)", "req/s"),
                            (ax_p99, "p99 latency (lower is better)", "ms")):
        ax.set_xticks(range(len(conns)), [str(n) for n in conns])
        ax.set_xlabel("connections")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    ax_rps.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax_rps.legend(fontsize=8, loc="upper left")
    fig.suptitle("trivial JSON predictor, one process on one core" +
                 (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
                       help="skip both peers, FastAPI+uvicorn and granian (neither needed)")
    which.add_argument("--reference-only", action="store_true",
                       help="skip cortex_runtime and granian (to check the reference on its own)")
    p.add_argument("--no-fastapi", action="store_true",
                   help="skip the FastAPI+uvicorn reference (no fastapi needed)")
    p.add_argument("--no-granian", action="store_true",
                   help="skip the granian peer (no granian needed)")
    p.add_argument("--chart", metavar="PNG",
                   help="also write a chart of req/s and p99 per server (needs matplotlib)")
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
    wanted = peers(args)
    commands = {
        "runtime": [sys.executable, "-m", "cortex_runtime", "serve", PROJECT, "--no-access-log"],
        "reference": [sys.executable, os.path.join(HERE, "reference_fastapi.py")],
        "granian": [sys.executable, os.path.join(HERE, "granian_app.py")],
    }
    servers = {}
    for key in wanted:
        port = free_port()
        servers[key] = Server(NAMES[key], commands[key] + ["--port", str(port)],
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
        if "granian" in servers:
            info = servers["granian"].info
            print(f"# granian {info.get('version', '?')}: ASGI, 1 worker, 1 runtime thread, "
                  f"loop={info.get('loop', '?')}")
        print(f"# {args.duration} s per point; servers on CPU {SERVER_CPU}, wrk on CPU {WRK_CPU}",
              flush=True)
        # Alternating servers point by point spreads any drift of the machine over
        # both columns instead of putting it all into one.
        for n in args.connections:
            got = {}
            for key, s in servers.items():
                text, got[key] = measure_point(s, n, args.duration)
                raw.append(f"## {s.name}, {n} connections\n{text}")
                err = got[key]["errors"]
                print(f"  {s.name:16} c={n:<4} {got[key]['rps']:>10,.0f} req/s  "
                      f"p50 {got[key]['p50_ms']:.2f} ms  p99 {got[key]['p99_ms']:.2f} ms  "
                      f"CPU {got[key]['cpu_us']:.1f} µs/req  {got[key]['switches']:.2f} cs/req"
                      + (f"  ERRORS: {', '.join(err)}" if err else ""), flush=True)
            rows.append((n, got))
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
    print()
    print(cpu_table(rows))
    if any(r and r["errors"] for _, got in rows for r in got.values()):
        print("\nwarning: some points had errors (see above); their numbers are not comparable",
              file=sys.stderr)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(RESULTS, f"{stamp}.md"), "w") as f:
        f.write(f"# {describe_machine()}\n\n{table(rows)}\n\n{cpu_table(rows)}\n\n" + "\n".join(raw))
    print(f"\nraw wrk output: {os.path.relpath(os.path.join(RESULTS, stamp + '.md'))}")
    if args.chart:
        machine = describe_machine().split(" Copyright")[0].split(" [")[0]
        chart(rows, args.chart, f"{machine}, {args.duration} s per point")
        print(f"chart: {args.chart} ({os.path.getsize(args.chart) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
