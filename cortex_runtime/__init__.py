"""cortex_runtime: serve Cortex PythonPredictor projects from a C HTTP server, in-process."""
from .log import logger
from .response import Response

__version__ = "0.1.0"
__all__ = ["Response", "logger", "__version__"]

from . import _helpers as _helpers

_helpers.install()
