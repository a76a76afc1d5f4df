"""kind: AsyncAPI on Redis (--async-backend redis://...): several serve processes share one
queue and one result store; each workload runs once; a lost replica's workload is re-run;
a Redis restart is survived.  The Redis server is Debian's redis-server on a free port."""
import shutil
import socket
import subprocess
import time
from collections import Counter

import pytest

from conftest import free_port
from test_asyncapi import ASYNC_YAML, PREDICTOR, submit, wait_status

pytest.importorskip("redis")
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed "
                                "(apt-get install redis-server; .ci/run does)")


class RedisServer:
    def __init__(self, workdir):
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(exist_ok=True)
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        # appendfsync always: a write Redis has answered is on disk, as the store promises
        self.log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.log.close()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def predicted_ids(*servers):
    return Counter(line["workload"] for server in servers for line in server.log_lines()
                   if line.get("message") == "predicting")


def test_two_serve_processes_complete_200_workloads_each_exactly_once(simple_project, serve, redis_server):
    path = simple_project(PREDICTOR, yaml=ASYNC_YAML)
    servers = [serve(path, "--async-backend", redis_server.url, "--no-access-log") for _ in range(2)]
    ids = [submit(servers[i % 2], json={"n": i}) for i in range(200)]
    assert len(set(ids)) == 200
    for i, workload_id in enumerate(ids):
        # either replica answers for any workload: one store
        result = wait_status(servers[(i + 1) % 2], workload_id, {"completed"}, timeout=60)["result"]
        assert result["payload"] == {"n": i}
    counts = predicted_ids(*servers)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    assert all(predicted_ids(server) for server in servers), "both replicas should have taken work"
    assert any(l.get("backend") == "redis" for l in servers[0].log_lines())


def test_a_killed_replicas_workload_is_rerun_after_the_visibility_timeout(simple_project, serve, redis_server,
                                                                             tmp_path):
    path = simple_project(PREDICTOR, yaml=ASYNC_YAML)
    url = redis_server.url + "?visibility_timeout=1"
    doomed = serve(path, "--async-backend", url)
    release = tmp_path / "release"
    workload_id = submit(doomed, json={"wait": str(release)})
    wait_status(doomed, workload_id, {"in_progress"})
    doomed.proc.kill()
    doomed.proc.wait()
    release.touch()
    survivor = serve(path, "--async-backend", url)
    assert wait_status(survivor, workload_id, {"completed"}, timeout=30)["result"]["request_id"] == workload_id


def test_redis_restarted_while_idle_serving_recovers(simple_project, serve, redis_server):
    server = serve(simple_project(PREDICTOR, yaml=ASYNC_YAML), "--async-backend", redis_server.url)
    before = submit(server, json={"n": 1})
    wait_status(server, before, {"completed"})
    redis_server.stop()
    down = server.post("/job", json={"n": 2})
    assert down.status_code == 503
    redis_server.start()
    deadline = time.monotonic() + 20
    while True:
        r = server.post("/job", json={"n": 3})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    assert wait_status(server, r.json()["id"], {"completed"})["result"]["payload"] == {"n": 3}
    # what was stored before the restart is still there
    assert server.get(f"/job/{before}").json()["status"] == "completed"
    assert server.proc.poll() is None


def test_redis_queue_bound_and_unknown_id(simple_project, serve, redis_server, tmp_path):
    server = serve(simple_project(PREDICTOR, yaml=ASYNC_YAML), "--async-backend", redis_server.url,
                   "--async-max-queue", "1")
    release = tmp_path / "release"
    running = submit(server, json={"wait": str(release)})
    wait_status(server, running, {"in_progress"})
    queued = submit(server, json={"n": 1})
    assert server.post("/job", json={"n": 2}).status_code == 503
    assert server.get("/job/not-a-known-id").status_code == 404
    release.touch()
    wait_status(server, queued, {"completed"})


def test_unreachable_redis_is_a_startup_error(simple_project, serve):
    server = serve(simple_project(PREDICTOR, yaml=ASYNC_YAML), "--async-backend",
                   f"redis://127.0.0.1:{free_port()}/0", wait=False)
    assert server.proc.wait(timeout=60) != 0
    assert "cannot connect" in server.stderr_text()
