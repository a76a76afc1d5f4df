"""Where AsyncAPI workloads live: one interface, two backends.

A workload is (api, id) with a status `in_queue` -> `in_progress` -> `completed` | `failed`,
the stored request body and content type until it ends, and then its result (JSON text) and
an RFC 3339 timestamp, kept for `result_ttl` seconds (0: forever).

Guarantees both backends give (at-least-once, nothing lost):
- `submit` returns only after the workload is stored as durably as the backend allows
  (SQLite: the transaction is committed, fsync'd per `fsync`; Redis: the server has
  executed the write, durable as its own persistence settings make it);
- `claim` hands a queued workload to exactly one claimer, marked `in_progress` with an owner;
- a claimer that dies leaves it `in_progress`: SQLite re-queues workloads whose owning process
  is gone (`recover`, at start-up and now and then); Redis re-queues a workload whose lease
  (visibility timeout, renewed by `heartbeat` while predict runs) has expired (`recover`);
- `finish` stores the outcome once: a workload already ended is not rewritten;
- `release` puts a claimed workload back at the front of the queue without running it.

Ids reaching a store are already checked against ID_PATTERN by the caller (asyncapi.py);
the stores never build file names from them.
"""
import fcntl
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import StartupError

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")
FINAL = ("completed", "failed")

SUBMITTED, EXISTS, FULL = "submitted", "exists", "full"


class StoreUnavailable(Exception):
    """The backend cannot be reached right now (Redis down): callers answer 503 or retry."""


@dataclass
class Workload:
    id: str
    content_type: "str | None"
    body: bytes


@dataclass
class Status:
    status: str
    result: "str | None" = None     # JSON text, completed only
    timestamp: "str | None" = None  # RFC 3339 UTC, completed only


def _process_start_time(pid):
    """The process's start time in clock ticks since boot (/proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: fields follow the last ')'
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_token(pid=None):
    """Names a live process uniquely on this machine: a pid can be reused, pid+start cannot."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_process_start_time(pid)}"


def _token_alive(token):
    try:
        pid_text, start = token.split(":", 1)
        pid = int(pid_text)
    except (AttributeError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _process_start_time(pid)
    return now is None or start == "None" or str(now) == start


# ---- SQLite -------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS workloads (
    seq INTEGER PRIMARY KEY,
    api TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    content_type TEXT,
    body BLOB,
    owner TEXT,
    created REAL NOT NULL,
    finished REAL,
    result TEXT,
    timestamp TEXT,
    UNIQUE (api, id)
);
CREATE INDEX IF NOT EXISTS workloads_queued ON workloads (api, seq) WHERE status = 'in_queue';
CREATE INDEX IF NOT EXISTS workloads_running ON workloads (api, owner) WHERE status = 'in_progress';
CREATE INDEX IF NOT EXISTS workloads_finished ON workloads (finished) WHERE finished IS NOT NULL;
CREATE TABLE IF NOT EXISTS pending (api TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


class SqliteStore:
    """One database file for every API of a project, under the state directory.  WAL mode:
    readers never wait for the writer; writers (threads and worker processes) take turns
    through SQLite's lock.  fsync: "full" fsyncs the WAL at every commit (a 200 survives a
    power cut); "normal" fsyncs at checkpoints only (a 200 survives any crash of this
    process, the last commits may roll back on a power cut or kernel crash)."""

    kind = "sqlite"
    POLL_S = 0.05  # how often an idle claimer looks for work another process queued
    recover_interval = 10.0  # a dead sibling's workloads wait at most this long (s)

    def __init__(self, state_dir, fsync="full"):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "workloads.sqlite3")
        self.synchronous = {"full": "FULL", "normal": "NORMAL"}[fsync]
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            # worker processes start together: one at a time switches to WAL and creates tables
            with open(os.path.join(state_dir, "workloads.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                conn = self._connect()
                conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: once is enough
                with conn:
                    conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StartupError(f"--state-dir {state_dir}: cannot open the workload database: {e}") from None
        self._local = threading.local()
        self._local.conn = conn
        self._write_lock = threading.Lock()
        self._all = [conn]
        self._all_lock = threading.Lock()
        self._wakeup = threading.Condition()
        self._owner = process_token()

    def describe(self):
        return {"backend": "sqlite", "database": self.path}

    def _connect(self):
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _write(self, fn):
        """Runs fn(conn) in one IMMEDIATE transaction (the write lock from the start).  This
        process's writers queue on a lock of ours first: SQLite's own busy wait sleeps in
        steps of up to 100 ms, which is for other processes only."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return value

    def open_api(self, api):
        """Counts what is queued (the bound's counter is rebuilt, never trusted across runs)."""
        def fn(conn):
            n = conn.execute("SELECT COUNT(*) FROM workloads WHERE api = ? AND status = 'in_queue'",
                             (api,)).fetchone()[0]
            conn.execute("INSERT INTO pending (api, n) VALUES (?, ?) "
                         "ON CONFLICT (api) DO UPDATE SET n = excluded.n", (api, n))
        self._write(fn)

    def submit(self, api, workload_id, content_type, body, max_queue):
        def fn(conn):
            cursor = conn.execute(
                "INSERT INTO workloads (api, id, status, content_type, body, created) "
                "VALUES (?, ?, 'in_queue', ?, ?, ?) ON CONFLICT (api, id) DO NOTHING",
                (api, workload_id, content_type, body, time.time()))
            if cursor.rowcount == 0:
                return EXISTS
            if conn.execute("UPDATE pending SET n = n + 1 WHERE api = ? AND n < ?",
                            (api, max_queue)).rowcount == 0:
                raise _Full()
            return SUBMITTED
        try:
            outcome = self._write(fn)
        except _Full:
            return FULL
        if outcome == SUBMITTED:
            with self._wakeup:
                self._wakeup.notify()
        return outcome

    def status(self, api, workload_id):
        row = self._conn().execute("SELECT status, result, timestamp FROM workloads WHERE api = ? AND id = ?",
                                   (api, workload_id)).fetchone()
        return Status(*row) if row else None

    def claim(self, api, owner, timeout):
        deadline = time.monotonic() + timeout
        conn = self._conn()
        while True:
            # a read first: idle claimers never take the write lock
            if conn.execute("SELECT 1 FROM workloads WHERE api = ? AND status = 'in_queue' LIMIT 1",
                            (api,)).fetchone():
                workload = self._write(lambda c: self._claim_one(c, api, owner))
                if workload is not None:
                    return workload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._wakeup:
                self._wakeup.wait(min(left, self.POLL_S))

    @staticmethod
    def _claim_one(conn, api, owner):
        row = conn.execute("SELECT seq, id, content_type, body FROM workloads "
                           "WHERE api = ? AND status = 'in_queue' ORDER BY seq LIMIT 1", (api,)).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE workloads SET status = 'in_progress', owner = ? WHERE seq = ?", (owner, row[0]))
        conn.execute("UPDATE pending SET n = MAX(n - 1, 0) WHERE api = ?", (api,))
        return Workload(row[1], row[2], bytes(row[3] or b""))

    def owner_token(self):
        return self._owner

    def heartbeat(self, api, workload_id, owner):
        pass  # ownership is the process itself: it ends when the process does

    def finish(self, api, workload_id, owner, status, result, timestamp, result_ttl=0):
        self._write(lambda conn: conn.execute(
            "UPDATE workloads SET status = ?, result = ?, timestamp = ?, finished = ?, body = NULL, "
            "content_type = NULL, owner = NULL WHERE api = ? AND id = ? AND status NOT IN ('completed', 'failed')",
            (status, result, timestamp, time.time(), api, workload_id)))

    def release(self, api, workload_id, owner):
        def fn(conn):
            if conn.execute("UPDATE workloads SET status = 'in_queue', owner = NULL "
                            "WHERE api = ? AND id = ? AND status = 'in_progress' AND owner = ?",
                            (api, workload_id, owner)).rowcount:
                conn.execute("UPDATE pending SET n = n + 1 WHERE api = ?", (api,))
        self._write(fn)
        with self._wakeup:
            self._wakeup.notify()

    def recover(self, api):
        """Re-queues the workloads of processes that are gone; returns how many."""
        owners = [row[0] for row in self._conn().execute(
            "SELECT DISTINCT owner FROM workloads WHERE api = ? AND status = 'in_progress'", (api,))]
        dead = [owner for owner in owners if owner != self._owner and not _token_alive(owner)]
        if not dead:
            return 0

        def fn(conn):
            n = 0
            for owner in dead:
                n += conn.execute("UPDATE workloads SET status = 'in_queue', owner = NULL "
                                  "WHERE api = ? AND status = 'in_progress' AND owner = ?",
                                  (api, owner)).rowcount
            conn.execute("UPDATE pending SET n = n + ? WHERE api = ?", (n, api))
            return n
        return self._write(fn)

    def expire(self, result_ttl):
        if result_ttl > 0:
            self._write(lambda conn: conn.execute(
                "DELETE FROM workloads WHERE finished IS NOT NULL AND finished < ?",
                (time.time() - result_ttl,)))

    def close(self):
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass


class _Full(Exception):
    pass


# ---- Redis --------------------------------------------------------------------------------

# Keys of one API, all with the same hash tag (one cluster slot):
#   P = "cortex_runtime:{<api>}:"
#   P queue            list of queued ids: LPUSH in, popped from the right (FIFO)
#   P processing       list of claimed ids
#   P w:<id>           hash: status, ct (content type, "" when none), body, created;
#                      at the end: result, timestamp (body and ct deleted), EXPIRE result_ttl
#   P lease:<id>       the claimer's token, PX visibility timeout, renewed while predict runs
# Every step is one Lua script, so each is atomic on the server.

_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'in_queue', 'ct', ARGV[2], 'body', ARGV[3], 'created', ARGV[4])
redis.call('LPUSH', KEYS[2], ARGV[5])
return 1
"""

_CLAIM = """
while true do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not id then return false end
  local w = ARGV[1] .. 'w:' .. id
  if redis.call('HGET', w, 'status') == 'in_queue' then
    redis.call('SET', ARGV[1] .. 'lease:' .. id, ARGV[2], 'PX', ARGV[3])
    redis.call('HSET', w, 'status', 'in_progress')
    local f = redis.call('HMGET', w, 'ct', 'body')
    return {id, f[1] or '', f[2] or ''}
  end
  redis.call('LREM', KEYS[2], 1, id)
end
"""

_HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_FINISH = """
if redis.call('GET', KEYS[3]) == ARGV[6] then redis.call('DEL', KEYS[3]) end
redis.call('LREM', KEYS[2], 1, ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if not st or st == 'completed' or st == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if ARGV[2] == 'completed' then redis.call('HSET', KEYS[1], 'result', ARGV[3], 'timestamp', ARGV[4]) end
redis.call('HDEL', KEYS[1], 'body', 'ct')
if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
if redis.call('LREM', KEYS[2], 1, ARGV[1]) > 0 and redis.call('HGET', KEYS[1], 'status') == 'in_progress' then
  redis.call('HSET', KEYS[1], 'status', 'in_queue')
  redis.call('RPUSH', KEYS[4], ARGV[1])
end
return 0
"""

_RECOVER = """
local n = 0
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. 'lease:' .. id) == 0 then
    redis.call('LREM', KEYS[1], 1, id)
    local w = ARGV[1] .. 'w:' .. id
    if redis.call('HGET', w, 'status') == 'in_progress' then
      redis.call('HSET', w, 'status', 'in_queue')
      redis.call('RPUSH', KEYS[2], id)
      n = n + 1
    end
  end
end
return n
"""


class RedisStore:
    """Many serve processes on many machines share one queue and one result store."""

    kind = "redis"
    DEFAULT_VISIBILITY_S = 30.0
    IDLE_POLL_S = (0.002, 0.05)  # claim polling backs off from the first to the second

    def __init__(self, url):
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:
            raise StartupError("--async-backend redis://...: the redis package is not installed "
                               "(pip install 'cortex_runtime[redis]')") from None
        self._errors = (redis.RedisError,)
        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        ours = {k: v for k, v in query if k == "visibility_timeout"}
        try:
            self.visibility = float(ours.get("visibility_timeout", self.DEFAULT_VISIBILITY_S))
            if self.visibility <= 0:
                raise ValueError
        except ValueError:
            raise StartupError(f"--async-backend {url}: visibility_timeout must be a positive number of seconds") from None
        self.url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k not in ours])))
        self.recover_interval = min(10.0, self.visibility / 2)
        try:
            self._redis = redis.Redis.from_url(
                self.url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=10,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 6),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError])
            self._redis.ping()
        except (ValueError, redis.RedisError) as e:
            raise StartupError(f"--async-backend {url}: cannot connect: {e}") from None
        self._scripts = {name: self._redis.register_script(text) for name, text in (
            ("submit", _SUBMIT), ("claim", _CLAIM), ("heartbeat", _HEARTBEAT),
            ("finish", _FINISH), ("release", _RELEASE), ("recover", _RECOVER))}
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def describe(self):
        parts = urlsplit(self.url)
        shown = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")) if parts.hostname else parts
        return {"backend": "redis", "url": urlunsplit(shown), "visibility_timeout": self.visibility}

    @staticmethod
    def _prefix(api):
        return f"cortex_runtime:{{{api}}}:"

    def _run(self, name, keys, args):
        try:
            return self._scripts[name](keys=keys, args=args)
        except self._errors as e:
            raise StoreUnavailable(str(e)) from e

    def open_api(self, api):
        pass

    def owner_token(self):
        return self._owner

    def submit(self, api, workload_id, content_type, body, max_queue):
        p = self._prefix(api)
        rc = self._run("submit", [p + "w:" + workload_id, p + "queue"],
                       [max_queue, (content_type or "").encode("latin-1", "replace"), body, time.time(),
                        workload_id])
        return {0: FULL, 1: SUBMITTED, 2: EXISTS}[int(rc)]

    def status(self, api, workload_id):
        try:
            status, result, timestamp = self._redis.hmget(self._prefix(api) + "w:" + workload_id,
                                                          ["status", "result", "timestamp"])
        except self._errors as e:
            raise StoreUnavailable(str(e)) from e
        if status is None:
            return None
        return Status(status.decode(), result.decode() if result is not None else None,
                      timestamp.decode() if timestamp is not None else None)

    def claim(self, api, owner, timeout):
        p = self._prefix(api)
        deadline = time.monotonic() + timeout
        pause = self.IDLE_POLL_S[0]
        while True:
            found = self._run("claim", [p + "queue", p + "processing"], [p, owner, int(self.visibility * 1000)])
            if found:
                workload_id, content_type, body = found
                return Workload(workload_id.decode(), content_type.decode("latin-1") or None, bytes(body))
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 2, self.IDLE_POLL_S[1])

    def heartbeat(self, api, workload_id, owner):
        self._run("heartbeat", [self._prefix(api) + "lease:" + workload_id], [owner, int(self.visibility * 1000)])

    def finish(self, api, workload_id, owner, status, result, timestamp, result_ttl=0):
        p = self._prefix(api)
        self._run("finish", [p + "w:" + workload_id, p + "processing", p + "lease:" + workload_id],
                  [workload_id, status, result or "", timestamp or "", int(result_ttl), owner])

    def release(self, api, workload_id, owner):
        p = self._prefix(api)
        self._run("release", [p + "w:" + workload_id, p + "processing", p + "lease:" + workload_id, p + "queue"],
                  [workload_id, owner])

    def recover(self, api):
        p = self._prefix(api)
        return int(self._run("recover", [p + "processing", p + "queue"], [p]))

    def expire(self, result_ttl):
        pass  # each ended workload's hash carries its own EXPIRE

    def close(self):
        try:
            self._redis.close()
        except self._errors:
            pass


def default_state_dir(project_root):
    """$XDG_STATE_HOME/cortex_runtime/<project dir name>-<hash of its path> (or ~/.local/state)."""
    import hashlib

    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    root = os.path.realpath(project_root)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(root)) or "project"
    digest = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return os.path.join(base, "cortex_runtime", f"{name}-{digest}")


def open_store(backend, state_dir, project_root, fsync="full"):
    if backend in (None, "", "sqlite"):
        return SqliteStore(state_dir or default_state_dir(project_root), fsync=fsync)
    scheme = urlsplit(backend).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(backend)
    raise StartupError(f"--async-backend {backend}: not a store this version knows: use redis://host:port/db "
                       "(or leave it out for the SQLite database under --state-dir)")
