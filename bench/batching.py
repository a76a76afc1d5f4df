"""Server-side batching against no batching, for a numpy matrix product per sample, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/batching.py
        [--duration 5] [--connections 64] [--hidden 256] [--dim 256] [--rounds 1]

The same predictor (bench/matmul/predictor.py: a seeded float32 (hidden, dim)
weight times the sample's dim-vector, argmax/max/norm back) is served twice by
`python -m cortex_runtime serve`, both pinned to CPU 0 with wrk on CPU 1 through
bench/run.py's helpers:

- unbatched: threads_per_process 1, predict gets one array and does one
  matrix-vector product;
- batched: threads_per_process 1 and server_side_batching {max_batch_size 32,
  batch_interval 5ms}; predict gets the list of arrays and stacks them into one
  (batch, dim) @ (dim, hidden) product.

wrk POSTs one fixed JSON array of `dim` floats (seeded), at 64 connections by
default; the two servers are loaded alternately, a 2 s warm-up each first. Each
server is checked once before loading (its answer must match numpy's, computed
here), and after loading the batched one is sent 64 concurrent requests to show
the batch sizes it forms. The servers run with OPENBLAS_NUM_THREADS=1 (they are
pinned to one core; more BLAS threads would only fight over it).
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench_run  # noqa: E402  (bench/run.py: Server, wrk, parse_wrk, ...)

PREDICTOR = os.path.join(HERE, "matmul", "predictor.py")
MAX_BATCH = 32
INTERVAL = "5ms"


def sample(dim, seed):
    import random
    rng = random.Random(seed)
    return [round(rng.uniform(-1, 1), 4) for _ in range(dim)]


def project(root, name, config, batching):
    """A one-API project directory: bench/matmul/predictor.py and a cortex.yaml."""
    os.makedirs(root)
    shutil.copy(PREDICTOR, os.path.join(root, "predictor.py"))
    lines = [f"- name: {name}", "  kind: RealtimeAPI", "  predictor:", "    type: python",
             "    path: predictor.py", "    threads_per_process: 1"]
    if batching:
        lines += ["    server_side_batching:", f"      max_batch_size: {MAX_BATCH}",
                  f"      batch_interval: {INTERVAL}"]
    lines += ["    config:"] + [f"      {k}: {json.dumps(v)}" for k, v in config.items()]
    with open(os.path.join(root, "cortex.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


def expected(x, hidden, dim, seed):
    import numpy as np
    sys.path.insert(0, os.path.dirname(PREDICTOR))
    import predictor as matmul
    y = np.asarray(x, dtype=np.float32) @ np.ascontiguousarray(matmul.weights(hidden, dim, seed).T)
    return int(y.argmax()), float(y.max()), float(np.sqrt(y @ y))


def post(url, body):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())


def verify(server, body, want):
    try:
        status, got = post(server.url, body)
    except OSError as e:
        raise bench_run.BenchError(f"{server.name}: POST {server.url} failed: {e}")
    argmax, top, norm = want
    if (status != 200 or got.get("argmax") != argmax or not math.isclose(got["max"], top, rel_tol=1e-4)
            or not math.isclose(got["norm"], norm, rel_tol=1e-4)):
        raise bench_run.BenchError(f"{server.name}: answered {status} {got!r}, expected "
                                   f"argmax {argmax}, max {top:.6g}, norm {norm:.6g}")


def numpy_ceiling(x, config, seconds=2.0):
    """What batching can gain at best: the predictor's own predict() timed in this process
    (no server, no JSON) on CPU SERVER_CPU, one sample per call against MAX_BATCH samples
    per call.  Returns (µs per sample unbatched, µs per sample batched)."""
    import time
    sys.path.insert(0, os.path.dirname(PREDICTOR))
    import predictor as matmul
    single = matmul.PythonPredictor({**config, "batched": False})
    batched = matmul.PythonPredictor({**config, "batched": True})
    batch = [x] * MAX_BATCH
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(bench_run.SERVER_CPU)})
    try:
        def per_call(fn):
            fn()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                fn()
                n += 1
            return (time.perf_counter() - start) / n
        one = per_call(lambda: single.predict(x))
        many = per_call(lambda: batched.predict(batch)) / MAX_BATCH
    finally:
        os.sched_setaffinity(0, before)
    return one * 1e6, many * 1e6


def batch_sizes(server, body, n=64):
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda _: post(server.url, body)[1], range(n)))
    return sorted((a["batch_size"] for a in answers), reverse=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per point (default 5)")
    p.add_argument("--connections", default="64", help="comma-separated (default 64)")
    p.add_argument("--hidden", type=int, default=256, help="rows of the weight (default 256)")
    p.add_argument("--dim", type=int, default=256, help="floats per sample (default 256)")
    p.add_argument("--rounds", type=int, default=1,
                   help="times to load both servers, order flipped each round (default 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    if not args.connections or min(args.connections) < 1 or args.duration < 1 or args.rounds < 1:
        p.error("--connections, --duration and --rounds must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var}={os.environ[var]} is set and can slow numpy down; run with "
                  f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE", file=sys.stderr)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        bench_run.check_tools(argparse.Namespace(reference_only=False, runtime_only=True))
        import numpy  # noqa: F401
    except ImportError:
        print("error: needs numpy: pip install numpy", file=sys.stderr)
        return 2
    except bench_run.BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    x = sample(args.dim, args.seed)
    body = json.dumps(x).encode()
    want = expected(x, args.hidden, args.dim, args.seed)
    config = {"hidden": args.hidden, "dim": args.dim, "seed": args.seed}
    tmp = tempfile.mkdtemp(prefix="cortex-bench-batching-")
    lua = os.path.join(tmp, "post.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = \'%s\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n' % body.decode())
    servers = {}
    for key, batching in (("unbatched", False), ("batched", True)):
        root = project(os.path.join(tmp, key), "matmul", {**config, "batched": batching}, batching)
        port = bench_run.free_port()
        servers[key] = bench_run.Server(
            f"{key}", [sys.executable, "-m", "cortex_runtime", "serve", root, "--port", str(port),
                       "--no-access-log"], f"http://127.0.0.1:{port}/matmul")
    results = {key: {n: [] for n in args.connections} for key in servers}
    sizes = []
    try:
        for s in servers.values():
            s.start()
            verify(s, body, want)
            bench_run.wrk(s.url, 64, bench_run.WARMUP_S, lua)
        print(f"# {bench_run.describe_machine()}", flush=True)
        import numpy as np
        print(f"# numpy {np.__version__}; weight float32 ({args.hidden}, {args.dim}); "
              f"batched: max_batch_size {MAX_BATCH}, batch_interval {INTERVAL}; "
              f"{args.duration} s per point", flush=True)
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for n in args.connections:
                for key in order:
                    s = servers[key]
                    res = bench_run.parse_wrk(bench_run.wrk(s.url, n, args.duration, lua))
                    if not s.alive():
                        raise bench_run.BenchError(f"{s.name} died under load:\n" + s.tail())
                    results[key][n].append(res)
                    err = res["errors"]
                    print(f"  {s.name:10} c={n:<4} {res['rps']:>9,.0f} req/s  p50 "
                          f"{res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
                          + (f"  ERRORS: {', '.join(err)}" if err else ""), flush=True)
        sizes = batch_sizes(servers["batched"], body)
    except bench_run.BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def median(rs):
        rs = sorted(rs, key=lambda r: r["rps"])
        return rs[len(rs) // 2]

    print(f"\n| connections | unbatched req/s | p99 ms | batched (max {MAX_BATCH}, {INTERVAL}) "
          f"req/s | p99 ms | batched ÷ unbatched |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.connections:
        u, b = median(results["unbatched"][n]), median(results["batched"][n])
        print(f"| {n} | {u['rps']:,.0f} | {u['p99_ms']:.2f} | {b['rps']:,.0f} | "
              f"{b['p99_ms']:.2f} | {b['rps'] / u['rps']:.2f}× |")
    if sizes:
        print(f"\nbatch sizes seen by 64 concurrent requests to the batched server: "
              f"max {sizes[0]}, mean {sum(sizes) / len(sizes):.1f}")
    one, many = numpy_ceiling(x, config)
    print(f"\nnumpy alone, in this process (the ceiling of any server's batching gain): predict() "
          f"{one:,.1f} µs per sample one at a time, {many:,.1f} µs per sample {MAX_BATCH} at a time "
          f"= {one / many:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
