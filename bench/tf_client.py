"""tensorflow_client overhead: the in-process client against calling the same SavedModel
signature directly from Python, in one run.

    pip install tensorflow-cpu
    python bench/tf_client.py                 # markdown table on stdout
    python bench/tf_client.py --rounds 40 --round-time 0.1

(Not named tensorflow.py: run as a script, that name would shadow the package.)

The model is iris-shaped (four float32 inputs of shape [-1]; class_ids int64 [-1, 1] and
probabilities float32 [-1, 3]), saved to a temporary directory.  The payload is the JSON-like
dict a predictor gets: each input a list of Python floats.
- "direct": `signature(**{k: tf.constant(v, tf.float32)})` and `.numpy()` of each output:
  what a predictor calling the loaded SavedModel itself would write;
- "prebuilt": the same call on tensors built once, outside the loop: the function alone;
- "client": `tensorflow_client.predict(payload)`, returning Cortex's dict of flat lists.
The three are timed in alternating short rounds and each cell is the best round, so that a
busy machine slows them alike; overhead = client - direct.
"""
import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cortex_runtime import tensorflow as tfc  # noqa: E402

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TARGET_OVERHEAD_US = 50.0


class Iris(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.random.RandomState(0).randn(4, 3).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=n) for n in FEATURES])
    def serve(self, sepal_length, sepal_width, petal_length, petal_width):
        x = tf.stack([sepal_length, sepal_width, petal_length, petal_width], axis=1)
        logits = tf.matmul(x, self.w)
        return {"class_ids": tf.argmax(logits, axis=1, output_type=tf.int64)[:, None],
                "probabilities": tf.nn.softmax(logits)}


def per_call(fn, round_time):
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= round_time:
            return elapsed / loops
        loops *= 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--round-time", type=float, default=0.1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        module = Iris()
        tf.saved_model.save(module, os.path.join(root, "iris", "1"),
                            signatures={"serving_default": module.serve})
        models = tfc.Models.from_mapping({"path": "iris", "poll_interval": 0}, root)
        client = tfc.TensorFlowClient(models, tfc.LocalBackend(models))
        signature = tf.saved_model.load(os.path.join(root, "iris", "1")).signatures["serving_default"]

        rows = []
        for batch in (1, 64):
            payload = {name: [5.1 + i * 0.01 for i in range(batch)] for name in FEATURES}
            prebuilt = {name: tf.constant(value, tf.float32) for name, value in payload.items()}
            assert client.predict(payload)["class_ids"] is not None

            def direct():
                tensors = {name: tf.constant(value, tf.float32) for name, value in payload.items()}
                return {k: v.numpy() for k, v in signature(**tensors).items()}

            def function_only():
                return {k: v.numpy() for k, v in signature(**prebuilt).items()}

            def through_client():
                return client.predict(payload)

            cases = (direct, function_only, through_client)
            times = [[] for _ in cases]
            for _ in range(args.rounds):
                for column, fn in zip(times, cases):
                    column.append(per_call(fn, args.round_time))
            rows.append((batch, *(min(column) * 1e6 for column in times)))

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, tensorflow {tf.__version__}, numpy {np.__version__}; "
          f"best of {args.rounds} rounds of {args.round_time} s\n")
    print("| batch | prebuilt µs | direct µs | tensorflow_client µs | overhead µs |")
    print("|---:|---:|---:|---:|---:|")
    worst = max(t_client - t_direct for _, t_direct, _, t_client in rows)  # every batch size
    for batch, t_direct, t_function, t_client in rows:
        print(f"| {batch} | {t_function:.1f} | {t_direct:.1f} | {t_client:.1f} | "
              f"{t_client - t_direct:+.1f} |")
    verdict = "ok" if worst < TARGET_OVERHEAD_US else "OVER TARGET"
    print(f"\noverhead (client - direct) at batch 1 and 64, target < {TARGET_OVERHEAD_US:.0f} µs "
          f"per call: {verdict}")
    return 0 if worst < TARGET_OVERHEAD_US else 1


if __name__ == "__main__":
    sys.exit(main())
