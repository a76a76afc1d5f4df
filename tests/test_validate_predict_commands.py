"""`validate` reports every problem of a project; `predict -i` prints the status line and
headers before the body."""
from conftest import run_cli

GOOD = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return payload
"""

MANY_PROBLEMS = """
- name: good
  predictor: {type: python, path: good.py}
- name: BadName
  predictor: {type: python, path: good.py}
- name: noclass
  predictor: {type: python, path: noclass.py}
- name: badsig
  predictor: {type: python, path: badsig.py}
- name: clash
  predictor: {type: python, path: good.py}
  networking: {endpoint: /good}
- name: nopath
  predictor: {type: python}
"""


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_validate_reports_every_problem_and_the_good_apis(project):
    path = project({
        "cortex.yaml": MANY_PROBLEMS,
        "good.py": GOOD,
        "noclass.py": "class Something:\n    pass\n",
        "badsig.py": GOOD.replace("predict(self, payload)", "predict(self, bogus)"),
    })
    result = run_cli("validate", path)
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 5, result.stderr
    assert 'got "BadName"' in errors[0]
    assert any('networking.endpoint: "/good" is already used by api "good"' in e for e in errors)
    assert any('api "nopath": predictor.path: required' in e for e in errors)
    assert "error: error in noclass.py: PythonPredictor class is not defined" in errors
    assert any('"bogus" is not a supported argument' in e for e in errors)
    assert "ok: good (RealtimeAPI, predictor.type python) at /good" in result.stdout
    assert "Traceback" not in result.stderr


def test_validate_of_a_good_project_exits_0(simple_project):
    result = run_cli("validate", simple_project(GOOD))
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []


def test_validate_unreadable_yaml_is_one_error(project):
    result = run_cli("validate", project({"cortex.yaml": "- name: [x\n", "predictor.py": GOOD}))
    assert result.returncode == 1
    assert len(error_lines(result.stderr)) == 1


def test_predict_include_prints_status_and_headers_before_the_body(simple_project):
    path = simple_project("""
        from cortex_runtime import Response

        class PythonPredictor:
            def __init__(self, config):
                pass

            def predict(self, payload):
                return Response({"ok": payload}, status=201, headers={"X-Custom": "yes"})
    """)
    result = run_cli("predict", path, "-i", "--json", "1")
    assert result.returncode == 0, result.stderr
    head, body = result.stdout.split("\n\n", 1)
    lines = head.replace("\r", "").splitlines()
    assert lines[0] == "HTTP/1.1 201 Created"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["X-Custom"] == "yes"
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert len(headers["X-Request-ID"]) == 36
    assert headers["Content-Length"] == str(len('{"ok": 1}'))
    assert body == '{"ok": 1}\n'


def test_predict_include_on_an_error(simple_project):
    path = simple_project(GOOD.replace("return payload", "raise RuntimeError('no')"))
    result = run_cli("predict", path, "--include", "--json", "{}")
    assert result.returncode == 1
    # (text mode: the CRLF line ends read as "\n")
    assert result.stdout.startswith("HTTP/1.1 500 Internal Server Error\n")
    assert "Access-Control-Allow-Origin" not in result.stdout
    assert result.stdout.endswith("\n\ninternal server error\n")


def test_predict_without_include_prints_the_body_only(simple_project):
    result = run_cli("predict", simple_project(GOOD), "--json", '[1]')
    assert result.stdout == "[1]\n"
