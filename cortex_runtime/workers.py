"""processes_per_replica > 1: the supervisor binds the port and forks the workers; each
builds its own C server on the shared socket and runs __init__.  /healthz is 200 only while
every worker is ready (a flag in shared memory the supervisor sets); a worker that dies is
logged and replaced; SIGTERM drains them all."""
import ctypes
import errno
import mmap
import os
import select
import signal
import socket
import sys
import time

from .errors import StartupError
from .log import logger

READY = b"R"
FAILED = b"E"
RESTART_BACKOFF = 1.0  # a worker that dies at once is not re-forked in a tight loop
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


class _Worker:
    def __init__(self, slot, pid, pipe_fd):
        self.slot = slot
        self.pid = pid
        self.pipe_fd = pipe_fd
        self.ready = False
        self.started = time.monotonic()


def bind(host, port):
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise StartupError(f"cannot listen on {host}:{port}: the port is already in use") from None
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _signal_name(status):
    """SIGSEGV, SIGKILL...; None when the process exited by itself."""
    if not os.WIFSIGNALED(status):
        return None
    number = os.WTERMSIG(status)
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return str(number)


def _die_with_parent(parent):
    """A worker must not outlive its supervisor (SIGKILLed, OOM-killed): it would go on holding
    the port, unsupervised, so a new serve could not start.  Linux sends it SIGTERM, which
    drains it like any stop."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _describe(status):
    name = _signal_name(status)
    if name is not None:
        return f"was killed by signal {name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


class Supervisor:
    def __init__(self, args, processes, run_worker, announce):
        self.args = args
        self.processes = processes
        # (listen_fd, shared_ready, on_ready, join_early) -> exit code, in the child
        self.run_worker = run_worker
        self.announce = announce
        self.workers = {}
        self.stopping = False
        self.stop_deadline = None
        self.startup_error = None
        self.announced = False
        self.respawn_at = {}
        self.sock = bind(args.host, args.port)
        self.shared_ready = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED: workers see every write

    def spawn(self, slot):
        # with no worker ready nobody else could answer: the new one serves during its __init__
        join_early = not any(w.ready for w in self.workers.values())
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            self._child(write_fd, parent, join_early)  # never returns
        os.close(write_fd)
        self.workers[pid] = _Worker(slot, pid, read_fd)

    def _child(self, report_fd, parent, join_early):
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with_parent(parent)
            code = self.run_worker(self.sock.fileno(), self.shared_ready,
                                   lambda: os.write(report_fd, READY), join_early)
        except StartupError as e:
            os.write(report_fd, FAILED + str(e).encode("utf-8", "replace"))
        except BaseException as e:  # the child must never unwind into the supervisor's code
            logger.error("worker failed", exc_info=e)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def on_signal(self, signum, frame):
        if self.stopping:
            for pid in self.workers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            from .serve import force_exit
            force_exit(signum)
        self.stop()

    def stop(self):
        if self.stopping:
            return
        self.stopping = True
        self.shared_ready[0] = 0
        self.stop_deadline = time.monotonic() + self.args.grace_period + 5.0
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _read_reports(self, timeout):
        fds = [w.pipe_fd for w in self.workers.values() if w.pipe_fd is not None]
        try:
            readable = select.select(fds, [], [], timeout)[0] if fds else []
            if not fds:
                time.sleep(timeout)
        except InterruptedError:
            return
        for worker in list(self.workers.values()):
            if worker.pipe_fd not in readable:
                continue
            data = os.read(worker.pipe_fd, 65536)
            if not data:
                os.close(worker.pipe_fd)
                worker.pipe_fd = None
            elif data.startswith(READY):
                worker.ready = True
            elif data.startswith(FAILED) and self.startup_error is None:
                self.startup_error = data[1:].decode("utf-8", "replace")

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.pipe_fd is not None:
                os.close(worker.pipe_fd)
            if self.stopping:
                continue
            if not self.announced:
                if self.startup_error is None:
                    self.startup_error = f"worker {worker.slot} {_describe(status)} during start-up"
                continue
            self.shared_ready[0] = 0
            fields = {"worker": worker.slot, "pid": pid}
            name = _signal_name(status)
            if name is not None:
                fields["signal"] = name
            else:
                fields["exit_code"] = os.WEXITSTATUS(status)
            logger.error(f"worker {worker.slot} (pid {pid}) {_describe(status)} and is being restarted",
                         extra=fields)
            self.respawn_at[worker.slot] = max(time.monotonic(), worker.started + RESTART_BACKOFF)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        try:
            for slot in range(self.processes):
                self.spawn(slot)
            while self.workers or (self.respawn_at and not self.stopping):
                self._read_reports(0.1)
                self._reap()
                if self.startup_error is not None:
                    self.stop()
                now = time.monotonic()
                for slot, due in list(self.respawn_at.items()):
                    if self.stopping:
                        self.respawn_at.clear()
                    elif now >= due:
                        del self.respawn_at[slot]
                        self.spawn(slot)
                all_ready = (len(self.workers) == self.processes
                             and all(w.ready for w in self.workers.values()))
                if not self.stopping:
                    self.shared_ready[0] = 1 if all_ready else 0
                    if all_ready and not self.announced:
                        self.announced = True
                        self.announce()
                elif now > self.stop_deadline:
                    for pid in self.workers:
                        os.kill(pid, signal.SIGKILL)
        finally:
            self.sock.close()
        if self.startup_error is not None:
            raise StartupError(self.startup_error)
        return 0
