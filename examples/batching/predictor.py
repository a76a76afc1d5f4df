import numpy as np

from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config):
        self.weights = np.asarray(config["weights"], dtype=np.float64)
        self.bias = float(config.get("bias", 0.0))

    def predict(self, payload):
        # With server_side_batching, payload is a list: one decoded JSON body per request,
        # in arrival order. The answer must be a list of the same length.
        features = np.asarray([item["features"] for item in payload], dtype=np.float64)
        scores = features @ self.weights + self.bias  # one matrix product for the batch
        logger.info("scored a batch", extra={"batch_size": len(payload)})
        # numpy scalars (and arrays) are encoded as JSON numbers (and lists)
        return [{"score": score, "batch_size": len(payload)} for score in scores]
