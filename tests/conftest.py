"""Black-box fixtures: every test drives the installed package through its CLI and real HTTP."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

STARTUP_TIMEOUT = 60.0
REPO_ROOT = Path(__file__).resolve().parent.parent
# read-only test data laid beside the checkout (../shared), used in place
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_project(root: Path, files: dict) -> Path:
    """Writes {relative path: text or bytes} under root; text is dedented."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"))
    return root


def run_cli(*args, cwd=None, env=None, timeout=120, input=None):
    """Runs `python -m cortex_runtime ARGS`, returns the CompletedProcess (text mode)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "cortex_runtime", *map(str, args)],
                          cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, input=input)


def parse_json_lines(text: str) -> list:
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


class LiveServer:
    """A `serve` subprocess on a free loopback port; stdout/stderr go to files we can re-read."""

    def __init__(self, path, args, env, workdir: Path, preexec_fn=None):
        self.port = free_port()
        self.stdout_path = workdir / f"serve-{self.port}.out"
        self.stderr_path = workdir / f"serve-{self.port}.err"
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        cmd = [sys.executable, "-m", "cortex_runtime", "serve", str(path),
               "--port", str(self.port), *map(str, args)]
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, env=full_env,
                                     preexec_fn=preexec_fn)
        self.session = requests.Session()

    # -- output -------------------------------------------------------------
    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_lines(self) -> list:
        return parse_json_lines(self.stdout_text())

    def wait_for_log(self, predicate, timeout=10.0):
        """Returns the first JSON log line matching predicate, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                if predicate(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no matching log line within {timeout}s; stdout:\n{self.stdout_text()}"
                    f"\nstderr:\n{self.stderr_text()}")
            time.sleep(0.02)

    def wait_listening(self, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(l.get("message") == "listening" for l in self.log_lines()):
                return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"serve exited with {self.proc.returncode} before listening;\n"
                    f"stdout:\n{self.stdout_text()}\nstderr:\n{self.stderr_text()}")
            time.sleep(0.02)
        raise AssertionError(f"serve did not log 'listening' in {timeout}s;\n"
                             f"stdout:\n{self.stdout_text()}\nstderr:\n{self.stderr_text()}")

    # -- HTTP ---------------------------------------------------------------
    def url(self, path="/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method, path="/", **kwargs):
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.url(path), **kwargs)

    def get(self, path="/", **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path="/", **kwargs):
        return self.request("POST", path, **kwargs)

    # -- lifecycle ----------------------------------------------------------
    def terminate(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self):
        self.session.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._err.close()


@pytest.fixture
def project(tmp_path):
    """project({"cortex.yaml": ..., "predictor.py": ...}) -> path of the written project."""
    counter = [0]

    def make(files: dict) -> Path:
        counter[0] += 1
        return write_project(tmp_path / f"project{counter[0]}", files)

    return make


@pytest.fixture
def serve(tmp_path):
    """serve(path, *extra_args, env=None, wait=True, preexec_fn=None) -> LiveServer, stopped
    after the test."""
    servers = []

    def start(path, *args, env=None, wait=True, preexec_fn=None) -> LiveServer:
        server = LiveServer(path, args, env, tmp_path, preexec_fn)
        servers.append(server)
        if wait:
            server.wait_listening()
        return server

    yield start
    for server in servers:
        server.close()


# __init__ waits until config["release"] exists; predict answers "ready"
SLOW_INIT = """
import os, time
class PythonPredictor:
    def __init__(self, config):
        while not os.path.exists(config["release"]):
            time.sleep(0.02)
    def predict(self, payload):
        return "ready"
"""

SIMPLE_YAML = """
- name: echo
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""


@pytest.fixture
def simple_project(project):
    """simple_project(predictor_source, yaml=SIMPLE_YAML, **extra_files) -> project path."""

    def make(predictor_source: str, yaml: str = SIMPLE_YAML, extra=None) -> Path:
        files = {"cortex.yaml": yaml, "predictor.py": predictor_source}
        files.update(extra or {})
        return project(files)

    return make
