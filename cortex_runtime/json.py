"""The runtime's JSON codec, for predictors and benchmarks.

loads(bytes | str): strict RFC 8259 (no NaN/Infinity, comments or trailing commas); on
everything else json.loads accepts it gives the same value.  Errors are JSONDecodeError
(a ValueError) saying what and at which byte.
dumps(obj) -> str: byte-identical to json.dumps(obj) with default arguments, and numpy
arrays and scalars as their .tolist().
"""
from ._core import JSONDecodeError, json_dumps as dumps, json_loads as loads

__all__ = ["JSONDecodeError", "dumps", "loads"]
