"""Soak: keep the trivial predictor under wrk load for N requests and watch the server's
resident memory and open file descriptors.  Prints a table of samples and the drift after
warm-up.  python bench/soak.py [--requests 2000000] [--connections 16]"""
import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wrk(port, connections, seconds):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                          "-s", os.path.join(HERE, "post.lua"), f"http://127.0.0.1:{port}/trivial"],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--step", type=int, default=5, help="seconds of load between samples")
    args = parser.parse_args()
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "cortex_runtime", "serve",
                               os.path.join(HERE, "trivial"), "--port", str(args.port), "--no-access-log"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        done = 0
        samples = []
        baseline = None
        while done < args.requests:
            done += wrk(args.port, args.connections, args.step)
            sample = (done, rss_kb(server.pid), fds(server.pid))
            samples.append(sample)
            if baseline is None and done >= 10_000:
                baseline = sample
            print(f"{sample[0]:>10,} requests  rss {sample[1] / 1024:7.1f} MiB  fds {sample[2]}", flush=True)
        last = samples[-1]
        print()
        print("| requests | RSS after warm-up | RSS at end | drift | fds after warm-up | fds at end |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {last[0]:,} | {baseline[1] / 1024:.1f} MiB | {last[1] / 1024:.1f} MiB | "
              f"{(last[1] - baseline[1]) / 1024:+.1f} MiB | {baseline[2]} | {last[2]} |")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
