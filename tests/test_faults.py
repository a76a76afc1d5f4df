"""A predictor that crashes its process in native code (a segfault in a C extension of its
own, here through ctypes), for some payloads only."""
import os
import signal
import threading
import time

import pytest
import requests

from test_workers import workers_yaml

CRASHER = """
import ctypes, os
class PythonPredictor:
    def __init__(self, config):
        pass
    def predict(self, payload):
        if payload.get("crash"):
            ctypes.string_at(0)  # reads address 0: SIGSEGV in native code, no Python exception
        return {"pid": os.getpid()}
"""

# Under .ci/sanitize the serve processes inherit the ASan preload, whose SIGSEGV handler would
# report the deliberate crash as an AddressSanitizer error (failing that run); these processes
# are meant to die of the plain signal.
NO_ASAN_SEGV = {"ASAN_OPTIONS": ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "handle_segv=0"]))}


def pinned_session(server, pid_wanted=None, pid_avoided=None, tries=200):
    """A keep-alive session whose one connection is held by a worker matching the wish: the
    kernel hands each new connection on the shared socket to some worker, so open new ones
    until one lands right."""
    for _ in range(tries):
        session = requests.Session()
        pid = session.post(server.url("/echo"), json={}, timeout=30).json()["pid"]
        if (pid_wanted is None or pid == pid_wanted) and pid != pid_avoided:
            return session, pid
        session.close()
    raise AssertionError(f"no connection landed on the wanted worker in {tries} tries")


def fresh(server, payload=None):
    return requests.post(server.url("/echo"), json=payload or {}, headers={"Connection": "close"},
                         timeout=30)


def test_a_worker_that_segfaults_is_logged_by_signal_and_replaced_while_the_other_serves(
        simple_project, serve):
    server = serve(simple_project(CRASHER, yaml=workers_yaml(2).replace("pids", "echo")),
                   "--no-access-log", env=NO_ASAN_SEGV)
    victim_session, victim = pinned_session(server)
    other_session, survivor = pinned_session(server, pid_avoided=victim)

    # a client on the surviving worker keeps calling before, during and after the crash
    stop = threading.Event()
    results = []

    def keep_calling():
        while not stop.is_set():
            try:
                r = other_session.post(server.url("/echo"), json={}, timeout=30)
                results.append((r.status_code, r.json()["pid"]))
            except Exception as e:  # recorded, so the assertion below shows it
                results.append((repr(e), None))

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        while len(results) < 5:
            time.sleep(0.01)
        # the crashing request's client sees its connection end without a response
        with pytest.raises(requests.exceptions.ConnectionError):
            victim_session.post(server.url("/echo"), json={"crash": True}, timeout=30)
        line = server.wait_for_log(lambda l: l.get("levelname") == "ERROR" and l.get("pid") == victim)
        during = len(results)
        # fresh connections meanwhile: the listening socket never closed, so each is answered
        # (by the survivor, or by the replacement once it is up: it joins the socket only after
        # its __init__, so it never answers 503 "not ready yet")
        not_ready = []
        fresh_answers = [fresh(server) for _ in range(10)]
        # the replacement is up once a connection lands on a pid that is neither old one
        deadline = time.monotonic() + 60
        replacement = None
        while replacement is None and time.monotonic() < deadline:
            r = fresh(server)
            fresh_answers.append(r)
            if r.status_code == 200 and r.json()["pid"] not in (victim, survivor):
                replacement = r.json()["pid"]
        for r in fresh_answers:
            if r.status_code != 200:
                not_ready.append((r.status_code, r.json()))
        while len(results) < during + 5:
            time.sleep(0.01)
    finally:
        stop.set()
        caller.join(30)
    assert line["message"] == (f"worker {line['worker']} (pid {victim}) was killed by signal SIGSEGV "
                               "and is being restarted")
    assert line["signal"] == "SIGSEGV"
    assert replacement is not None, "no new worker answered within 60 s"
    assert not_ready == []
    # not one request of the other client failed, and the survivor answered all of them
    assert results and set(results) == {(200, survivor)}
    assert server.proc.poll() is None
    assert server.get("/healthz").text == "ok"
    assert {fresh(server).status_code for _ in range(20)} == {200}
    # faulthandler's traceback names the line of predict that crashed
    assert "Fatal Python error: Segmentation fault" in server.stderr_text()
    assert 'predictor.py", line 7 in predict' in server.stderr_text()


def test_a_worker_that_exits_is_logged_with_its_exit_code_and_replaced(simple_project, serve):
    source = CRASHER.replace("ctypes.string_at(0)", "os._exit(3)")
    server = serve(simple_project(source, yaml=workers_yaml(2).replace("pids", "echo")),
                   "--no-access-log")
    session, victim = pinned_session(server)
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(server.url("/echo"), json={"crash": True}, timeout=30)
    line = server.wait_for_log(lambda l: l.get("levelname") == "ERROR" and l.get("pid") == victim)
    assert line["message"] == f"worker {line['worker']} (pid {victim}) exited with code 3 and is being restarted"
    assert line["exit_code"] == 3 and "signal" not in line
    assert {fresh(server).status_code for _ in range(10)} == {200}


def test_with_one_process_a_segfault_ends_serve(simple_project, serve):
    """processes_per_replica 1 runs the API in the serve process itself, without a supervisor
    (as in Cortex, where restarting a crashed replica was the cluster's job): a segfault in
    predict ends serve by the signal, after faulthandler's Python traceback of the crashing
    call on stderr. Whoever runs serve (a restart policy, systemd, a Kubernetes pod) restarts
    it; --processes 2 or more restarts crashed workers itself."""
    server = serve(simple_project(CRASHER), "--no-access-log", env=NO_ASAN_SEGV)
    assert fresh(server).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        fresh(server, {"crash": True})
    assert server.proc.wait(timeout=30) == -signal.SIGSEGV
    stderr = server.stderr_text()
    assert "Fatal Python error: Segmentation fault" in stderr
    assert 'predictor.py", line 7 in predict' in stderr
    with pytest.raises(requests.exceptions.ConnectionError):
        fresh(server)


def gone(pid):
    """The process has exited (a zombie left for an init that does not reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_workers_do_not_outlive_a_killed_supervisor(simple_project, serve):
    server = serve(simple_project(CRASHER, yaml=workers_yaml(2).replace("pids", "echo")),
                   "--no-access-log")
    workers = {fresh(server).json()["pid"] for _ in range(40)}
    assert len(workers) == 2
    server.proc.kill()  # SIGKILL: the supervisor gets no chance to stop them itself
    server.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in workers if not gone(pid)] == []
    with pytest.raises(requests.exceptions.ConnectionError):  # nobody holds the port any more
        fresh(server)
