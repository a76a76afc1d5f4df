"""What a request costs in libmicrohttpd and the kernel alone, next to cortex_runtime, in one run.

    python bench/mhd_floor.py            # --duration 4 --rounds 3 --connections 16,64

Three servers answer bench/run.py's POST {"x":[1,2,3]} with {"y": 6}, each pinned to CPU 0
with wrk on CPU 1 (bench/run.py's helpers), loaded in turn, the order flipped every round:

- inline: mhd_floor/inline.c, libmicrohttpd's own epoll thread answering a constant from
  the access handler: the floor of any libmicrohttpd server on this machine;
- suspend: mhd_floor/suspend.c, the same plus what answering from another thread needs:
  every request suspended in the handler and resumed after the loop's round (by the same
  thread, at once: no threads, no queue, no Python);
- cortex_runtime: `serve bench/trivial`, which suspends every POST, hands it to the
  Python thread and resumes it when predict has answered.

Server CPU per request is the server's utime + stime from /proc over the point divided by
the requests wrk counted; the table shows the median of the rounds.  Needs a C compiler
and libmicrohttpd's headers (pkg-config libmicrohttpd), wrk and taskset.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench_run  # noqa: E402  (bench/run.py: Server, measure_point, ...)

SOURCES = ("inline", "suspend")


def build(workdir):
    """{name: path} of the two C servers, compiled into workdir."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmicrohttpd"], check=True,
                           capture_output=True, text=True).stdout.split()
    built = {}
    for name in SOURCES:
        out = os.path.join(workdir, name)
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall",
                        "-Wextra", "-Werror", "-o", out, os.path.join(HERE, "mhd_floor", f"{name}.c"),
                        *flags], check=True)
        built[name] = out
    return built


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=4, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="16,64")
    args = parser.parse_args(argv)
    connections = [int(c) for c in args.connections.split(",")]
    for tool in ("wrk", "taskset", "pkg-config"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found")
    workdir = tempfile.mkdtemp(prefix="mhd-floor-")
    servers = []
    try:
        binaries = build(workdir)
        for name in SOURCES:
            port = bench_run.free_port()
            servers.append(bench_run.Server(name, [binaries[name], str(port)],
                                            f"http://127.0.0.1:{port}/trivial"))
        port = bench_run.free_port()
        servers.append(bench_run.Server("cortex_runtime", [sys.executable, "-m", "cortex_runtime", "serve",
                                                           bench_run.PROJECT, "--port", str(port),
                                                           "--no-access-log"],
                                        f"http://127.0.0.1:{port}/trivial"))
        for server in servers:
            server.start()
            bench_run.verify(server)
            bench_run.wrk(server.url, 16, bench_run.WARMUP_S)
        got = {}
        for r in range(args.rounds):
            for n in connections:
                for server in (servers if r % 2 == 0 else servers[::-1]):
                    _, point = bench_run.measure_point(server, n, args.duration)
                    if point["errors"]:
                        print(f"  {server.name} c={n}: ERRORS {', '.join(point['errors'])}", file=sys.stderr)
                    got.setdefault((n, server.name), []).append(point)
                    print(f"  round {r + 1} {server.name:15} c={n:<3} {point['rps']:>10,.0f} req/s "
                          f"{point['cpu_us']:6.2f} µs/req", flush=True)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("| connections | server | req/s | server CPU µs/req | cs/req |")
    print("|---:|---|---:|---:|---:|")
    for n in connections:
        for server in servers:
            points = got[(n, server.name)]
            print(f"| {n} | {server.name} | {statistics.median(p['rps'] for p in points):,.0f} | "
                  f"{statistics.median(p['cpu_us'] for p in points):.2f} | "
                  f"{statistics.median(p['switches'] for p in points):.2f} |")


if __name__ == "__main__":
    main()
