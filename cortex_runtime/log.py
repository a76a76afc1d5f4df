"""The `cortex` logger: a logging.Logger whose lines are formatted and written by C."""
import logging

from . import _core

_RESERVED_EXTRA_KEYS = ("asctime", "levelname", "message", "process", "labels")


class CortexLogger(logging.Logger):
    def makeRecord(self, name, level, fn, lno, msg, args, exc_info, func=None, extra=None,
                   sinfo=None):
        if extra:
            for key in _RESERVED_EXTRA_KEYS:
                if key in extra:
                    raise KeyError(f"extra key {key!r} is reserved: asctime, levelname, message, "
                                   "process and labels are set by cortex")
        return super().makeRecord(name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)


class _CoreHandler(logging.Handler):
    """Hands records to C, which applies the per-API level and writes one JSON line."""

    def emit(self, record):
        try:
            _core.emit(record)
        except Exception:
            self.handleError(record)


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}

# Not registered with logging's manager: a user's logging.basicConfig() must not reroute it.
logger = CortexLogger("cortex")
logger.setLevel(logging.DEBUG)  # the C side filters, per API
logger.propagate = False
logger.addHandler(_CoreHandler())


def set_default_level(name: str) -> None:
    _core.set_log_level(-1, LEVELS[name])


def set_api_level(index: int, name: str) -> None:
    _core.set_log_level(index, LEVELS[name])


def current_slot() -> int:
    """The log slot of the API whose code runs on this thread (-1: none), for a thread that
    works for that API to take up with set_current_api."""
    slot = _core.set_current_api(-1)
    _core.set_current_api(slot)
    return slot


def to_stderr() -> None:
    _core.set_log_fd(2)


def announce(message: str, **fields) -> None:
    """An INFO line written whatever the configured level: tools wait for these."""
    record = logger.makeRecord(logger.name, logging.INFO, "(cortex)", 0, message, (), None,
                               extra=fields)
    _core.emit_unfiltered(record)


def log_exception(message, exc, request_id):
    extra = {"request_id": request_id} if request_id else None
    logger.error(message, exc_info=exc if exc is not None else None, extra=extra)


_formatter = logging.Formatter()
format_exception = _formatter.formatException
