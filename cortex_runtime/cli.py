"""python -m cortex_runtime {serve,validate,predict}: argparse and exit codes only."""
import argparse
import faulthandler
import sys

from .errors import StartupError


def _size(text):
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    text = text.strip().lower().rstrip("ib")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number, at least 0")
    return value


LOG_LEVELS = ["debug", "info", "warning", "error"]


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m cortex_runtime",
                                     description="Serve Cortex predictor projects on this machine.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a project over HTTP")
    serve.add_argument("path", nargs="?", default=".", help="project directory or cortex.yaml (default .)")
    serve.add_argument("--api", action="append", metavar="NAME", help="serve only this API (repeatable)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8888, help="port (default 8888, Cortex's)")
    serve.add_argument("--processes", type=_positive_int, help="worker processes (overrides processes_per_replica)")
    serve.add_argument("--threads", type=_positive_int, help="predict threads per process (overrides threads_per_process)")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="log level for every API")
    serve.add_argument("--no-access-log", action="store_true", help="no log line per request")
    serve.add_argument("--max-body-size", type=_size, default=64 * 1024 * 1024, metavar="BYTES",
                       help="largest request body (default 64 MiB); larger gets 413")
    serve.add_argument("--idle-timeout", type=_positive_int, default=60, metavar="SECONDS",
                       help="close idle or stalled connections after this long (default 60)")
    serve.add_argument("--request-timeout", type=_seconds, default=0.0, metavar="SECONDS",
                       help="answer 504 when predict has not answered a request this long after it was "
                            "received (default 0 = no limit); the predict call itself runs on")
    serve.add_argument("--max-connections", type=_positive_int, metavar="N",
                       help="connections each process holds open at once (default 16384, fewer when the "
                            "open-file limit is lower); more wait in the listen backlog")
    serve.add_argument("--no-realtime-io", action="store_true",
                       help="keep the I/O thread in the normal scheduling class (by default it is made "
                            "real-time where allowed, so /healthz is answered at once while predict holds the CPU)")
    serve.add_argument("--grace-period", type=float, default=30.0, metavar="SECONDS",
                       help="how long in-flight requests may finish after SIGTERM (default 30)")
    serve.add_argument("--startup-timeout", type=_seconds, default=300.0, metavar="SECONDS",
                       help="exit with an error when a predictor's __init__ runs longer (default 300; 0 = no limit)")
    serve.add_argument("--state-dir", metavar="DIR", help="where AsyncAPI workloads are stored")
    serve.add_argument("--async-backend", metavar="URL", help="AsyncAPI store, e.g. redis://host:6379/0")
    serve.add_argument("--async-max-queue", type=_positive_int, default=10000, metavar="N",
                       help="AsyncAPI workloads waiting at most (default 10000); a POST beyond it gets 503")
    serve.add_argument("--async-result-ttl", type=float, default=7 * 24 * 3600, metavar="SECONDS",
                       help="how long AsyncAPI results and statuses are kept (default 7 days; 0 = forever)")
    serve.add_argument("--async-fsync", choices=["full", "normal"], default="full",
                       help="SQLite store: fsync every accepted workload (full, default) or only at "
                            "checkpoints (normal: survives a crash of serve, not of the machine)")
    serve.add_argument("--tfs-address", metavar="HOST:PORT", help="TensorFlow Serving to send tensorflow_client calls to")

    validate = commands.add_parser("validate", help="load the config and predictor classes, report every problem, exit 0/1")
    validate.add_argument("path", nargs="?", default=".", help="project directory or cortex.yaml (default .)")

    predict = commands.add_parser("predict", help="call predict once without a server and print the response")
    predict.add_argument("path", nargs="?", default=".", help="project directory or cortex.yaml (default .)")
    predict.add_argument("--api", metavar="NAME", help="which API, when the file has several")
    body = predict.add_mutually_exclusive_group(required=True)
    body.add_argument("--json", metavar="TEXT", help="a JSON payload")
    body.add_argument("--data", metavar="@FILE", help="a payload read from FILE (or the literal text)")
    predict.add_argument("--content-type", metavar="CT", help="Content-Type of --data (default: bytes)")
    predict.add_argument("-i", "--include", action="store_true",
                         help="print the status line and headers before the body, as curl -i")
    predict.add_argument("--log-level", choices=LOG_LEVELS, help="log level")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # a crash in native code (a predictor's C extension) then leaves the Python traceback of
    # the call that crashed on stderr before the process dies of its signal, as it would anyway
    faulthandler.enable()
    from . import serve as lifecycle  # after parsing, so --help never needs the C core

    try:
        if args.command == "serve":
            return lifecycle.serve(args)
        if args.command == "validate":
            return lifecycle.validate(args)
        return lifecycle.predict(args)
    except StartupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
