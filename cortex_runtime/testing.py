"""Running a project's API inside a test (SPEC section 8).

    with start_api("examples/iris") as api:          # or the `cortex_api` pytest fixture
        assert api.post(json=sample).text == "setosa"

How it runs.  `start_api` validates the project as `serve` does (same StartupError lines),
stages it, and starts the real C server of `serve` in this process on a free loopback port.
Each started project gets one dedicated Python thread, the "server thread", that imports the
predictor, runs every API's `__init__` and then `server.work()`: with `threads_per_process: 1`
`predict` runs on the thread that ran `__init__`, as under `serve`.  More threads are extra
`server.work()` threads.  With more than one process (`processes=` or the file's
`processes_per_replica`) the project runs as a `python -m cortex_runtime serve` subprocess
instead, behind the same client API (see _SubprocessServer).

Same code as `serve`.  The server thread goes through serve.py's helpers (load_models for
tensorflow APIs, server_entries, set_handler) and asyncapi.AsyncRuntime for AsyncAPIs
(adjust, start; begin_stop and close at stop), with this start's log slots in the entries.
An AsyncAPI project gets a temporary --state-dir per start unless state_dir= is given.

Logs.  Every API gets its own log slot (C routes a slot's lines, predictor logs and access
lines, to one file descriptor) pointed at an anonymous temporary file; `api.logs()` parses it.

Process-wide state.  The environment, the working directory and sys.path are the process's,
not a thread's: while an API runs, cwd is its staged project root and its variables (`.env`,
`predictor.env`, then `env=`) are set.  With several APIs at once the most recently started
one wins; stopping any API recomputes the state from those still running, and stopping the
last one restores what was there before the first started (see _ProcessState).
"""
import contextlib
import copy
import http.client
import json as _json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from . import _core, asyncapi, log
from . import serve as _serve
from ._payload import Headers
from .config import load_project
from .errors import StartupError
from .log import logger
from .metrics import MetricsClient
from .predictor import instantiate, load_class
from .project import read_dotenv, stage_project

__all__ = ["Api", "HttpResponse", "StartupFailed", "start_api", "launch"]

DEFAULT_TIMEOUT = 60.0      # seconds, for one HTTP request of the client
GRACE_PERIOD = 10.0         # seconds in-flight requests get at stop()
ACCESS_LINE_WAIT = 2.0      # seconds logs() waits for the access line of a request it sent
SUBPROCESS_STARTUP_TIMEOUT = 300.0
ASYNC_WAIT = 10.0           # seconds Api.wait() waits for a workload by default
HOST = "127.0.0.1"


class StartupFailed(Exception):
    """The API did not start.  str() is the start-up error line, the text `serve` prints after
    "error: "; `.logs` holds the JSON log lines written meanwhile (an __init__ traceback)."""

    def __init__(self, message, logs=()):
        super().__init__(message)
        self.logs = list(logs)


# ---------------------------------------------------------------------------------------------
# Log slots and process-wide state


class _Slots:
    """Log slot numbers (0..255 in C) handed out to the APIs running in this process."""

    LIMIT = 256

    def __init__(self):
        self.lock = threading.Lock()
        self.used = set()

    def take(self):
        with self.lock:
            for slot in range(self.LIMIT):
                if slot not in self.used:
                    self.used.add(slot)
                    return slot
        raise StartupError(f"more than {self.LIMIT} APIs running at once in one process")

    def give_back(self, slot):
        _core.set_log_fd(-1, slot)
        _core.set_log_level(slot, 0)  # 0: the default level again
        with self.lock:
            self.used.discard(slot)


_slots = _Slots()


class _Overlay:
    """What one running project sets on the process."""

    def __init__(self, env, cwd, path_entries, module_root):
        self.env = env
        self.cwd = cwd
        self.path_entries = path_entries
        self.module_root = module_root


class _ProcessState:
    """os.environ, cwd and sys.path as the stack of running projects wants them.

    The value of a variable is the one set by the most recently started project still running
    that sets it, else the value it had before any of them set it; cwd is the root of the most
    recently started running project, else the cwd from before the first.  sys.path entries
    are added in front and removed when no running project needs them."""

    def __init__(self):
        self.lock = threading.RLock()
        self.active = []
        self.saved_env = {}   # variable -> value before any project set it (None: unset)
        self.base_cwd = None
        self.added_paths = {}  # sys.path entry we inserted -> number of projects using it

    def original_cwd(self):
        with self.lock:
            return self.base_cwd if self.active else os.getcwd()

    def push(self, overlay):
        with self.lock:
            if not self.active:
                self.base_cwd = os.getcwd()
            for key in overlay.env:
                self.saved_env.setdefault(key, os.environ.get(key))
            self.active.append(overlay)
            for entry in reversed(overlay.path_entries):
                if entry in self.added_paths:
                    self.added_paths[entry] += 1
                elif entry not in sys.path:
                    sys.path.insert(0, entry)
                    self.added_paths[entry] = 1
            self._apply()

    def pop(self, overlay):
        with self.lock:
            if overlay not in self.active:
                return
            self.active.remove(overlay)
            for entry in overlay.path_entries:
                if entry in self.added_paths:
                    self.added_paths[entry] -= 1
                    if self.added_paths[entry] == 0:
                        del self.added_paths[entry]
                        with contextlib.suppress(ValueError):
                            sys.path.remove(entry)
            # modules imported from this project: a later project's predictor.py or utils.py
            # of the same name must be imported afresh, not found in sys.modules
            prefix = overlay.module_root + os.sep
            for name, module in list(sys.modules.items()):
                if (getattr(module, "__file__", None) or "").startswith(prefix):
                    sys.modules.pop(name, None)
            self._apply()

    def _apply(self):
        for key in list(self.saved_env):
            value = self.saved_env[key]
            set_by_active = False
            for overlay in self.active:
                if key in overlay.env:
                    value = overlay.env[key]
                    set_by_active = True
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
            if not set_by_active:
                del self.saved_env[key]
        cwd = self.active[-1].cwd if self.active else self.base_cwd
        if cwd is not None:
            with contextlib.suppress(OSError):
                os.chdir(cwd)


_state = _ProcessState()


def original_cwd():
    """The working directory the tests had before any API started: where relative project
    paths are looked up."""
    return _state.original_cwd()


# ---------------------------------------------------------------------------------------------
# HTTP client


_NOTHING = object()


class HttpResponse:
    """One response: status_code, reason, headers (case-insensitive), content, text, json()."""

    def __init__(self, status_code, reason, headers, content, url, method):
        self.status_code = status_code
        self.reason = reason
        self.headers = Headers(headers)
        self.content = content
        self.url = url
        self.method = method

    @property
    def text(self):
        match = re.search(r"charset=([\w.:-]+)", self.headers.get("Content-Type", ""), re.I)
        encoding = match.group(1) if match else "utf-8"
        try:
            return self.content.decode(encoding, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self):
        return _json.loads(self.content)

    @property
    def ok(self):
        return 200 <= self.status_code < 400

    def __repr__(self):
        return f"<HttpResponse {self.method} {self.url} {self.status_code} {self.reason}>"


def _encode_body(json, data, headers):
    """(body bytes or None, headers dict): json= as JSON, dict data= as a form, str as UTF-8."""
    headers = dict(headers or {})
    has_type = any(k.lower() == "content-type" for k in headers)
    if json is not _NOTHING:
        if data is not None:
            raise TypeError("pass json= or data=, not both")
        if not has_type:
            headers["Content-Type"] = "application/json"
        return _json.dumps(json).encode("utf-8"), headers
    if data is None:
        return None, headers
    if isinstance(data, dict):
        if not has_type:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return urllib.parse.urlencode(data).encode("utf-8"), headers
    if isinstance(data, str):
        return data.encode("utf-8"), headers
    return bytes(data), headers


def _http(host, port, method, target, body, headers, timeout):
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        return HttpResponse(response.status, response.reason, response.getheaders(), content,
                            f"http://{host}:{port}{target}", method)
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------
# /metrics


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)")


def _unescape(text):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def parse_metrics(text):
    """Prometheus text -> ({(name, frozenset(labels)): value}, {family: type})."""
    samples, types = {}, {}
    for line in text.splitlines():
        typed = _TYPE.match(line)
        if typed:
            types[typed.group(1)] = typed.group(2)
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = frozenset((k, _unescape(v)) for k, v in _LABEL.findall(match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples, types


def _family_type(name, types):
    if name in types:
        return types[name]
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
            return "histogram"
    return None


# ---------------------------------------------------------------------------------------------
# The client API


class Api:
    """A running API (or, from a multi-API start without api=, all of them on one port).

    Paths given to request()/post()/... are resolved like links against the API's endpoint:
    "" is the endpoint itself, "x" is <endpoint>/x, "/healthz" is the server's /healthz, a
    full http:// URL is used as it is.  `api["name"]` is the view of one API of the server."""

    def __init__(self, server, name=None):
        self._server = server
        self.name = name
        self.endpoint = server.endpoints[name] if name is not None else ""

    # -- where ------------------------------------------------------------------------------
    @property
    def host(self):
        return HOST

    @property
    def port(self):
        return self._server.port

    @property
    def url(self):
        return f"http://{HOST}:{self._server.port}{self.endpoint}"

    @property
    def names(self):
        return list(self._server.endpoints)

    @property
    def root(self):
        """The staged project directory the predictor sees (None in a subprocess)."""
        return self._server.staged_root

    @property
    def state_dir(self):
        """The --state-dir AsyncAPI workloads are stored under (None without AsyncAPIs or
        with a Redis backend): a temporary one removed at stop, unless state_dir= was given."""
        return self._server.state_dir

    def __getitem__(self, name):
        if name not in self._server.endpoints:
            known = ", ".join(f'"{n}"' for n in self._server.endpoints)
            raise KeyError(f'no api named "{name}" is running here (running: {known})')
        return Api(self._server, name)

    def __repr__(self):
        what = self.name or ", ".join(self.names)
        return f"<cortex_runtime.testing.Api {what} at http://{HOST}:{self.port}{self.endpoint}>"

    # -- HTTP -------------------------------------------------------------------------------
    def _target(self, path):
        if path.startswith(("http://", "https://")):
            return path
        if path.startswith("/"):
            return path
        return self.endpoint + ("/" + path if path else "") if self.endpoint else "/" + path

    def request(self, method, path="", *, json=_NOTHING, data=None, headers=None, params=None,
                timeout=DEFAULT_TIMEOUT) -> HttpResponse:
        target = self._target(path)
        host, port = HOST, self._server.port
        if target.startswith(("http://", "https://")):
            parts = urllib.parse.urlsplit(target)
            host, port = parts.hostname, parts.port or 80
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        if params:
            target += ("&" if "?" in target else "?") + urllib.parse.urlencode(params, doseq=True)
        body, headers = _encode_body(json, data, headers)
        response = _http(host, port, method.upper(), target, body, headers, timeout)
        if host == HOST and port == self._server.port:
            self._server.sent(target, response)
        return response

    def get(self, path="", **kwargs) -> HttpResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path="", **kwargs) -> HttpResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path="", **kwargs) -> HttpResponse:
        return self.request("PUT", path, **kwargs)

    def delete(self, path="", **kwargs) -> HttpResponse:
        return self.request("DELETE", path, **kwargs)

    def options(self, path="", **kwargs) -> HttpResponse:
        return self.request("OPTIONS", path, **kwargs)

    # -- AsyncAPI ---------------------------------------------------------------------------
    def _async_view(self, what):
        if self.name is None:
            names = ", ".join(f'api["{n}"]' for n in self.names)
            raise TypeError(f"{what}: several APIs run here: use one of {names}")

    def submit(self, *, json=_NOTHING, data=None, headers=None, timeout=DEFAULT_TIMEOUT) -> str:
        """POSTs one AsyncAPI workload; returns its id.  Raises AssertionError unless it was
        accepted (200 with an id)."""
        self._async_view("submit()")
        response = self.post(json=json, data=data, headers=headers, timeout=timeout)
        try:
            workload_id = response.json()["id"] if response.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            workload_id = None
        if not isinstance(workload_id, str):
            raise AssertionError(f"the workload was not accepted: {response.status_code} "
                                 f"{response.text[:500]}")
        return workload_id

    def status(self, workload_id, timeout=DEFAULT_TIMEOUT) -> dict:
        """GET <endpoint>/<id> as a dict ({"id", "status"[, "result", "timestamp"]}).  Raises
        KeyError for an unknown id (404), AssertionError for any other failure."""
        self._async_view("status()")
        response = self.get(urllib.parse.quote(str(workload_id), safe=""), timeout=timeout)
        if response.status_code == 404:
            raise KeyError(f"no workload with id {workload_id!r}")
        if response.status_code != 200:
            raise AssertionError(f"GET of workload {workload_id}: {response.status_code} "
                                 f"{response.text[:500]}")
        return response.json()

    def wait(self, workload_id, timeout=ASYNC_WAIT, interval=0.01) -> dict:
        """Polls the workload until it is "completed" or "failed" and returns that status dict;
        raises TimeoutError (with the last status) after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.status(workload_id)
            if found.get("status") in ("completed", "failed"):
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"workload {workload_id} still {found.get('status')} "
                                   f"after {timeout:g}s")
            time.sleep(interval)
            interval = min(interval * 2, 0.2)

    # -- logs and metrics -------------------------------------------------------------------
    def logs(self) -> list:
        """The JSON log lines (dicts) this API wrote so far, access lines included, oldest
        first.  Waits briefly for requests already answered to be logged: the server writes
        an access line just after sending the response."""
        return self._server.logs(self.name)

    def metric(self, name, **labels):
        """The current value of one sample of GET /metrics, or None when there is none.

        labels must be the sample's labels; api_name is filled in with this API's name when
        left out and the sample has one.  Counters and histogram samples (_count, _sum,
        _bucket) count from this API's start: the registry is process-wide and never reset,
        so without that a test would see the requests of earlier tests.  Gauges are as shown."""
        samples, types = self._server.metric_samples()
        wanted = {str(k): str(v) for k, v in labels.items()}
        candidates = []
        if self.name is not None and "api_name" not in wanted:
            candidates.append(frozenset({**wanted, "api_name": self.name}.items()))
        candidates.append(frozenset(wanted.items()))
        for key in ((name, c) for c in candidates):
            if key in samples:
                value = samples[key]
                if _family_type(name, types) in ("counter", "histogram"):
                    value -= self._server.metrics_baseline.get(key, 0.0)
                return value
        return None

    def metrics_text(self) -> str:
        return self.get("/metrics").text

    def stop(self):
        """Drains and stops the server (every API of this start), restores the process state."""
        self._server.stop()


# ---------------------------------------------------------------------------------------------
# Starting


def _merge_config(base, override):
    """predictor.config with the top-level keys of override replacing its own (dict.update)."""
    merged = copy.deepcopy(base)
    merged.update(copy.deepcopy(override))
    return merged


def _load(path, api, config, processes, threads, log_level):
    if api is None:
        api_names = None
    elif isinstance(api, str):
        api_names = [api]
    else:
        api_names = list(api)
    project = load_project(str(path), api_names=api_names,
                           overrides={"processes": processes, "threads": threads,
                                      "log_level": log_level})
    if config:
        if not isinstance(config, dict):
            raise TypeError("config= must be a mapping (merged into predictor.config)")
        for spec in project.apis:
            spec.config = _merge_config(spec.config, config)
    _serve._unsupported(project)  # what serve refuses, with the same line
    return project


class _Options:
    """The `serve` flags a started project runs with (the attributes serve.py and
    asyncapi.AsyncRuntime read from the parsed command line)."""

    def __init__(self, access_log, max_body_size, idle_timeout, state_dir, async_backend,
                 async_max_queue, async_result_ttl, async_fsync, tfs_address, request_timeout=0.0):
        self.request_timeout = request_timeout
        self.access_log = access_log
        self.no_access_log = not access_log
        self.max_body_size = max_body_size
        self.idle_timeout = idle_timeout
        self.grace_period = GRACE_PERIOD
        self.state_dir = None if state_dir is None else os.path.join(original_cwd(),
                                                                     os.fspath(state_dir))
        self.async_backend = async_backend
        self.async_max_queue = async_max_queue
        self.async_result_ttl = async_result_ttl
        self.async_fsync = async_fsync
        self.tfs_address = tfs_address
        self.own_state_dir = None  # the temporary --state-dir made for this start

    def take_state_dir(self, project):
        """An AsyncAPI project without state_dir= (nor a Redis backend) gets a fresh temporary
        --state-dir, removed at stop: tests never share or leave workloads."""
        if (self.state_dir is None and self.async_backend is None
                and any(spec.kind == "AsyncAPI" for spec in project.apis)):
            self.own_state_dir = tempfile.mkdtemp(prefix="cortex-runtime-state-")
            self.state_dir = self.own_state_dir

    def drop_state_dir(self):
        if self.own_state_dir is not None:
            shutil.rmtree(self.own_state_dir, ignore_errors=True)
            self.own_state_dir = None

    def serve_flags(self):
        flags = []
        for flag, value in (("--state-dir", self.state_dir), ("--async-backend", self.async_backend),
                            ("--async-max-queue", self.async_max_queue),
                            ("--async-result-ttl", self.async_result_ttl),
                            ("--async-fsync", self.async_fsync), ("--tfs-address", self.tfs_address),
                            ("--request-timeout", self.request_timeout or None)):
            if value is not None:
                flags += [flag, str(value)]
        return flags


def launch(path, api=None, config=None, env=None, processes=None, threads=None, *,
           log_level=None, access_log=True, max_body_size=64 * 1024 * 1024,
           idle_timeout=60, state_dir=None, async_backend=None, async_max_queue=None,
           async_result_ttl=None, async_fsync=None, tfs_address=None, request_timeout=0.0) -> Api:
    """Starts the project at path (a directory or config file); returns an Api to stop().

    api: one name (or a list) of the file's APIs; all of them by default, on one port.
    config: its top-level keys replace those of every started API's predictor.config.  env: variables set
    while it runs.  processes/threads override the file; more than one process runs
    `python -m cortex_runtime serve` in a subprocess.  state_dir, async_backend,
    async_max_queue, async_result_ttl, async_fsync, tfs_address and request_timeout are serve's
    --state-dir, ... flags; AsyncAPIs get a temporary state_dir by default.  Raises StartupFailed."""
    __tracebackhide__ = True
    env = {str(k): str(v) for k, v in (env or {}).items()}
    path = os.path.join(original_cwd(), os.fspath(path))  # absolute paths stay as they are
    options = _Options(access_log, max_body_size, idle_timeout, state_dir, async_backend,
                       async_max_queue, async_result_ttl, async_fsync, tfs_address, request_timeout)
    try:
        project = _load(path, api, config, processes, threads, log_level)
        options.take_state_dir(project)
        if max(spec.processes for spec in project.apis) > 1:
            server = _SubprocessServer(project, path, api, config, env, processes, threads,
                                       log_level, options)
        else:
            server = _InProcessServer(project, env, options)
        server.start()
    except StartupError as e:
        options.drop_state_dir()
        raise StartupFailed(str(e)) from None
    except BaseException:
        options.drop_state_dir()
        raise
    names = list(server.endpoints)
    return Api(server, names[0] if len(names) == 1 else None)


@contextlib.contextmanager
def start_api(path, api=None, config=None, env=None, processes=None, threads=None, **options):
    """with start_api("examples/iris") as api: ... -- launch() stopped at the end."""
    handle = launch(path, api, config, env, processes, threads, **options)
    try:
        yield handle
    finally:
        handle.stop()


class _Server:
    """What both ways of running have in common: names, endpoints, logs, metrics."""

    staged_root = None
    state_dir = None

    def __init__(self, project):
        self.project = project
        self.endpoints = {spec.name: spec.endpoint for spec in project.apis}
        self.port = None
        self.metrics_baseline = {}
        self.stopped = False

    def sent(self, target, response):
        """Called with every response the client got from this server."""

    def metric_samples(self):
        response = _http(HOST, self.port, "GET", "/metrics", None, {}, DEFAULT_TIMEOUT)
        return parse_metrics(response.text)

    def _take_baseline(self):
        self.metrics_baseline = self.metric_samples()[0]


def _parse_lines(data):
    lines = []
    for raw in data.splitlines():
        raw = raw.strip()
        if raw.startswith(b"{"):
            try:
                lines.append(_json.loads(raw))
            except ValueError:
                pass
    return lines


class _LogFile:
    """An anonymous temporary file one log slot writes to."""

    def __init__(self):
        self.file = tempfile.TemporaryFile(prefix="cortex-log-")
        self.fd = self.file.fileno()

    def read(self):
        chunks, offset = [], 0
        while True:
            chunk = os.pread(self.fd, 1 << 20, offset)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            offset += len(chunk)

    def close(self):
        self.file.close()


def _close_client(client):
    """Stops a tensorflow_client's model polling (serve leaves that to the process's exit)."""
    close = getattr(getattr(client, "_backend", None), "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


class _InProcessServer(_Server):
    """The C server of `serve`, in this process, with one server thread (module import,
    __init__, then work()) and threads_per_process - 1 more work() threads."""

    def __init__(self, project, env, options):
        super().__init__(project)
        self.test_env = env
        self.options = options
        self.state_dir = options.state_dir
        self.server = None
        self.prepared = None       # serve.Prepared: the project, staged root, classes, clients
        self.async_runtime = None  # asyncapi.AsyncRuntime (inert without AsyncAPIs)
        self.thread = None
        self.slots = []
        self.log_files = []
        self.overlay = None
        self.staging_parent = None
        self.ready = threading.Event()
        self.error = None

    # -- start ------------------------------------------------------------------------------
    def start(self):
        __tracebackhide__ = True
        try:
            self._setup()
            name = "cortex-api-" + "+".join(self.endpoints)
            self.thread = threading.Thread(target=self._run, name=name, daemon=True)
            self.thread.start()
            self.ready.wait()
            if self.error is None:
                self._take_baseline()
        except BaseException:
            self.stop()
            raise
        if self.error is not None:
            logs = self.logs(None)
            message = self.error
            self.stop()
            raise StartupFailed(message, logs) from None

    def _setup(self):
        project = self.project
        for spec in project.apis:
            slot = _slots.take()
            self.slots.append(slot)
            sink = _LogFile()
            self.log_files.append(sink)
            _core.set_log_fd(sink.fd, slot)
            _core.set_log_level(slot, log.LEVELS[spec.log_level])
        self.staging_parent = tempfile.mkdtemp(prefix="cortex-runtime-test-")
        self.staged_root = os.path.join(self.staging_parent, "project")
        try:
            stage_project(project.root, project.config_file, self.staged_root)
            variables = {}
            dotenv = os.path.join(project.root, ".env")
            if os.path.isfile(dotenv):
                variables.update(read_dotenv(dotenv))
        except StartupError as e:
            self.error = str(e)
            return
        for spec in project.apis:
            variables.update(spec.env)
        variables.update(self.test_env)
        entries = []
        for spec in project.apis:
            entry = (os.path.join(self.staged_root, spec.python_path) if spec.python_path
                     else self.staged_root)
            if entry not in entries:
                entries.append(entry)
        self.overlay = _Overlay(variables, self.staged_root, entries, self.staging_parent)
        _state.push(self.overlay)

    def _run(self):
        """The server thread."""
        extra = []
        try:
            if self.error is not None:
                return
            self._start_on_this_thread()
            self.ready.set()
            threads = max(spec.threads for spec in self.project.apis)
            extra = [threading.Thread(target=self.server.work, name=f"{self.thread.name}-{i}",
                                      daemon=True) for i in range(1, threads)]
            for worker in extra:
                worker.start()
            self.server.work()
        except StartupError as e:
            self.error = str(e)
        except BaseException as e:  # never leave the test thread waiting
            self.error = f"{type(e).__name__}: {e}"
            logger.error("cortex_runtime.testing: the server thread failed", exc_info=e)
        finally:
            _core.set_current_api(-1)
            self.ready.set()
            if self.server is not None:
                self.server.stop_workers()
            for worker in extra:
                worker.join(GRACE_PERIOD)
            if self.async_runtime is not None:  # as serve: after the work() threads returned
                self.async_runtime.close(GRACE_PERIOD)

    def _start_on_this_thread(self):
        """What serve.py's _serve_process does before server.work(), with this start's log
        slots: classes, tensorflow clients, the C server, AsyncAPIs, every __init__."""
        project = self.project
        first_slot = self.slots[0]
        previous = _core.set_current_api(first_slot)
        try:
            for warning in project.warnings:
                logger.warning(warning)
        finally:
            _core.set_current_api(previous)
        classes = []
        for spec, slot in zip(project.apis, self.slots):
            previous = _core.set_current_api(slot)
            try:
                classes.append(load_class(spec, self.staged_root))
            finally:
                _core.set_current_api(previous)
        prepared = self.prepared = _serve.Prepared(project, self.staged_root, classes)
        options = self.options
        _serve.load_models(prepared, options.tfs_address, self.slots)  # GET shows model_metadata
        entries = _serve.server_entries(prepared)
        for entry, slot in zip(entries, self.slots):
            entry["log_slot"] = slot
        previous = _core.set_current_api(first_slot)  # the store's start-up line
        try:
            self.async_runtime = asyncapi.AsyncRuntime(project, classes, options)
        finally:
            _core.set_current_api(previous)
        self.async_runtime.adjust(entries)
        try:
            self.server = _core.Server(host=HOST, port=0, max_body_size=options.max_body_size,
                                       idle_timeout=options.idle_timeout,
                                       access_log=options.access_log, apis=entries,
                                       request_timeout=options.request_timeout,
                                       realtime_io=False)  # no real-time thread inside a test run
        except OSError as e:
            raise StartupError(str(e)) from None
        self.port = self.server.port
        for index, client in prepared.tensorflow_clients.items():  # GET follows polled versions
            client.on_change(lambda index=index, server=self.server:
                             _serve._refresh_get_body(server, prepared, index))
        metrics_client = MetricsClient()
        instances = []
        for index, (spec, cls, slot) in enumerate(zip(project.apis, classes, self.slots)):
            previous = _core.set_current_api(slot)
            try:
                client = prepared.tensorflow_clients.get(index)
                instance = instantiate(spec, cls, metrics_client,
                                       client and {"tensorflow_client": client})
            finally:
                _core.set_current_api(previous)
            instances.append(instance)
            _serve.set_handler(self.server, prepared, index, instance)
        self.async_runtime.start(self.server, instances)  # AsyncAPIs: submit/status, claimers
        self.server.set_ready(True)

    def _settle(self):
        """Waits (briefly) until no request is in flight: the server counts a request's
        metrics and writes its access line just after sending the response, so without this
        a test could look before they are there."""
        deadline = time.monotonic() + ACCESS_LINE_WAIT
        while self.server is not None and not self.server.wait_drained(0.0):
            if time.monotonic() > deadline:
                return
            time.sleep(0.002)

    def metric_samples(self):
        self._settle()
        # the registry GET /metrics renders, without an access line on the test's stdout
        return parse_metrics(_core.metrics_text())

    # -- logs -------------------------------------------------------------------------------
    def _read(self, name):
        if name is not None:
            index = list(self.endpoints).index(name)
            return _parse_lines(self.log_files[index].read()) if index < len(self.log_files) else []
        lines = []
        for sink in self.log_files:
            lines.extend(_parse_lines(sink.read()))
        lines.sort(key=lambda line: str(line.get("asctime", "")))  # stable: keeps file order
        return lines

    def logs(self, name):
        if self.stopped:
            return self.final_logs.get(name, [])
        self._settle()
        return self._read(name)

    # -- stop -------------------------------------------------------------------------------
    def stop(self):
        if self.stopped:
            return
        problems = []
        if self.async_runtime is not None:
            self.async_runtime.begin_stop()
        if self.server is not None:
            self.server.begin_drain(GRACE_PERIOD)
        if self.thread is not None:
            self.thread.join(GRACE_PERIOD + 5.0)
            if self.thread.is_alive():
                problems.append(f"the server thread of {', '.join(self.endpoints)} did not stop "
                                f"within {GRACE_PERIOD + 5.0:.0f}s (is a predict call stuck?)")
        if self.prepared is not None:
            for client in self.prepared.tensorflow_clients.values():
                _close_client(client)
        if self.server is not None:
            self.server.close()
            self.server = None
        self.options.drop_state_dir()
        self.final_logs = {None: self._read(None)}
        for name in self.endpoints:
            self.final_logs[name] = self._read(name)
        self.stopped = True
        for slot in self.slots:
            _slots.give_back(slot)
        for sink in self.log_files:
            sink.close()
        self.slots, self.log_files = [], []
        if self.overlay is not None:
            _state.pop(self.overlay)
            self.overlay = None
        if self.staging_parent is not None:
            shutil.rmtree(self.staging_parent, ignore_errors=True)
        if problems:
            raise RuntimeError("; ".join(problems))


# ---------------------------------------------------------------------------------------------
# More than one process: `python -m cortex_runtime serve` in a subprocess


_CHILD = """\
import json, sys
from cortex_runtime import testing
sys.exit(testing._child_main(json.loads(sys.argv[1]), sys.argv[2:]))
"""


def _child_main(config, argv):
    """`python -m cortex_runtime ARGV` with config merged into every API's predictor.config."""
    from . import cli, serve

    if config:
        original = serve.load_project

        def load_with_config(*args, **kwargs):
            project = original(*args, **kwargs)
            for spec in project.apis:
                spec.config = _merge_config(spec.config, config)
            return project

        serve.load_project = load_with_config
    return cli.main(argv)


def _free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _SubprocessServer(_Server):
    """processes > 1 needs forked workers: the project runs as `python -m cortex_runtime
    serve` on a free port.  Its logs are its stdout, so every view's logs() shows the lines
    of all its APIs; root is None; env= and config= are passed to the child."""

    def __init__(self, project, path, api, config, env, processes, threads, log_level, options):
        super().__init__(project)
        self.options = options
        self.state_dir = options.state_dir
        self.access_log = access_log = options.access_log
        self.args = ["serve", os.path.abspath(str(path)), "--host", HOST,
                     "--max-body-size", str(options.max_body_size),
                     "--idle-timeout", str(options.idle_timeout),
                     "--grace-period", str(GRACE_PERIOD), *options.serve_flags()]
        for name in self.endpoints:
            if api is not None:
                self.args += ["--api", name]
        for flag, value in (("--processes", processes), ("--threads", threads),
                            ("--log-level", log_level)):
            if value is not None:
                self.args += [flag, str(value)]
        if not access_log:
            self.args.append("--no-access-log")
        self.config = config or {}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
        self.proc = None
        self.stdout = self.stderr = None
        self.pending = {name: {} for name in self.endpoints}  # name -> {request_id: deadline}
        self.pending_lock = threading.Lock()

    def _route(self, target):
        path = target.split("?", 1)[0]
        for name, endpoint in self.endpoints.items():
            if path == endpoint or path.startswith(endpoint + "/"):
                return name
        if len(self.endpoints) == 1 and path in ("/", "/predict"):
            return next(iter(self.endpoints))
        return None

    def sent(self, target, response):
        """Remembers an answered request whose access line logs() should wait for: the
        server writes it just after sending the response."""
        name = self._route(target)
        request_id = response.headers.get("X-Request-ID")
        if name is None or not request_id or not self.access_log:
            return
        with self.pending_lock:
            self.pending[name][request_id] = time.monotonic() + ACCESS_LINE_WAIT

    def _await_access_lines(self, name, read):
        names = [name] if name is not None else list(self.pending)
        while True:
            lines = read()
            seen = {line.get("request_id") for line in lines if "status_code" in line}
            now = time.monotonic()
            waiting = False
            with self.pending_lock:
                for n in names:
                    for request_id, deadline in list(self.pending[n].items()):
                        if request_id in seen or now > deadline:
                            del self.pending[n][request_id]
                        else:
                            waiting = True
            if not waiting:
                return lines
            time.sleep(0.005)

    def start(self):
        __tracebackhide__ = True
        for attempt in range(5):
            self.port = _free_port()
            self.stdout = tempfile.TemporaryFile(prefix="cortex-serve-out-")
            self.stderr = tempfile.TemporaryFile(prefix="cortex-serve-err-")
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, _json.dumps(self.config), *self.args,
                 "--port", str(self.port)],
                stdout=self.stdout, stderr=self.stderr, stdin=subprocess.DEVNULL,
                env=self.env, cwd=original_cwd())
            error = self._wait_listening()
            if error is None:
                self._take_baseline()
                return
            logs = _parse_lines(self._read_file(self.stdout))
            self._terminate()
            if "already in use" in error and attempt < 4:
                continue  # another process took the free port first
            self.final_logs = logs
            self.stopped = True
            raise StartupFailed(error, logs) from None

    @staticmethod
    def _read_file(f):
        return os.pread(f.fileno(), os.fstat(f.fileno()).st_size, 0)

    def _wait_listening(self):
        deadline = time.monotonic() + SUBPROCESS_STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if any(line.get("message") == "listening"
                   for line in _parse_lines(self._read_file(self.stdout))):
                return None
            if self.proc.poll() is not None:
                text = self._read_file(self.stderr).decode("utf-8", "replace")
                errors = [l[len("error: "):] for l in text.splitlines() if l.startswith("error: ")]
                return errors[-1] if errors else (
                    f"serve exited with code {self.proc.returncode} before listening: "
                    f"{text.strip()[-2000:]}")
            time.sleep(0.02)
        return f"serve did not start listening within {SUBPROCESS_STARTUP_TIMEOUT:.0f}s"

    def _read_logs(self):
        return _parse_lines(self._read_file(self.stdout))

    def logs(self, name):
        if self.stdout is None:
            return self.final_logs
        return self._await_access_lines(name, self._read_logs)

    def metric_samples(self):
        if self.stdout is not None:  # the access line is written after the metrics
            self._await_access_lines(None, self._read_logs)
        return super().metric_samples()

    def stop(self):
        if self.stopped or self.proc is None:
            return
        self.final_logs = self._terminate()
        self.stopped = True
        self.options.drop_state_dir()

    def _terminate(self):
        """Stops the child (SIGTERM, then SIGKILL) and closes its files; returns its logs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(GRACE_PERIOD + 10.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        logs = _parse_lines(self._read_file(self.stdout))
        for f in (self.stdout, self.stderr):
            f.close()
        self.stdout = self.stderr = None
        return logs

    def __del__(self):
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
