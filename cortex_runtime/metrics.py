"""metrics_client handed to predictors: the C type cortex_runtime._core.MetricsClient.

increment(metric, value=1, tags=None), gauge(metric, value, tags=None) and
histogram(metric, value, tags=None), as Cortex documented.  Values go to the registry that
GET /metrics exposes (shared by every worker process of the replica) and, when
CORTEX_STATSD_ADDR (or HOST_IP) is set, to statsd as DogStatsD datagrams.  Names starting
with cortex_ or istio_ are refused with a ValueError; statsd problems never raise."""
from ._core import MetricsClient

__all__ = ["MetricsClient"]
