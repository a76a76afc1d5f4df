"""JSON codec timings: cortex_runtime.json against the stdlib json and orjson, in one run.

    python bench/codec.py                  # markdown table on stdout
    python bench/codec.py --repeat 9 --min-time 0.2

Three documents: a ~1 KB prediction request, a ~100 KB list of records, and a list of
10,000 floats.  loads is fed the encoded bytes (what a server holds), dumps the decoded
value.  Each cell is the best of --repeat timeit runs, each run looping long enough to
take --min-time seconds.  orjson (pip install orjson; bench/requirements.txt) returns bytes
and writes no spaces after ',' and ':', so its output is shorter; only the time is compared.
"""
import argparse
import json
import platform
import random
import sys
import timeit

import cortex_runtime.json as cxjson

try:
    import orjson
except ImportError:  # the table then leaves the orjson columns empty
    orjson = None

TARGET_SPEEDUP = 2.0  # ours at least 2x faster than json
TARGET_ORJSON = 1.3  # and no more than 1.3x orjson's time


def small_document(rng):
    """A prediction request: a few fields, a short feature vector, some text, ~1 KB."""
    return {
        "request_id": "3f2b9c1e-8d4a-4e5f-9b6c-7a8d9e0f1a2b",
        "model": {"name": "iris-classifier", "version": 7, "stage": "production"},
        "inputs": {
            "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2,
            "features": [round(rng.uniform(-3, 3), 6) for _ in range(24)],
            "tokens": [rng.randrange(30000) for _ in range(20)],
        },
        "text": "The quick brown fox jumps over the lazy dog. Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9.",
        "options": {"top_k": 3, "threshold": 0.25, "explain": False, "return_probabilities": True,
                    "labels": ["setosa", "versicolor", "virginica"], "callback": None},
        "client": {"user_agent": "python-requests/2.31.0", "ip": "10.0.12.34", "retries": 0},
    }


def record(rng, i):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "\u00fcber", "\u6771\u4eac"]
    return {
        "id": i,
        "uuid": "%08x-%04x-%04x-%04x-%012x" % tuple(rng.getrandbits(b) for b in (32, 16, 16, 16, 48)),
        "name": " ".join(rng.choice(words) for _ in range(3)),
        "active": rng.random() < 0.7,
        "score": round(rng.uniform(0, 100), 3),
        "balance": rng.randrange(-10**6, 10**9),
        "tags": rng.sample(words, 3),
        "location": {"lat": round(rng.uniform(-90, 90), 6), "lon": round(rng.uniform(-180, 180), 6)},
        "parent": None if i % 3 else i // 3,
        "note": "line one\nline \"two\"\ttabbed" if i % 10 == 0 else "",
    }


def large_document(rng):
    """~100 KB: a page of records with the usual mix of types."""
    records = []
    doc = {"count": 0, "next": "/v1/records?page=2", "records": records}
    i = 0
    while len(json.dumps(doc)) < 100_000:
        records.append(record(rng, i))
        i += 1
        doc["count"] = i
    return doc


def float_array(rng):
    return [rng.uniform(-1000, 1000) for _ in range(10_000)]


def best_time(fn, repeat, min_time):
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()
    number = max(1, int(number * min_time / max(elapsed, 1e-9)))
    return min(timer.repeat(repeat=repeat, number=number)) / number


def fmt_us(seconds):
    us = seconds * 1e6
    return f"{us:,.1f}" if us < 100 else f"{us:,.0f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timeit runs per cell; the best counts")
    parser.add_argument("--min-time", type=float, default=0.1, help="seconds per run")
    args = parser.parse_args(argv)

    rng = random.Random(20261201)
    documents = [("~1 KB request", small_document(rng)), ("~100 KB records", large_document(rng)),
                 ("10,000 floats", float_array(rng))]

    rows = []
    misses = []
    for label, value in documents:
        data = json.dumps(value).encode()
        # the codecs must agree before their times mean anything
        assert cxjson.loads(data) == json.loads(data)
        assert cxjson.dumps(value) == json.dumps(value)
        if orjson is not None:
            assert orjson.loads(data) == json.loads(data)
        size = f"{len(data) / 1024:,.1f} KiB"
        cases = {
            "loads": (lambda: json.loads(data), lambda: cxjson.loads(data),
                      (lambda: orjson.loads(data)) if orjson else None),
            "dumps": (lambda: json.dumps(value), lambda: cxjson.dumps(value),
                      (lambda: orjson.dumps(value)) if orjson else None),
        }
        for op, (std_fn, ours_fn, orjson_fn) in cases.items():
            t_std = best_time(std_fn, args.repeat, args.min_time)
            t_ours = best_time(ours_fn, args.repeat, args.min_time)
            t_or = best_time(orjson_fn, args.repeat, args.min_time) if orjson_fn else None
            speedup = t_std / t_ours
            vs_or = t_ours / t_or if t_or else None
            ok = speedup >= TARGET_SPEEDUP and (vs_or is None or vs_or <= TARGET_ORJSON)
            if not ok:
                misses.append((label, op, speedup, vs_or))
            rows.append([f"{label} ({size})", op, fmt_us(t_std), fmt_us(t_ours),
                         fmt_us(t_or) if t_or else "–", f"{speedup:.2f}×",
                         f"{vs_or:.2f}×" if vs_or else "–", "yes" if ok else "**no**"])

    print(f"Python {platform.python_version()}, {platform.machine()}, "
          f"orjson {orjson.__version__ if orjson else 'not installed'}; best of {args.repeat}, "
          f"µs per call (lower is better)\n")
    print("| document | op | json µs | cortex_runtime µs | orjson µs¹ | json ÷ ours | ours ÷ orjson | "
          f"target (≥ {TARGET_SPEEDUP}× json, ≤ {TARGET_ORJSON}× orjson) |")
    print("|---|---|---:|---:|---:|---:|---:|:---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n¹ orjson.dumps returns bytes with compact separators (`,` `:`), so it writes fewer bytes; "
          "time only is compared. loads is given the same bytes for all three.")
    if misses:
        print("\nMissed targets:")
        for label, op, speedup, vs_or in misses:
            parts = []
            if speedup < TARGET_SPEEDUP:
                parts.append(f"{speedup:.2f}× json (target {TARGET_SPEEDUP}×)")
            if vs_or is not None and vs_or > TARGET_ORJSON:
                parts.append(f"{vs_or:.2f}× orjson's time (target ≤ {TARGET_ORJSON}×)")
            print(f"- {label} {op}: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
