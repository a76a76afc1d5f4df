# bench/batching.py's predictor: one matrix product per sample, a few numbers back.
#
# The payload is a JSON array of `dim` floats. A fixed float32 weight of shape
# (hidden, dim), drawn from a seeded generator, is multiplied by it; the answer is the
# argmax, max and norm of the hidden-sized result, and the size of the batch the
# sample was computed in. With `batched: true` (the config batching.py writes next to
# server_side_batching) predict gets a list of such arrays and stacks them into one
# (batch, dim) @ (dim, hidden) product.
import numpy as np


def weights(hidden, dim, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((hidden, dim), dtype=np.float32) / np.float32(dim ** 0.5))


def summarize(y, batch_size):
    # y: (batch, hidden) float32 -> one small dict per row
    argmax = y.argmax(axis=1).tolist()
    top = y.max(axis=1).tolist()
    norm = np.sqrt(np.einsum("ij,ij->i", y, y)).tolist()
    return [{"argmax": a, "max": m, "norm": n, "batch_size": batch_size}
            for a, m, n in zip(argmax, top, norm)]


class PythonPredictor:
    def __init__(self, config):
        self.dim = int(config.get("dim", 256))
        self.w_t = np.ascontiguousarray(
            weights(int(config.get("hidden", 256)), self.dim, int(config.get("seed", 0))).T)
        self.batched = bool(config.get("batched", False))

    def predict(self, payload):
        if self.batched:
            x = np.asarray(payload, dtype=np.float32)  # (batch, dim)
            return summarize(x @ self.w_t, len(payload))
        x = np.asarray(payload, dtype=np.float32)      # (dim,)
        return summarize((x @ self.w_t)[None, :], 1)[0]
