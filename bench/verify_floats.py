"""Checks cortex_runtime.json's own float formatting and parsing against Python's on
many random doubles: dumps(x) == repr(x), and loads() of repr(x), '%.17g' and a
random-precision '%.Ne' text equals float() of the same text.

    python bench/verify_floats.py                 # 20 million doubles
    python bench/verify_floats.py --count 1000000 --seed 3

Doubles are random 64-bit patterns (NaN skipped, infinities formatted only), so every
exponent and subnormals are covered evenly.  Prints the counts and exits non-zero on any
mismatch, naming the first few.
"""
import argparse
import math
import random
import struct
import sys
import time

from cortex_runtime.json import dumps, loads

CHUNK = 500_000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000_000)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    unpack = struct.Struct(f"<{CHUNK}d").unpack
    started = time.monotonic()
    formatted = parsed = 0
    mismatches = []
    while formatted < args.count:
        n = min(CHUNK, args.count - formatted)
        raw = unpack(rng.getrandbits(64 * CHUNK).to_bytes(8 * CHUNK, "little"))
        values = [x for x in raw[:n] if x == x]
        formatted += len(values)
        if dumps(values) != repr(values).replace("inf", "Infinity"):
            mismatches += [("dumps", v, dumps(v)) for v in values if dumps(v) != repr(v).replace("inf", "Infinity")]
        finite = [v for v in values if math.isfinite(v)]
        precision = rng.randrange(1, 25)
        for texts in ([repr(v) for v in finite], ["%.17g" % v for v in finite],
                      ["%.*e" % (precision, v) for v in finite]):
            texts = [t if ("." in t or "e" in t) else t + ".0" for t in texts]
            ours = loads("[" + ",".join(texts) + "]")
            parsed += len(texts)
            if ours != [float(t) for t in texts]:
                mismatches += [("loads", t, o) for t, o in zip(texts, ours) if o != float(t)]
        if mismatches:
            break
    elapsed = time.monotonic() - started
    print(f"formatted {formatted:,} doubles (dumps == repr), parsed {parsed:,} texts (loads == float): "
          f"{len(mismatches)} mismatches, {elapsed:.0f} s")
    for kind, a, b in mismatches[:10]:
        print(f"  {kind}: {a!r} -> {b!r}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
