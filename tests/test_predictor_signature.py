"""Predictor method signatures (SPEC section 2): what is refused, with Cortex's wording,
and what the accepted arguments receive."""
import subprocess

import pytest

from conftest import LiveServer, free_port, run_cli, write_project

P = "error in predictor.py: class PythonPredictor: "

REFUSED = {
    "predict_unknown_arg": ("""
        class PythonPredictor:
            def __init__(self, config):
                pass

            def predict(self, payload, bogus):
                pass
        """, P + 'invalid signature for method "predict(self, payload, bogus)": '
                 '"bogus" is not a supported argument'),
    "init_without_config": ("""
        class PythonPredictor:
            def __init__(self):
                pass

            def predict(self, payload):
                pass
        """, P + 'invalid signature for method "__init__(self)": '
                 '"config" is a required argument, but was not provided'),
    "init_unknown_arg": ("""
        class PythonPredictor:
            def __init__(self, config, bogus):
                pass

            def predict(self, payload):
                pass
        """, P + 'invalid signature for method "__init__(self, config, bogus)": '
                 '"bogus" is not a supported argument'),
    "no_predict": ("""
        class PythonPredictor:
            def __init__(self, config):
                pass
        """, P + 'required method "predict" is not defined'),
    "no_class": ("""
        class OtherPredictor:
            def __init__(self, config):
                pass

            def predict(self, payload):
                pass
        """, 'error in predictor.py: PythonPredictor class is not defined'),
    "post_predict_unknown_arg": ("""
        class PythonPredictor:
            def __init__(self, config):
                pass

            def predict(self, payload):
                pass

            def post_predict(self, response, bogus):
                pass
        """, P + 'invalid signature for method "post_predict(self, response, bogus)": '
                 '"bogus" is not a supported argument'),
}


def error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("case", list(REFUSED))
def test_validate_refuses_bad_signature_with_cortex_message(simple_project, case):
    source, message = REFUSED[case]
    result = run_cli("validate", simple_project(source), timeout=60)
    assert result.returncode == 1
    assert message in error_line(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", list(REFUSED))
def test_serve_refuses_bad_signature_before_serving(simple_project, case):
    source, message = REFUSED[case]
    try:
        result = run_cli("serve", simple_project(source), "--port", free_port(), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("serve kept running with an invalid predictor")
    assert result.returncode != 0
    assert message in error_line(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("source", [
    """
    class PythonPredictor:
        def __init__(self, config, metrics_client):
            pass

        def predict(self, payload, request_id, query_params, headers):
            pass

        def post_predict(self, response, payload, query_params, headers):
            pass
    """,
    """
    class PythonPredictor:
        def __init__(self, config):
            pass

        def predict(self):
            pass
    """,
    """
    class PythonPredictor:
        def __init__(self, config, *args, **kwargs):
            pass

        def predict(self, *args, **kwargs):
            pass

        def post_predict(self):
            pass
    """,
], ids=["all_optional", "minimal", "varargs"])
def test_validate_accepts_supported_signatures(simple_project, source):
    result = run_cli("validate", simple_project(source), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "echo" in result.stdout


# -- what the accepted arguments receive --------------------------------------------------------

KWARGS = """
class PythonPredictor:
    def __init__(self, config):
        self.config = config

    def predict(self, *args, **kwargs):
        return {"args": len(args), "kwargs": sorted(kwargs), "config": self.config}
"""

REQUEST_ID = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, request_id):
        return request_id
"""

HEADERS_QUERY = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, headers, query_params):
        return {
            "lower": headers["content-type"],
            "canonical": headers["Content-Type"],
            "upper": headers["X-CUSTOM-THING"],
            "get": headers.get("x-custom-thing"),
            "contains": "x-Custom-Thing" in headers,
            "absent": headers.get("x-not-sent"),
            "query_params": query_params,
            "query_type": type(query_params).__name__,
        }
"""

COPY_CONFIG = """
class PythonPredictor:
    def __init__(self, config):
        config["seen"].append("me")
        config["nested"]["k"].append(3)
        self.config = config

    def predict(self):
        return self.config
"""

METRICS = """
class PythonPredictor:
    def __init__(self, config, metrics_client):
        self.metrics = metrics_client

    def predict(self):
        try:
            self.metrics.increment("my_counter")
            self.metrics.increment("my_counter", value=2, tags={"k": "v"})
            self.metrics.gauge("my_gauge", 3.5)
            self.metrics.gauge("my_gauge", 1, tags={"k": "v"})
            self.metrics.histogram("my_hist", 12)
            self.metrics.histogram("my_hist", 0.5, tags={"a": "b"})
        except Exception as e:
            return f"raised {type(e).__name__}: {e}"
        return "ok"
"""

POST_RAISES = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"answer": 42}

    def post_predict(self, response, payload, query_params, headers):
        raise RuntimeError("post-boom-" + payload["tag"])
"""

POST_LOGS = """
from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return "answered"

    def post_predict(self, payload, query_params, headers):
        logger.info("post_predict ran", extra={"pp_payload": payload, "pp_query": query_params,
                                               "pp_header": headers.get("x-tag")})
"""


def api(name, path, extra=""):
    return f"""
- name: {name}
  kind: RealtimeAPI
  predictor:
    type: python
    path: {path}
{extra}"""


YAML = "".join([
    api("kwargs", "kwargs.py"),
    api("reqid", "reqid.py"),
    api("headers", "headers.py"),
    api("copy-a", "copycfg.py", "    config: &shared\n      seen: []\n"
                                "      nested: {k: [1, 2]}\n"),
    api("copy-b", "copycfg.py", "    config: *shared\n"),
    api("metrics", "metrics.py"),
    api("post-raises", "post_raises.py"),
    api("post-logs", "post_logs.py"),
])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = write_project(tmp_path_factory.mktemp("signature") / "project", {
        "cortex.yaml": YAML, "kwargs.py": KWARGS, "reqid.py": REQUEST_ID,
        "headers.py": HEADERS_QUERY, "copycfg.py": COPY_CONFIG, "metrics.py": METRICS,
        "post_raises.py": POST_RAISES, "post_logs.py": POST_LOGS})
    srv = LiveServer(root, [], None, root.parent)
    try:
        srv.wait_listening()
        yield srv
    finally:
        srv.close()


def test_varargs_predict_gets_no_arguments_and_init_gets_empty_config(server):
    r = server.post("/kwargs", json={"a": 1}, params={"q": "1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"args": 0, "kwargs": [], "config": {}}


def test_request_id_argument_is_the_response_request_id(server):
    r = server.post("/reqid", headers={"X-Request-ID": "sig-rid-7"})
    assert r.status_code == 200
    assert r.text == "sig-rid-7"
    r = server.post("/reqid")
    assert r.text == r.headers["X-Request-ID"]


def test_headers_are_a_case_insensitive_mapping(server):
    r = server.post("/headers", data=b"{}",
                    headers={"Content-Type": "application/json", "x-custom-thing": "v1"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["lower"] == "application/json"
    assert got["canonical"] == "application/json"
    assert got["upper"] == "v1"
    assert got["get"] == "v1"
    assert got["contains"] is True
    assert got["absent"] is None


def test_query_params_are_a_dict_of_str_last_value_wins(server):
    r = server.post("/headers?a=1&a=2&b=x&c=hello%20world&d=caf%C3%A9",
                    headers={"Content-Type": "text/plain", "x-custom-thing": "v"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["query_params"] == {"a": "2", "b": "x", "c": "hello world", "d": "caf\u00e9"}
    assert got["query_type"] == "dict"


def test_query_params_decode_plus_as_space_and_keep_blank_values(server):
    r = server.post("/headers?e=a+b&f=&g=%2B",
                    headers={"Content-Type": "text/plain", "x-custom-thing": "v"})
    assert r.status_code == 200, r.text
    assert r.json()["query_params"] == {"e": "a b", "f": "", "g": "+"}


def test_no_query_string_gives_empty_query_params(server):
    r = server.post("/headers", headers={"Content-Type": "text/plain", "x-custom-thing": "v"})
    assert r.json()["query_params"] == {}


def test_init_gets_a_deep_copy_of_predictor_config(server):
    # both APIs share one YAML node; each __init__ mutates what it was given
    expected = {"seen": ["me"], "nested": {"k": [1, 2, 3]}}
    assert server.post("/copy-a").json() == expected
    assert server.post("/copy-b").json() == expected


def test_metrics_client_methods_do_not_raise(server):
    r = server.post("/metrics")
    assert r.status_code == 200
    assert r.text == "ok"


def test_post_predict_exception_is_logged_not_sent(server):
    r = server.post("/post-raises", json={"tag": "t1"})
    assert r.status_code == 200
    assert r.json() == {"answer": 42}
    line = server.wait_for_log(lambda l: "post-boom-t1" in l.get("exc_info", ""))
    assert line["levelname"] == "ERROR"
    assert "Traceback" in line["exc_info"]
    # and the server carries on
    r = server.post("/post-raises", json={"tag": "t2"})
    assert r.status_code == 200 and r.json() == {"answer": 42}


def test_post_predict_receives_payload_query_params_and_headers(server):
    r = server.post("/post-logs?q=7&q=8", json={"k": [1, "two"]}, headers={"X-Tag": "tagged"})
    assert r.status_code == 200
    assert r.text == "answered"
    line = server.wait_for_log(lambda l: l.get("message") == "post_predict ran"
                               and l.get("pp_header") == "tagged")
    assert line["pp_payload"] == {"k": [1, "two"]}
    assert line["pp_query"] == {"q": "8"}
