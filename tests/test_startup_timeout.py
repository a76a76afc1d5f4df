"""serve --startup-timeout: a predictor __init__ that never returns ends start-up with one
clear error line and a non-zero exit, instead of a server that hangs forever unready."""
import time

import pytest

from conftest import run_cli

HANGS = """
import time

class PythonPredictor:
    def __init__(self, config):
        while True:
            time.sleep(60)

    def predict(self, payload):
        return payload
"""

NORMAL = """
import time

class PythonPredictor:
    def __init__(self, config):
        time.sleep(0.2)

    def predict(self, payload):
        return {"echo": payload}
"""

TWO_PROCESSES_YAML = """
- name: echo
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    processes_per_replica: 2
"""

LINE = "error: predictor.py: __init__: did not finish within 1 s: start-up timeout"


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_hanging_init_exits_with_one_clear_line(simple_project):
    started = time.monotonic()
    result = run_cli("serve", simple_project(HANGS), "--port", "0", "--startup-timeout", "1",
                     timeout=60)
    assert result.returncode != 0
    assert error_lines(result.stderr) == [LINE], result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_hanging_init_leaves_no_staged_copy(simple_project, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = run_cli("serve", simple_project(HANGS), "--port", "0", "--startup-timeout", "1",
                     env={"TMPDIR": str(tmp)}, timeout=60)
    assert result.returncode != 0
    assert list(tmp.iterdir()) == []


def test_hanging_init_in_a_worker_stops_serve(simple_project):
    path = simple_project(HANGS, yaml=TWO_PROCESSES_YAML)
    result = run_cli("serve", path, "--port", "0", "--startup-timeout", "1", timeout=60)
    assert result.returncode != 0
    assert LINE in error_lines(result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_normal_init_with_the_flag_serves(simple_project, serve):
    server = serve(simple_project(NORMAL), "--startup-timeout", "30")
    response = server.post("/", json={"x": 1})
    assert response.status_code == 200
    assert response.json() == {"echo": {"x": 1}}
    assert server.terminate() == 0
    assert "start-up timeout" not in server.stderr_text()


def test_startup_timeout_0_means_no_limit(simple_project, serve):
    server = serve(simple_project(NORMAL), "--startup-timeout", "0")
    assert server.post("/", json=1).json() == {"echo": 1}
    assert server.terminate() == 0


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_bad_startup_timeout_is_a_usage_error(simple_project, value):
    result = run_cli("serve", simple_project(NORMAL), "--startup-timeout", value, timeout=60)
    assert result.returncode == 2
    assert "--startup-timeout" in result.stderr
