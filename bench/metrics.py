"""What metrics cost: metrics_client.increment next to a dict update, and throughput with the
built-in request metrics on vs off, in one run.

    python bench/metrics.py [--duration 5] [--rounds 3] [--connections 16,64]

(a) runs in this process (cortex_runtime must be importable).  (b) starts two servers on the
same trivial project (bench/trivial), one with CORTEX_DISABLE_BUILTIN_METRICS=1, both pinned to
CPU 0 with wrk on CPU 1 as bench/run.py does (its helpers are reused), and loads them
alternately, point by point and round by round; the table shows the median of the rounds.
Needs Linux, taskset and wrk, like bench/run.py.
"""
import argparse
import os
import statistics
import sys
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench_run  # noqa: E402  (bench/run.py: Server, wrk, parse_wrk, ...)


def microbenchmark(number=1_000_000, repeat=5):
    from cortex_runtime.metrics import MetricsClient

    client = MetricsClient()
    tags = {"model": "v1"}
    counts = {}
    cases = [
        ("empty loop (subtracted from the others)", "pass"),
        ('dict update: d["hits"] = d.get("hits", 0) + 1', 'd["hits"] = d.get("hits", 0) + 1'),
        ('metrics_client.increment("hits")', 'client.increment("hits")'),
        ('metrics_client.increment("hits", tags={"model": "v1"})', 'client.increment("hits", tags=tags)'),
        ('metrics_client.gauge("depth", 3)', 'client.gauge("depth", 3)'),
        ('metrics_client.histogram("ms", 12.5)', 'client.histogram("ms", 12.5)'),
    ]
    env = {"client": client, "tags": tags, "d": counts}
    results = []
    for label, stmt in cases:
        best = min(timeit.repeat(stmt, number=number, repeat=repeat, globals=env)) / number
        results.append((label, best))
    base = results[0][1]
    lines = ["| call | ns per call |", "|---|---:|"]
    for label, t in results[1:]:
        lines.append(f"| `{label}` | {(t - base) * 1e9:.0f} |")
    return "\n".join(lines)


def throughput(duration, rounds, connections):
    port_on, port_off = bench_run.free_port(), bench_run.free_port()

    def server(name, port):
        return bench_run.Server(name, [sys.executable, "-m", "cortex_runtime", "serve", bench_run.PROJECT,
                                       "--port", str(port), "--no-access-log"],
                                f"http://127.0.0.1:{port}/trivial")

    on, off = server("metrics on", port_on), server("metrics off", port_off)
    on.start()
    os.environ["CORTEX_DISABLE_BUILTIN_METRICS"] = "1"  # inherited by the second server only
    try:
        off.start()
    finally:
        del os.environ["CORTEX_DISABLE_BUILTIN_METRICS"]
    got = {(n, s.name): [] for n in connections for s in (on, off)}
    try:
        for s in (on, off):
            bench_run.verify(s)
            bench_run.wrk(s.url, 16, bench_run.WARMUP_S)
        for r in range(rounds):
            for n in connections:
                for s in ((on, off) if r % 2 == 0 else (off, on)):
                    result = bench_run.parse_wrk(bench_run.wrk(s.url, n, duration))
                    if result["errors"]:
                        print(f"  {s.name} c={n}: ERRORS {', '.join(result['errors'])}", file=sys.stderr)
                    got[(n, s.name)].append(result["rps"])
                    print(f"  round {r + 1} {s.name:12} c={n:<3} {result['rps']:>10,.0f} req/s", flush=True)
    finally:
        on.stop()
        off.stop()
    lines = ["| connections | built-in metrics on req/s | off req/s | on ÷ off |", "|---:|---:|---:|---:|"]
    for n in connections:
        a = statistics.median(got[(n, on.name)])
        b = statistics.median(got[(n, off.name)])
        lines.append(f"| {n} | {a:,.0f} | {b:,.0f} | {a / b:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per point (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all points (default 3)")
    p.add_argument("--connections", default="16,64", help="comma-separated (default 16,64)")
    p.add_argument("--micro-only", action="store_true", help="only the in-process microbenchmark")
    args = p.parse_args(argv)
    connections = [int(c) for c in args.connections.split(",") if c.strip()]

    print("## metrics_client microbenchmark (best of 5 x 1,000,000 calls, statsd off)\n")
    print(microbenchmark(), flush=True)
    if args.micro_only:
        return 0
    ns = argparse.Namespace(reference_only=False, runtime_only=True)
    try:
        bench_run.check_tools(ns)
        print(f"\n# {bench_run.describe_machine()}", flush=True)
        table = throughput(args.duration, args.rounds, connections)
    except bench_run.BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\n## throughput, built-in metrics on vs off (median of {args.rounds} rounds, "
          f"{args.duration} s per point)\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
