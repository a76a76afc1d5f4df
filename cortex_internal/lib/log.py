"""`from cortex_internal.lib.log import logger` as in Cortex: the runtime's own logger."""
from cortex_runtime.log import logger

__all__ = ["logger"]
