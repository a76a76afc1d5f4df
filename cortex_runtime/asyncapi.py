"""AsyncAPI (SPEC section 7): POST stores the workload and answers {"id": ...} at once;
GET <endpoint>/<id> reports it; background claimers run predict and store the outcome.

Threads, with threads_per_process = N:
- the C server's ordinary work() threads (N of them; with N = 1 only the main thread, the
  one that ran __init__) are the only threads that run user code, realtime and async alike:
  a claimer hands each predict call to them with Server.call_soon, so SPEC section 4's
  "with 1, __init__ and predict run on the same thread" holds for AsyncAPIs too, and
  realtime requests of the same project share the same N slots;
- one work(only_async=True) thread answers the AsyncAPIs' POST (submit) and GET (status),
  which run no user code, so a long predict on the only work() thread never delays them
  (either kind of work() thread may answer them);
- per AsyncAPI, N claimer threads: claim one workload from the store (I/O without the GIL),
  queue its predict call, wait for it (renewing a Redis lease meanwhile), store the outcome.
  A claimer claims only when it is free, so a replica never hoards queued workloads.

Ids: the request's X-Request-ID when it has an id's shape (ID_PATTERN), else a fresh UUID4;
the same id is predict's request_id.  A POST repeating the id of a stored workload is
answered with that id and stores nothing (a client's retry is not run twice).  A GET whose
id does not have the shape is a 404 before any lookup.

Durability: see async_store.py.  Shutdown (SIGTERM): claimers stop claiming at once, the
predict calls already queued run within the grace period, and a claimed workload that never
ran is put back at the front of the queue; one killed mid-predict is re-queued later
(SQLite: at the next start of any serve process on the same --state-dir; Redis: when its
lease expires).
"""
import datetime
import json
import sqlite3
import threading
import time
import uuid

from . import _core
from .async_store import EXISTS, FULL, ID_PATTERN, StoreUnavailable, open_store
from .errors import StartupError
from .log import logger
from .response import Response

SUBMIT_ARGS = ["body", "content_type", "request_id"]  # bridge.h's internal argument codes
STORE_ERRORS = (StoreUnavailable, sqlite3.Error)
CLAIM_WAIT_S = 0.5        # how long one claim call waits before the loop looks at its flags
STORE_RETRY_S = 0.5       # pause after a failed store call
DEFAULT_MAX_QUEUE = 10000
DEFAULT_RESULT_TTL = 7 * 24 * 3600


def _json_error(status, message):
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    return Response(body, status=status, media_type="application/json")


NOT_FOUND = "no workload with this id"


def check(label, api):
    """Start-up checks of an AsyncAPI that config.py does not make."""
    if api.kind == "AsyncAPI" and api.batching:
        raise StartupError(f'{label}: api "{api.name}": predictor.server_side_batching: '
                           "is not supported for kind AsyncAPI")


def _timestamp():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Call:
    """One predict call queued for a work() thread; abandon() wins only before it starts."""

    def __init__(self, fn):
        self.fn = fn
        self.lock = threading.Lock()
        self.state = "queued"
        self.done = threading.Event()
        self.outcome = None

    def __call__(self):
        with self.lock:
            if self.state != "queued":
                return
            self.state = "running"
        try:
            self.outcome = self.fn()
        finally:
            self.done.set()

    def abandon(self):
        with self.lock:
            if self.state == "queued":
                self.state = "abandoned"
                return True
            return False


class _AsyncApi:
    def __init__(self, index, api, predictor_class):
        self.index = index
        self.name = api.name
        self.threads = api.threads
        self.predict_args = predictor_class.predict_args
        self.predict = None
        self.log_slot = index  # the entry's "log_slot" when it has one (see adjust)


class AsyncRuntime:
    """Every AsyncAPI of one serving process; inert (active False) when there is none."""

    def __init__(self, project, classes, args):
        self.apis = [_AsyncApi(i, api, cls) for i, (api, cls) in enumerate(zip(project.apis, classes))
                     if api.kind == "AsyncAPI"]
        self.active = bool(self.apis)
        self.store = None
        self.server = None
        self.threads = []
        self.stopping = threading.Event()   # no new claims
        self.abandoning = threading.Event()  # the work() threads are gone: give back what waits
        if not self.active:
            return
        self.max_queue = getattr(args, "async_max_queue", None) or DEFAULT_MAX_QUEUE
        ttl = getattr(args, "async_result_ttl", None)
        self.result_ttl = DEFAULT_RESULT_TTL if ttl is None else ttl
        self.log_workloads = not getattr(args, "no_access_log", False)
        self.store = open_store(getattr(args, "async_backend", None), getattr(args, "state_dir", None),
                                project.root, fsync=getattr(args, "async_fsync", None) or "full")
        try:
            for entry in self.apis:
                self.store.open_api(entry.name)
                self._recover(entry)
        except STORE_ERRORS as e:
            self.store.close()
            raise StartupError(f"the workload store is unusable: {e}") from None
        logger.info("async workloads are stored here", extra=self.store.describe())

    # -- set-up, from serve.py ------------------------------------------------------------
    def adjust(self, api_entries):
        """The C server's entries of AsyncAPIs: POST goes to submit with the raw body."""
        for entry in self.apis:
            entry.log_slot = api_entries[entry.index].get("log_slot", entry.index)
            api_entries[entry.index].update(
                {"async": True, "predict_args": SUBMIT_ARGS, "post_predict_args": None,
                 "max_batch_size": None})

    def start(self, server, instances):
        """After every __init__, before the server is ready."""
        if not self.active:
            return
        self.server = server
        for entry in self.apis:
            entry.predict = instances[entry.index].predict
            server.set_async_handler(
                entry.index,
                lambda body, content_type, request_id, entry=entry: self.submit(entry, body, content_type, request_id),
                lambda workload_id, entry=entry: self.status(entry, workload_id))
        front = threading.Thread(target=server.work, kwargs={"only_async": True},
                                 name="cortex-async-http", daemon=True)
        self.threads.append(front)
        front.start()
        for entry in self.apis:
            for i in range(entry.threads):
                thread = threading.Thread(target=self._claimer, args=(entry,),
                                          name=f"cortex-async-{entry.name}-{i}", daemon=True)
                self.threads.append(thread)
                thread.start()

    def begin_stop(self):
        """SIGTERM: claim nothing more."""
        self.stopping.set()

    def close(self, timeout=30.0):
        """After the work() threads returned: waits for the claimers, closes the store."""
        if not self.active:
            return
        self.stopping.set()
        self.abandoning.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.store.close()

    # -- HTTP, on work() threads ----------------------------------------------------------
    def submit(self, entry, body, content_type, request_id):
        workload_id = request_id if ID_PATTERN.match(request_id) else str(uuid.uuid4())
        try:
            outcome = self.store.submit(entry.name, workload_id, content_type, body, self.max_queue)
        except STORE_ERRORS as e:
            logger.error(f"cannot store the workload: {e}", extra={"request_id": workload_id})
            return _json_error(503, "the workload store is unavailable: try again later")
        if outcome == FULL:
            return _json_error(503, f"the workload queue is full ({self.max_queue} pending): try again later")
        if outcome == EXISTS:
            logger.debug("workload already stored", extra={"request_id": workload_id})
        return {"id": workload_id}

    def status(self, entry, workload_id):
        if not ID_PATTERN.match(workload_id):
            return _json_error(404, NOT_FOUND)
        try:
            found = self.store.status(entry.name, workload_id)
        except STORE_ERRORS as e:
            logger.error(f"cannot read the workload: {e}", extra={"request_id": workload_id})
            return _json_error(503, "the workload store is unavailable: try again later")
        if found is None:
            return _json_error(404, NOT_FOUND)
        # what json.dumps of the dict gives, without decoding the stored result
        text = f'{{"id": {_core.json_dumps(workload_id)}, "status": {_core.json_dumps(found.status)}'
        if found.status == "completed":
            text += f', "result": {found.result}, "timestamp": {_core.json_dumps(found.timestamp)}'
        return Response((text + "}").encode(), media_type="application/json")

    # -- background -----------------------------------------------------------------------
    def _recover(self, entry):
        n = self.store.recover(entry.name)
        if n:
            logger.warning(f"re-queued {n} workload(s) left in progress by a stopped process",
                           extra={"api": entry.name, "requeued": n})

    def _claimer(self, entry):
        _core.set_current_api(entry.log_slot)
        owner = self.store.owner_token()
        interval = self.store.recover_interval  # re-queue orphans, drop expired results
        next_maintenance = time.monotonic() + interval
        outage = False
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_maintenance:
                    next_maintenance = time.monotonic() + interval
                    self._recover(entry)
                    self.store.expire(self.result_ttl)
                workload = self.store.claim(entry.name, owner, CLAIM_WAIT_S)
            except STORE_ERRORS as e:
                if not outage:
                    logger.error(f"the workload store is unavailable: {e}", extra={"api": entry.name})
                    outage = True
                self.stopping.wait(STORE_RETRY_S)
                continue
            if outage:
                logger.info("the workload store is reachable again", extra={"api": entry.name})
                outage = False
            if workload is None:
                continue
            if self.stopping.is_set():
                self._release(entry, workload, owner)
                break
            self._process(entry, workload, owner)

    def _release(self, entry, workload, owner):
        try:
            self.store.release(entry.name, workload.id, owner)
        except STORE_ERRORS:
            pass  # left in progress: re-queued like a crashed claimer's

    def _process(self, entry, workload, owner):
        started = time.monotonic()
        call = _Call(lambda: self._run(entry, workload))
        if not self.server.call_soon(call):
            self._release(entry, workload, owner)
            return
        visibility = getattr(self.store, "visibility", None)
        wait = visibility / 3 if visibility else CLAIM_WAIT_S
        while not call.done.wait(wait):
            if visibility:
                try:
                    self.store.heartbeat(entry.name, workload.id, owner)
                except STORE_ERRORS:
                    pass
            if self.abandoning.is_set() and call.abandon():
                self._release(entry, workload, owner)
                return
        status, result = call.outcome or ("failed", None)
        timestamp = _timestamp() if status == "completed" else None
        while True:
            try:
                self.store.finish(entry.name, workload.id, owner, status, result, timestamp, self.result_ttl)
                break
            except STORE_ERRORS as e:
                if self.abandoning.is_set():
                    return  # left in progress: re-queued, and run again, later
                logger.error(f"cannot store the outcome of the workload: {e}", extra={"request_id": workload.id})
                self.abandoning.wait(STORE_RETRY_S)
        if self.log_workloads:
            logger.info(f"workload {status}", extra={
                "request_id": workload.id, "status": status,
                "latency_ms": round((time.monotonic() - started) * 1000.0, 3)})

    def _run(self, entry, workload):
        """On a work() thread: the payload decoded as a realtime request's would be, predict,
        then Cortex's rule for the result.  Returns (status, result JSON text or None)."""
        captured = {}

        def call(**kwargs):
            try:
                captured["result"] = entry.predict(**kwargs)
            except Exception as e:
                captured["error"] = e

        previous = _core.set_current_api(entry.log_slot)
        try:
            code, _, body = _core.call_predictor(
                predict=call, arg_names=entry.predict_args, content_type=workload.content_type,
                body=workload.body, request_id=workload.id)
            _core.set_current_api(entry.log_slot)  # call_predictor leaves no API current
            extra = {"request_id": workload.id}
            if "error" in captured:
                error = captured["error"]
                logger.error(f"exception in predict() for workload {workload.id}: {error}",
                             exc_info=error, extra=extra)
                return "failed", None
            if "result" not in captured:
                text = body.decode("utf-8", "replace")
                if code >= 500:
                    return "failed", None  # logged with its traceback by the bridge
                logger.error(f"workload {workload.id}: the payload could not be decoded "
                             f"(content type {workload.content_type}): {text}", extra=extra)
                return "failed", None
            result = captured["result"]
            message = f"user response must be json serializable dictionary, got {type(result)} instead"
            if not isinstance(result, dict):
                logger.error(message, extra=extra)
                return "failed", None
            try:
                return "completed", _core.json_dumps(result)
            except Exception as e:
                logger.error(f"{message}: {e}", extra=extra)
                return "failed", None
        finally:
            _core.set_current_api(previous)
