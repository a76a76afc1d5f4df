"""Lifecycle of `serve`, `validate` and `predict`: config -> staged project -> predictor
classes -> C server -> __init__ -> ready -> work -> drain."""
import json
import os
import resource
import signal
import sys
import tempfile
import threading
import uuid
import shutil
from http import HTTPStatus

from . import _core, asyncapi, log
from .config import ApiValidator, Project, find_config, load_project, read_yaml
from .errors import StartupError
from .log import logger
from .metrics import MetricsClient
from .predictor import instantiate, load_class
from .project import read_dotenv, stage_project
from .response import response_parts
from .workers import Supervisor

GET_MESSAGE = {"message": "make a prediction by sending a post request to this endpoint with a json payload"}
DEFAULT_GRACE_PERIOD = 30.0
DEFAULT_MAX_CONNECTIONS = 16384
# descriptors a serving process needs besides its connections: Python, the listening socket,
# the server's epoll and eventfds, log and SQLite files, whatever a predictor opens
FD_HEADROOM = 128


class Prepared:
    """A project ready to import: staged view in place, environment set, classes loaded."""

    def __init__(self, project, staged_root, classes):
        self.project = project
        self.staged_root = staged_root
        self.classes = classes
        self.tensorflow_clients = {}  # API index -> tensorflow_client, built in this process

    def cleanup(self):
        shutil.rmtree(os.path.dirname(self.staged_root), ignore_errors=True)


def _unsupported(project):
    for api in project.apis:
        asyncapi.check(os.path.basename(project.config_file), api)
        if api.predictor_type not in ("python", "tensorflow"):
            raise StartupError(f'{os.path.basename(project.config_file)}: api "{api.name}": predictor.type: '
                               f'{api.predictor_type} is not supported by this version yet')


def _apply_levels(project, cli_level):
    if cli_level:
        log.set_default_level(cli_level)
        for index in range(len(project.apis)):
            log.set_api_level(index, cli_level)
        return
    for index, api in enumerate(project.apis):
        log.set_api_level(index, api.log_level)


def _enter_project(project) -> str:
    """Stages the project's view in a temporary folder, applies the root .env and every API's
    predictor.env, and makes the staged root the cwd and a sys.path entry (or python_path).
    Returns the staged root; its parent folder is the caller's to remove."""
    staging_parent = tempfile.mkdtemp(prefix="cortex-runtime-")
    staged_root = os.path.join(staging_parent, "project")
    try:
        stage_project(project.root, project.config_file, staged_root)
        dotenv = os.path.join(project.root, ".env")
        if os.path.isfile(dotenv):
            os.environ.update(read_dotenv(dotenv))
    except BaseException:
        shutil.rmtree(staging_parent, ignore_errors=True)
        raise
    for api in project.apis:
        os.environ.update(api.env)
    os.chdir(staged_root)
    for api in reversed(project.apis):
        entry = os.path.join(staged_root, api.python_path) if api.python_path else staged_root
        if entry not in sys.path:
            sys.path.insert(0, entry)
    return staged_root


def prepare(path, api_names=None, overrides=None, log_level=None) -> Prepared:
    """Everything before the server: raises StartupError with one line on any problem."""
    project = load_project(path, api_names=api_names, overrides=overrides)
    if log_level:
        log.set_default_level(log_level)
    for warning in project.warnings:
        logger.warning(warning)
    _unsupported(project)
    _apply_levels(project, log_level)

    staged_root = _enter_project(project)
    classes = []
    for index, api in enumerate(project.apis):
        previous = _core.set_current_api(index)
        try:
            classes.append(load_class(api, staged_root))
        finally:
            _core.set_current_api(previous)
    return Prepared(project, staged_root, classes)


def load_models(prepared, tfs_address=None, log_slots=None):
    """Builds the tensorflow_client of every tensorflow API not built yet in this process
    (its models loaded, or TensorFlow Serving at tfs_address reached); TensorFlow is only
    imported here.  log_slots: each API's log slot (default: its index)."""
    for index, api in enumerate(prepared.project.apis):
        if api.predictor_type == "tensorflow" and index not in prepared.tensorflow_clients:
            from .tensorflow import make_client
            previous = _core.set_current_api(log_slots[index] if log_slots else index)
            try:
                prepared.tensorflow_clients[index] = make_client(api, prepared.project.root,
                                                                 tfs_address)
            finally:
                _core.set_current_api(previous)


def _get_body(prepared, index):
    message = dict(GET_MESSAGE)
    client = prepared.tensorflow_clients.get(index)
    if client is not None:
        message["model_metadata"] = client.metadata
    return json.dumps(message, separators=(",", ":")).encode()


def _refresh_get_body(server, prepared, index):
    """GET's model_metadata follows the versions the poller found."""
    try:
        server.set_get_body(index, _get_body(prepared, index))
    except RuntimeError:
        pass  # the server closed while the poller ran


def _startup_watchdog(seconds, what, on_timeout=None):
    """Ends the process with one error line unless the returned event is set within seconds
    (None: no limit). Arbitrary user code can't be interrupted safely, so it exits; a
    worker's supervisor handles a worker that exits."""
    done = threading.Event()
    if seconds:
        def watch():
            if not done.wait(seconds):
                # os.write: the hung thread may hold sys.stderr's lock
                os.write(2, f"error: {what}: did not finish within {seconds:g} s: start-up timeout\n"
                         .encode(errors="replace"))
                if on_timeout is not None:
                    on_timeout()
                os._exit(1)
        threading.Thread(target=watch, name="cortex-startup-watchdog", daemon=True).start()
    return done


def build_predictors(prepared, on_built=None, startup_timeout=None, on_timeout=None):
    """Runs every API's __init__ on this thread; on_built(index, instance) after each.
    startup_timeout: seconds each __init__ may take before the process exits (None, 0: none),
    after on_timeout()."""
    metrics_client = MetricsClient()
    load_models(prepared)
    instances = []
    for index, (api, cls) in enumerate(zip(prepared.project.apis, prepared.classes)):
        previous = _core.set_current_api(index)
        finished = _startup_watchdog(startup_timeout, f"{api.predictor_path}: __init__", on_timeout)
        try:
            client = prepared.tensorflow_clients.get(index)
            instance = instantiate(api, cls, metrics_client,
                                   client and {"tensorflow_client": client})
        finally:
            finished.set()
            _core.set_current_api(previous)
        instances.append(instance)
        if on_built:
            on_built(index, instance)
    return instances


def server_entries(prepared):
    """The C server's API entries (AsyncRuntime.adjust changes those of AsyncAPIs); the
    tensorflow clients are built first (load_models), so GET shows their model_metadata."""
    return [{
        "name": api.name,
        "endpoint": api.endpoint,
        "get_body": _get_body(prepared, index),
        "max_concurrency": api.max_replica_concurrency,
        "predict_args": cls.predict_args,
        "post_predict_args": cls.post_predict_args,
        "max_batch_size": api.batching.max_batch_size if api.batching else None,
        "batch_interval": api.batching.batch_interval if api.batching else 0.0,
    } for index, (api, cls) in enumerate(zip(prepared.project.apis, prepared.classes))]


def set_handler(server, prepared, index, instance):
    """Routes API index of server to its predictor instance (post_predict when it has one)."""
    post_predict = (getattr(instance, "post_predict", None)
                    if prepared.classes[index].post_predict_args is not None else None)
    server.set_handler(index, instance.predict, post_predict)


def connection_limit(requested=None) -> int:
    """How many connections a serving process may hold: requested (default
    DEFAULT_MAX_CONNECTIONS), raising the soft RLIMIT_NOFILE towards the hard one to fit them
    (many systems start processes at a soft 1024), and lowered to what the limit then allows
    so libmicrohttpd never runs out of descriptors (it would stop accepting for a while)."""
    wanted = requested or DEFAULT_MAX_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < need:
        new_soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError):  # e.g. above the kernel's nr_open: keep the old limit
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    allowed = max(1, soft - FD_HEADROOM)
    if requested:
        logger.warning(f"--max-connections {requested} is more than the open-file limit allows "
                       f"(RLIMIT_NOFILE {soft}, hard {hard}): holding at most {allowed} connections")
    return allowed


def serve(args) -> int:
    args.max_connections = connection_limit(getattr(args, "max_connections", None))
    overrides = {"processes": args.processes, "threads": args.threads, "log_level": args.log_level}
    prepared = prepare(args.path, args.api, overrides, args.log_level)
    try:
        return _serve_prepared(prepared, args)
    finally:
        prepared.cleanup()


def _announce(args, port, project):
    log.announce("listening", host=args.host, port=port,
                 apis=[{"name": api.name, "endpoint": api.endpoint} for api in project.apis])


def _serve_prepared(prepared, args) -> int:
    _core.metrics_setup()  # before any worker is forked: they share one registry
    project = prepared.project
    processes = max(api.processes for api in project.apis)
    if processes == 1:
        return _serve_process(prepared, args)
    supervisor = Supervisor(
        args, processes,
        run_worker=lambda listen_fd, shared_ready, on_ready, join_early: _serve_process(
            prepared, args, listen_fd=listen_fd, shared_ready=shared_ready, on_ready=on_ready,
            join_early=join_early),
        announce=lambda: _announce(args, args.port, project))
    return supervisor.run()


def _serve_process(prepared, args, listen_fd=-1, shared_ready=None, on_ready=None,
                   join_early=True) -> int:
    """One serving process: the only one, or a worker (then on_ready replaces the announcement).
    join_early: a worker serves (503 while starting) during its __init__; else it joins the
    socket only after it."""
    project = prepared.project
    load_models(prepared, getattr(args, "tfs_address", None))  # GET shows model_metadata
    api_entries = server_entries(prepared)
    async_runtime = asyncapi.AsyncRuntime(project, prepared.classes, args)  # opens the store
    async_runtime.adjust(api_entries)
    is_worker = listen_fd >= 0
    # a worker replacing a dead one joins the shared socket only once its __init__ is done, so
    # no request meets it unready while the others could have answered; at start-up, when
    # nobody could, every worker answers at once (/healthz 503 "starting", as one process does)
    early_instances = (build_predictors(prepared, startup_timeout=getattr(args, "startup_timeout", None))
                       if is_worker and not join_early else None)
    try:
        server = _core.Server(host=args.host, port=args.port, max_body_size=args.max_body_size,
                              idle_timeout=args.idle_timeout, access_log=not args.no_access_log,
                              apis=api_entries, listen_fd=listen_fd,
                              request_timeout=getattr(args, "request_timeout", 0.0) or 0.0,
                              max_connections=getattr(args, "max_connections", 0) or 0,
                              # worker processes share one listening socket and every idle
                              # one is woken for a new connection: real-time I/O threads would
                              # win that race in the same order every time, and the last ones
                              # would never get a connection
                              realtime_io=not getattr(args, "no_realtime_io", False) and not is_worker)
    except OSError as e:
        async_runtime.close()
        raise StartupError(str(e)) from None
    if shared_ready is not None:
        server.set_shared_ready(shared_ready)
    if early_instances is not None:
        # its __init__ is done: what it accepts before work() starts waits for it, not a 503
        server.set_ready(True)
    for index, client in prepared.tensorflow_clients.items():
        client.on_change(lambda index=index: _refresh_get_body(server, prepared, index))

    stop_requested = threading.Event()

    def on_signal(signum, frame):
        if stop_requested.is_set():
            force_exit(signum)
        stop_requested.set()
        async_runtime.begin_stop()
        server.begin_drain(args.grace_period)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        def route(index, instance):
            set_handler(server, prepared, index, instance)

        if early_instances is None:
            # the only process removes the staged copy; workers share it with later restarts
            instances = build_predictors(prepared, route, getattr(args, "startup_timeout", None),
                                         None if is_worker else prepared.cleanup)
        else:
            instances = early_instances
            for index, instance in enumerate(instances):
                route(index, instance)
        if stop_requested.is_set():
            return 0
        async_runtime.start(server, instances)  # AsyncAPIs: submit/status, background claimers
        server.set_ready(True)
        if on_ready is None:
            _announce(args, server.port, project)
        else:
            on_ready()
        threads = max(api.threads for api in project.apis)
        extra_workers = [threading.Thread(target=server.work, name=f"cortex-worker-{i}", daemon=True)
                         for i in range(1, threads)]
        for worker in extra_workers:
            worker.start()
        server.work()  # this thread ran __init__, so with one thread it also runs predict
        server.stop_workers()
        for worker in extra_workers:
            worker.join(timeout=args.grace_period)
        return 0
    finally:
        async_runtime.close(args.grace_period)
        server.close()


def force_exit(signum):
    """A second SIGTERM or SIGINT (Ctrl-C twice) during a drain: stop waiting for it."""
    logger.warning(f"second {signal.Signals(signum).name} while draining: exiting now, "
                   f"requests still in flight are dropped")
    os._exit(1)


def _validate_config(path, problems):
    """load_project, but one problem per API instead of only the first: returns the Project of
    the APIs that validated (None when the file itself is unusable), problems appended."""
    try:
        return load_project(path)  # what serve accepts, warnings included
    except StartupError as e:
        failure = str(e)
    try:
        config_file = find_config(path)
        label = os.path.basename(config_file)
        document = read_yaml(config_file, label)
    except StartupError as e:
        problems.append(str(e))
        return None
    if isinstance(document, dict):
        entries = [document]
    elif isinstance(document, list) and document:
        entries = document
    else:
        problems.append(failure)
        return None
    root = os.path.dirname(config_file)
    warnings, apis, indexes = [], [], []
    for index, raw in enumerate(entries):
        try:
            api = ApiValidator(label, root, index, raw, warnings).validate()
        except StartupError as e:
            problems.append(str(e))
            continue
        problem = None
        for other_index, other in zip(indexes, apis):
            if other.name == api.name:
                problem = (f'{label}: api at index {index}: name: "{api.name}" '
                           f"is already used by the api at index {other_index}")
            elif other.endpoint == api.endpoint:
                problem = (f'{label}: api "{api.name}": networking.endpoint: '
                           f'"{api.endpoint}" is already used by api "{other.name}"')
            if problem:
                break
        if problem:
            problems.append(problem)
            continue
        apis.append(api)
        indexes.append(index)
    if not problems:
        problems.append(failure)
    return Project(root=root, config_file=config_file, apis=apis, warnings=warnings)


def validate(args) -> int:
    """Checks the config and every API's predictor class as serve would (without running
    __init__); prints every problem found as an "error: " line, exits 1 if there was any."""
    problems = []
    project = _validate_config(args.path, problems)
    staged_root = None
    try:
        if project is not None and project.apis:
            for warning in project.warnings:
                logger.warning(warning)
            try:
                staged_root = _enter_project(project)
            except StartupError as e:
                problems.append(str(e))
                project.apis = []
            for index, api in enumerate(project.apis):
                log.set_api_level(index, api.log_level)
                previous = _core.set_current_api(index)
                try:
                    _unsupported(Project(project.root, project.config_file, [api], []))
                    load_class(api, staged_root)
                except StartupError as e:
                    problems.append(str(e))
                    continue
                finally:
                    _core.set_current_api(previous)
                print(f"ok: {api.name} ({api.kind}, predictor.type {api.predictor_type}) at {api.endpoint}")
    finally:
        if staged_root is not None:
            shutil.rmtree(os.path.dirname(staged_root), ignore_errors=True)
    sys.stdout.flush()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _read_data(args):
    if args.json is not None:
        return args.json.encode("utf-8"), args.content_type or "application/json"
    data = args.data
    if data.startswith("@"):
        try:
            with open(data[1:], "rb") as f:
                body = f.read()
        except OSError as e:
            raise StartupError(f"--data: cannot read {data[1:]}: {e.strerror}") from None
    else:
        body = data.encode("utf-8")
    return body, args.content_type


def _response_head(status, media_type, body, request_id, user_headers):
    """The status line and headers the server would send with this response."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
    skip = ("content-length", "transfer-encoding")
    lines += [f"{name}: {value}" for name, value in user_headers if name.lower() not in skip]
    if media_type and not any(name.lower() == "content-type" for name, _ in user_headers):
        lines.append(f"Content-Type: {media_type}")
    lines.append(f"X-Request-ID: {request_id}")
    if 200 <= status < 300:
        lines += ["Access-Control-Allow-Origin: *", "Access-Control-Allow-Methods: GET, POST, OPTIONS",
                  "Access-Control-Allow-Headers: *", "Access-Control-Allow-Credentials: true"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def predict(args) -> int:
    log.to_stderr()  # stdout carries the response alone
    body, content_type = _read_data(args)  # read before chdir into the staged project
    prepared = prepare(args.path, args.api and [args.api], log_level=args.log_level)
    try:
        if len(prepared.project.apis) != 1:
            names = ", ".join(api.name for api in prepared.project.apis)
            raise StartupError(f"this project has several apis ({names}): choose one with --api")
        instance = build_predictors(prepared)[0]
        user_headers = []

        def traced_predict(*call_args, **kwargs):
            result = instance.predict(*call_args, **kwargs)
            parts = response_parts(result)
            if parts is not None:
                user_headers[:] = parts[3]
            return result

        _core.set_current_api(0)
        request_id = str(uuid.uuid4())
        status, media_type, response = _core.call_predictor(
            predict=traced_predict if args.include else instance.predict,
            arg_names=prepared.classes[0].predict_args,
            content_type=content_type, body=body, request_id=request_id)
        if args.include:
            sys.stdout.buffer.write(_response_head(status, media_type, response, request_id,
                                                   user_headers))
        sys.stdout.buffer.write(response + b"\n")
        sys.stdout.flush()
        return 0 if status < 400 else 1
    finally:
        prepared.cleanup()
