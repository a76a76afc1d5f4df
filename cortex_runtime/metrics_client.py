"""`cortex_runtime.metrics_client.MetricsClient`: the type of the metrics_client predictors get
(the same object as cortex_runtime.metrics.MetricsClient, implemented in csrc/metrics_client.c)."""
from ._core import MetricsClient

__all__ = ["MetricsClient"]
