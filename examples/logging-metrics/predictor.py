import time

from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config, metrics_client):
        self.positive = set(config["positive"])
        self.negative = set(config["negative"])
        self.metrics = metrics_client
        logger.info("vocabulary loaded", extra={"words": len(self.positive) + len(self.negative)})

    def predict(self, payload, request_id):
        started = time.perf_counter()
        words = str(payload.get("text", "")).lower().split()
        score = sum(w in self.positive for w in words) - sum(w in self.negative for w in words)
        label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
        logger.debug("scored", extra={"request_id": request_id, "score": score})
        # tags become Prometheus labels at GET /metrics
        self.metrics.increment("predictions_total", tags={"label": label})
        self.metrics.gauge("last_text_words", len(words))
        self.metrics.histogram("scoring_ms", (time.perf_counter() - started) * 1000.0)
        return {"label": label, "score": score}
