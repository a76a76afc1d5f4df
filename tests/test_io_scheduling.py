"""The I/O thread's scheduling class: real-time where the process may have it, so /healthz
is answered at once while predict() holds the only core; a short fair-class slice
otherwise; --no-realtime-io keeps it in the normal class."""
import ctypes
import os
import resource
import subprocess
import sys
import time

import pytest

from conftest import SIMPLE_YAML

# predict answers the id of the thread it runs on, so that thread can be told apart
PREDICTOR = """
import threading
class PythonPredictor:
    def __init__(self, config):
        pass
    def predict(self, payload):
        return {"tid": threading.get_native_id()}
"""

PR_CAPBSET_DROP = 24
CAP_SYS_NICE = 23


def may_use_realtime():
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def without_sys_nice():
    """preexec_fn: a root process keeps every capability but CAP_SYS_NICE across exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def policies(pid):
    """{thread id: (policy, priority)} of every thread of pid."""
    found = {}
    for entry in os.listdir(f"/proc/{pid}/task"):
        tid = int(entry)
        try:
            found[tid] = (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
        except ProcessLookupError:
            continue
    return found


def slice_ns(tid, pid):
    with open(f"/proc/{pid}/task/{tid}/sched") as f:
        for line in f:
            if line.startswith("se.slice"):
                return int(line.split(":")[1])
    return None


@pytest.fixture
def predictor_project(project):
    return project({"cortex.yaml": SIMPLE_YAML, "predictor.py": PREDICTOR})


def predict_tid(server):
    r = server.post("/echo", json={})
    assert r.status_code == 200, r.text
    return r.json()["tid"]


@pytest.mark.skipif(not may_use_realtime(), reason="this process may not use SCHED_FIFO")
def test_io_thread_is_realtime_and_predict_is_not(serve, predictor_project):
    server = serve(predictor_project)
    tid = predict_tid(server)
    threads = policies(server.proc.pid)
    realtime = {t: p for t, p in threads.items() if p[0] == os.SCHED_FIFO}
    assert list(realtime.values()) == [(os.SCHED_FIFO, 1)], threads
    assert threads[tid] == (os.SCHED_OTHER, 0), threads
    assert server.get("/healthz").status_code == 200


def test_no_realtime_io_keeps_every_thread_in_the_normal_class(serve, predictor_project):
    server = serve(predictor_project, "--no-realtime-io")
    predict_tid(server)
    threads = policies(server.proc.pid)
    assert all(policy == (os.SCHED_OTHER, 0) for policy in threads.values()), threads
    assert server.get("/healthz").status_code == 200


def worker_pids(server, want, timeout=30):
    """The pids of want worker processes of server, once they have all started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
            pids = [int(p) for p in f.read().split()]
        if len(pids) >= want:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"{want} workers did not start")


@pytest.mark.skipif(not may_use_realtime(), reason="this process may not use SCHED_FIFO")
def test_worker_processes_keep_their_io_threads_in_the_normal_class(serve, predictor_project):
    # a real-time I/O thread per worker would win every race to accept, always in the same
    # order: with more workers than cores some would never be handed a connection
    server = serve(predictor_project, "--processes", "2")
    predict_tid(server)
    for pid in worker_pids(server, 2):
        threads = policies(pid)
        assert all(policy[0] == os.SCHED_OTHER for policy in threads.values()), (pid, threads)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop CAP_SYS_NICE from the bounding set")
def test_without_the_privilege_it_serves_with_a_short_fair_slice(serve, predictor_project):
    if resource.getrlimit(resource.RLIMIT_RTPRIO)[0] != 0:
        pytest.skip("RLIMIT_RTPRIO allows real-time priorities without the capability")
    server = serve(predictor_project, preexec_fn=without_sys_nice)
    tid = predict_tid(server)
    threads = policies(server.proc.pid)
    assert all(policy[0] == os.SCHED_OTHER for policy in threads.values()), threads
    assert server.stderr_text() == ""
    # the I/O thread asked for a 0.1 ms slice instead (honoured from Linux 6.12 on)
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 12):
        slices = {t: slice_ns(t, server.proc.pid) for t in threads}
        assert [t for t, v in slices.items() if v == 100000 and t != tid], slices
    assert server.get("/healthz").status_code == 200


# A client process on CPU 1 sending /healthz requests pipelined 1000 at a time for ARG
# seconds: each burst keeps the server busy for milliseconds while the client only waits
FLOOD = r"""
import os, socket, sys, time
os.sched_setaffinity(0, {1})
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
status = b"HTTP/1.1 200"
burst = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    sock.sendall(burst)
    got, tail = 0, b""
    while got < 1000:
        data = tail + sock.recv(1 << 20)
        got += data.count(status)
        tail = data[-(len(status) - 1):]  # a status line cut in two is counted once, next time
"""


def io_thread(pid):
    """The one thread of pid that is real-time now, or None."""
    return next((t for t, p in policies(pid).items() if p[0] == os.SCHED_FIFO), None)


@pytest.mark.skipif(not may_use_realtime(), reason="this process may not use SCHED_FIFO")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0),
                    reason="needs CPUs 0 and 1")
def test_a_flood_it_answers_alone_moves_the_io_thread_to_the_fair_class_until_it_ends(
        serve, predictor_project):
    server = serve(predictor_project, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    tid = io_thread(server.proc.pid)
    assert tid is not None
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, str(server.port), "4"])
    try:
        deadline = time.monotonic() + 3.5
        demoted = False
        while time.monotonic() < deadline and not demoted:
            demoted = os.sched_getscheduler(tid) == os.SCHED_OTHER
            time.sleep(0.01)
        assert demoted, "the I/O thread stayed real-time through a flood of /healthz"
        predict_tid(server)  # predict is still served meanwhile
    finally:
        assert flood.wait(30) == 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and os.sched_getscheduler(tid) != os.SCHED_FIFO:
        time.sleep(0.01)
    assert os.sched_getscheduler(tid) == os.SCHED_FIFO
    assert os.sched_getparam(tid).sched_priority == 1
