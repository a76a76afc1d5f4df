"""metrics_client handed to predictors.  Values are kept in-process for now; the exporting
registry (Prometheus /metrics, statsd) is the C metrics work."""
import threading

_RESERVED_PREFIXES = ("cortex_", "istio_")


class MetricsClient:
    """increment/gauge/histogram as Cortex documented; transport problems never raise."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values = {}

    @staticmethod
    def _check(metric):
        if not isinstance(metric, str) or not metric:
            raise ValueError("metric name must be a non-empty string")
        if metric.startswith(_RESERVED_PREFIXES):
            raise ValueError(
                f"Metric name ({metric}) is invalid because it starts with a cortex exclusive "
                f"prefix.\nThe following are prefixes are exclusive to cortex: {_RESERVED_PREFIXES}.")

    def _key(self, kind, metric, tags):
        return kind, metric, tuple(sorted((tags or {}).items()))

    def increment(self, metric, value=1, tags=None):
        self._check(metric)
        with self._lock:
            key = self._key("counter", metric, tags)
            self._values[key] = self._values.get(key, 0) + value

    def gauge(self, metric, value, tags=None):
        self._check(metric)
        with self._lock:
            self._values[self._key("gauge", metric, tags)] = value

    def histogram(self, metric, value, tags=None):
        self._check(metric)
        with self._lock:
            self._values.setdefault(self._key("histogram", metric, tags), []).append(value)
