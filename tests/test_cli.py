"""The command line (SPEC section 1): --help, serve's listening line and signals, start-up errors,
`validate` and `predict`."""
import json
import signal
import subprocess

import pytest

from conftest import SIMPLE_YAML, free_port, parse_json_lines, run_cli

OK_PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"got": payload}
"""

TWO_YAML = """
- name: alpha
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    config:
      name: alpha
- name: beta
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    config:
      name: beta
"""

NAMED_PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        self.name = config["name"]

    def predict(self):
        return self.name
"""


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_one_clear_error(result, *names):
    assert result.returncode != 0, (result.stdout, result.stderr)
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# -- --help ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [[], ["serve"], ["validate"], ["predict"]],
                         ids=["top", "serve", "validate", "predict"])
def test_help_exits_0_on_every_subcommand(args):
    result = run_cli(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_serve_help_lists_the_flags():
    out = run_cli("serve", "--help").stdout
    for flag in ["--api", "--host", "--port", "--processes", "--threads", "--log-level",
                 "--no-access-log", "--max-body-size", "--state-dir"]:
        assert flag in out, flag


# -- serve ---------------------------------------------------------------------------------

def test_serve_logs_exactly_one_listening_line_with_host_and_port(simple_project, serve):
    server = serve(simple_project(OK_PREDICTOR))
    assert server.post("/echo", json=1).status_code == 200
    listening = [l for l in server.log_lines() if l.get("message") == "listening"]
    assert len(listening) == 1
    assert listening[0]["host"] == "127.0.0.1"
    assert int(listening[0]["port"]) == server.port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_serve_with_exit_code_0(simple_project, serve, sig):
    server = serve(simple_project(OK_PREDICTOR))
    assert server.get("/healthz").status_code == 200
    assert server.terminate(sig) == 0
    assert "Traceback" not in server.stderr_text()


def test_serve_api_flag_serves_only_the_named_api(project, serve):
    path = project({"cortex.yaml": TWO_YAML, "predictor.py": NAMED_PREDICTOR})
    server = serve(path, "--api", "beta")
    assert server.post("/beta").text == "beta"
    assert server.post("/alpha").status_code == 404


def test_serve_accepts_a_config_file_path(project, serve):
    path = project({"cortex.yaml": TWO_YAML, "predictor.py": NAMED_PREDICTOR})
    server = serve(path / "cortex.yaml")
    assert server.post("/alpha").text == "alpha"


# -- start-up errors -------------------------------------------------------------------------

STARTUP_ERRORS = {
    "missing_cortex_yaml": ({"predictor.py": OK_PREDICTOR}, "cortex.yaml"),
    "bad_yaml": ({"cortex.yaml": "- name: [unclosed\n  kind: {\n",
                  "predictor.py": OK_PREDICTOR}, "cortex.yaml"),
    "predictor_file_missing": ({"cortex.yaml": SIMPLE_YAML}, "predictor.py"),
    "class_missing": ({"cortex.yaml": SIMPLE_YAML,
                       "predictor.py": "class SomethingElse:\n    pass\n"}, "predictor.py"),
    "import_raises": ({"cortex.yaml": SIMPLE_YAML,
                       "predictor.py": "raise RuntimeError('import-boom')\n"}, "predictor.py"),
}


def run_serve_expecting_exit(path):
    try:
        return run_cli("serve", path, "--port", free_port(), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("serve kept running instead of failing at start-up")


@pytest.mark.parametrize("case", list(STARTUP_ERRORS))
def test_serve_startup_error_is_one_line_naming_the_file_without_traceback(project, case):
    files, name = STARTUP_ERRORS[case]
    result = run_serve_expecting_exit(project(files))
    assert_one_clear_error(result, name)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", list(STARTUP_ERRORS))
def test_validate_startup_error_exits_1_with_the_error_line(project, case):
    files, name = STARTUP_ERRORS[case]
    result = run_cli("validate", project(files), timeout=60)
    assert result.returncode == 1
    assert_one_clear_error(result, name)
    assert "Traceback" not in result.stderr


INIT_RAISES = """
class PythonPredictor:
    def __init__(self, config):
        raise ValueError("boom")

    def predict(self, payload):
        return payload
"""

INIT_LINE = "error: predictor.py: __init__: boom: runtime exception"


def test_init_raising_stops_serve_with_runtime_exception_line(simple_project):
    result = run_serve_expecting_exit(simple_project(INIT_RAISES))
    line = assert_one_clear_error(result)
    assert line == INIT_LINE
    assert "Traceback" not in result.stderr


def test_init_raising_logs_the_traceback_as_json(simple_project):
    result = run_serve_expecting_exit(simple_project(INIT_RAISES))
    assert result.returncode != 0
    logged = [l for l in parse_json_lines(result.stdout)
              if "ValueError: boom" in l.get("exc_info", "")]
    assert logged, result.stdout
    assert "Traceback" in logged[0]["exc_info"]


def test_init_raising_stops_predict_command(simple_project):
    result = run_cli("predict", simple_project(INIT_RAISES), "--json", "{}", timeout=60)
    assert result.returncode != 0
    assert INIT_LINE in error_lines(result.stderr)
    assert result.stdout == ""


# -- validate --------------------------------------------------------------------------------

def test_validate_ok_project_exits_0_and_prints_api_names(project):
    path = project({"cortex.yaml": TWO_YAML, "predictor.py": NAMED_PREDICTOR})
    result = run_cli("validate", path)
    assert result.returncode == 0, result.stderr
    assert "alpha" in result.stdout and "beta" in result.stdout
    assert error_lines(result.stderr) == []


def test_validate_defaults_to_the_current_directory(project):
    path = project({"cortex.yaml": TWO_YAML, "predictor.py": NAMED_PREDICTOR})
    result = run_cli("validate", cwd=path)
    assert result.returncode == 0, result.stderr
    assert "alpha" in result.stdout


def test_validate_accepts_a_config_file_path(project):
    path = project({"api.yaml": TWO_YAML, "predictor.py": NAMED_PREDICTOR})
    result = run_cli("validate", path / "api.yaml")
    assert result.returncode == 0, result.stderr
    assert "beta" in result.stdout


# -- predict ---------------------------------------------------------------------------------

LOGGING_PREDICTOR = """
from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config):
        logger.info("init log line")
        self.config = config

    def predict(self, payload):
        logger.info("predict log line")
        return {"got": payload, "type": type(payload).__name__, "pi": 3.14,
                "s": "caf\\u00e9", "config": self.config}
"""


def test_predict_json_prints_the_json_body_and_a_newline(simple_project):
    result = run_cli("predict", simple_project(LOGGING_PREDICTOR), "--json", '{"x": 1}')
    assert result.returncode == 0, result.stderr
    expected = {"got": {"x": 1}, "type": "dict", "pi": 3.14, "s": "caf\u00e9", "config": {}}
    assert result.stdout == json.dumps(expected) + "\n"


def test_predict_logs_go_to_stderr_not_stdout(simple_project):
    result = run_cli("predict", simple_project(LOGGING_PREDICTOR), "--json", "[1]")
    assert result.returncode == 0, result.stderr
    assert "init log line" in result.stderr
    assert "predict log line" in result.stderr
    assert "log line" not in result.stdout


def test_predict_data_file_with_content_type(simple_project, tmp_path):
    data = tmp_path / "input.txt"
    data.write_bytes("hello w\u00f6rld".encode())
    result = run_cli("predict", simple_project(LOGGING_PREDICTOR),
                     "--data", f"@{data}", "--content-type", "text/plain")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["got"] == "hello w\u00f6rld" and body["type"] == "str"
    assert result.stdout.endswith("}\n")


def test_predict_str_response_is_printed_as_text(simple_project):
    path = simple_project("""
        class PythonPredictor:
            def __init__(self, config):
                pass

            def predict(self, payload):
                return "label-" + str(payload["n"])
    """)
    result = run_cli("predict", path, "--json", '{"n": 7}')
    assert result.returncode == 0, result.stderr
    assert result.stdout == "label-7\n"


def test_predict_api_flag_picks_the_api(project):
    path = project({"cortex.yaml": TWO_YAML, "predictor.py": NAMED_PREDICTOR})
    result = run_cli("predict", path, "--api", "beta", "--json", "{}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "beta\n"


def test_predict_invalid_json_argument_prints_the_400_body_and_fails(simple_project):
    result = run_cli("predict", simple_project(OK_PREDICTOR), "--json", '{"x": ')
    assert result.returncode != 0
    assert result.stdout.startswith('{"error":"invalid JSON: '), result.stdout
    assert "Traceback" not in result.stderr
