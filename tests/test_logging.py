"""JSON log lines on stdout (SPEC section 6): format, levels per API, access lines."""
import json
import re
import time
import uuid

import pytest
import requests

from conftest import LiveServer, write_project

PREDICTOR = """
import cortex_internal.lib.log
import cortex_runtime
from cortex_internal.lib.log import logger


class Thing:
    def __str__(self):
        return "thing-as-str"


class PythonPredictor:
    def __init__(self, config):
        self.name = config["name"]

    def predict(self, payload):
        op = payload["op"]
        if op == "same":
            return cortex_runtime.logger is cortex_internal.lib.log.logger
        if op == "info":
            if "extra" in payload:
                logger.info(payload["msg"], extra=payload["extra"])
            else:
                logger.info(payload["msg"])
            return "ok"
        if op == "thing":
            logger.info(payload["msg"], extra={"thing": Thing(), "n": 3})
            return "ok"
        if op == "reserved":
            try:
                logger.info("reserved key " + payload["key"], extra={payload["key"]: 1})
            except Exception as e:
                return type(e).__name__
            return "no error"
        if op == "exception":
            try:
                raise RuntimeError(payload["msg"])
            except RuntimeError:
                logger.exception("caught " + payload["tag"], extra={"after": "exc"})
            return "ok"
        if op == "levels":
            tag = payload["tag"]
            logger.debug(f"debug {tag} {self.name}")
            logger.info(f"info {tag} {self.name}")
            logger.warning(f"warning {tag} {self.name}")
            return "ok"
        return "unknown op"
"""

YAML = """
- name: quiet
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    config:
      name: quiet
- name: loud
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    log_level: debug
    config:
      name: loud
"""

ASCTIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}$")


def start(tmp_path_factory, label, *args, ready="listening"):
    """ready="healthz" waits on GET /healthz instead of the listening line (which a server
    started with a high --log-level might not print; that has its own test)."""
    root = write_project(tmp_path_factory.mktemp(label) / "project",
                         {"cortex.yaml": YAML, "predictor.py": PREDICTOR})
    srv = LiveServer(root, args, None, root.parent)
    try:
        if ready == "listening":
            srv.wait_listening()
        else:
            wait_healthz(srv)
    except BaseException:
        srv.close()
        raise
    return srv


def wait_healthz(srv, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise AssertionError(f"serve exited with {srv.proc.returncode}:\n{srv.stderr_text()}")
        try:
            if requests.get(srv.url("/healthz"), timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.02)
    raise AssertionError("serve never answered /healthz")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start(tmp_path_factory, "logging")
    yield srv
    srv.close()


def op(server, api="quiet", **payload):
    r = server.post(f"/{api}", json=payload)
    assert r.status_code == 200, r.text
    return r


def raw_line_with(server, marker):
    """The raw stdout line (text) whose message contains marker, parsed keeping key order."""
    server.wait_for_log(lambda l: marker in str(l.get("message", "")))
    for text in server.stdout_text().splitlines():
        if not text.startswith("{"):
            continue
        try:
            pairs = json.loads(text, object_pairs_hook=list)
        except ValueError:
            continue
        if marker in str(dict(pairs).get("message", "")):
            return text, pairs
    raise AssertionError(marker)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the logger object ----------------------------------------------------------------

def test_cortex_runtime_logger_is_cortex_internal_logger(server):
    assert op(server, op="same").json() is True


# -- line format ------------------------------------------------------------------------

def test_log_line_keys_in_order_with_extra_flattened_one_level(server):
    marker = unique("order")
    op(server, op="info", msg=marker, extra={"payload": {"a": 1}, "other": [1, "x"]})
    text, pairs = raw_line_with(server, marker)
    keys = [k for k, _ in pairs]
    assert keys == ["asctime", "levelname", "message", "process", "payload", "other"]
    line = json.loads(text)
    assert line["levelname"] == "INFO"
    assert line["message"] == marker
    assert line["payload"] == {"a": 1}
    assert line["other"] == [1, "x"]


def test_log_line_without_extra_has_exactly_the_four_keys(server):
    marker = unique("plain")
    op(server, op="info", msg=marker)
    _, pairs = raw_line_with(server, marker)
    assert [k for k, _ in pairs] == ["asctime", "levelname", "message", "process"]


def test_log_line_uses_python_default_separators(server):
    marker = unique("sep")
    op(server, op="info", msg=marker, extra={"payload": {"a": 1}})
    text, _ = raw_line_with(server, marker)
    assert text.startswith('{"asctime": "')
    assert f'"message": "{marker}", "process": ' in text
    assert text.endswith('"payload": {"a": 1}}')


def test_asctime_is_date_time_comma_millis(server):
    marker = unique("time")
    op(server, op="info", msg=marker)
    line = server.wait_for_log(lambda l: l.get("message") == marker)
    assert ASCTIME.match(line["asctime"]), line["asctime"]


def test_process_is_the_server_pid(server):
    marker = unique("pid")
    op(server, op="info", msg=marker)
    line = server.wait_for_log(lambda l: l.get("message") == marker)
    assert line["process"] == server.proc.pid


def test_non_ascii_message_is_ascii_escaped_in_the_raw_line(server):
    marker = unique("ascii")
    op(server, op="info", msg=f"{marker} caf\u00e9 \u2713", extra={"k": "\u00fc"})
    text, _ = raw_line_with(server, marker)
    assert "caf\\u00e9 \\u2713" in text
    assert '"k": "\\u00fc"' in text
    assert text.isascii()
    assert json.loads(text)["message"] == f"{marker} caf\u00e9 \u2713"


def test_non_json_extra_value_is_logged_as_its_str(server):
    marker = unique("thing")
    op(server, op="thing", msg=marker)
    line = server.wait_for_log(lambda l: l.get("message") == marker)
    assert line["thing"] == "thing-as-str"
    assert line["n"] == 3


@pytest.mark.parametrize("key", ["asctime", "levelname", "message", "process", "labels"])
def test_reserved_extra_key_raises_key_error(server, key):
    assert op(server, op="reserved", key=key).text == "KeyError"


def test_reserved_extra_key_writes_no_line(server):
    op(server, op="reserved", key="labels")
    marker = unique("after-reserved")
    op(server, op="info", msg=marker)
    server.wait_for_log(lambda l: l.get("message") == marker)
    assert not [l for l in server.log_lines()
                if str(l.get("message", "")).startswith("reserved key")]


def test_logger_exception_adds_exc_info_after_process_before_extra(server):
    tag = unique("exc")
    op(server, op="exception", msg=f"boom {tag}", tag=tag)
    text, pairs = raw_line_with(server, f"caught {tag}")
    assert [k for k, _ in pairs] == ["asctime", "levelname", "message", "process", "exc_info",
                                     "after"]
    line = json.loads(text)
    assert line["levelname"] == "ERROR"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert f"RuntimeError: boom {tag}" in line["exc_info"]


# -- levels -------------------------------------------------------------------------------

def messages(server):
    return {l.get("message") for l in server.log_lines()}


def run_levels(server, api):
    tag = unique("lvl")
    op(server, api=api, op="levels", tag=tag)
    server.wait_for_log(lambda l: l.get("message") == f"warning {tag} {api}")
    return tag, messages(server)


def test_default_info_level_drops_debug_keeps_info(server):
    tag, seen = run_levels(server, "quiet")
    assert f"info {tag} quiet" in seen
    assert f"debug {tag} quiet" not in seen


def test_api_log_level_debug_shows_debug_lines(server):
    tag, seen = run_levels(server, "loud")
    assert f"debug {tag} loud" in seen
    assert f"info {tag} loud" in seen


def test_level_names_in_lines(server):
    tag, _ = run_levels(server, "loud")
    by_message = {l.get("message"): l for l in server.log_lines()}
    assert by_message[f"debug {tag} loud"]["levelname"] == "DEBUG"
    assert by_message[f"info {tag} loud"]["levelname"] == "INFO"
    assert by_message[f"warning {tag} loud"]["levelname"] == "WARNING"


@pytest.fixture(scope="module")
def warning_server(tmp_path_factory):
    srv = start(tmp_path_factory, "warning", "--log-level", "warning", ready="healthz")
    yield srv
    srv.close()


def test_log_level_flag_overrides_every_api_upwards(warning_server):
    for api in ("quiet", "loud"):
        tag, seen = run_levels(warning_server, api)
        assert f"warning {tag} {api}" in seen
        assert f"info {tag} {api}" not in seen
        assert f"debug {tag} {api}" not in seen


def test_listening_line_is_logged_even_with_log_level_warning(warning_server):
    listening = [l for l in warning_server.log_lines() if l.get("message") == "listening"]
    assert len(listening) == 1, warning_server.stdout_text()
    assert int(listening[0]["port"]) == warning_server.port


def test_log_level_flag_overrides_every_api_downwards(tmp_path_factory):
    srv = start(tmp_path_factory, "debug", "--log-level", "debug")
    try:
        for api in ("quiet", "loud"):
            tag, seen = run_levels(srv, api)
            assert f"debug {tag} {api}" in seen
    finally:
        srv.close()


# -- access lines ---------------------------------------------------------------------------

def access_lines(server, request_id):
    return [l for l in server.log_lines()
            if l.get("request_id") == request_id and "status_code" in l]


def wait_access(server, request_id):
    return server.wait_for_log(lambda l: l.get("request_id") == request_id and "status_code" in l)


@pytest.mark.parametrize("method, path, status_code", [
    ("POST", "/quiet", "200 OK"),
    ("GET", "/quiet", "200 OK"),
    ("GET", "/nope", "404 Not Found"),
    ("PUT", "/quiet", "405 Method Not Allowed"),
])
def test_access_line_has_status_method_path_request_id_latency(server, method, path, status_code):
    rid = unique("acc")
    kwargs = {"json": {"op": "info", "msg": "from access test"}} if method == "POST" else {}
    r = server.request(method, path, headers={"X-Request-ID": rid}, **kwargs)
    assert r.headers["X-Request-ID"] == rid
    line = wait_access(server, rid)
    assert line["status_code"] == status_code
    assert line["method"] == method
    assert line["path"] == path
    assert isinstance(line["latency_ms"], (int, float)) and not isinstance(line["latency_ms"], bool)
    assert line["latency_ms"] >= 0
    assert ASCTIME.match(line["asctime"])


def test_access_line_request_id_matches_generated_response_header(server):
    r = server.get("/quiet")
    rid = r.headers["X-Request-ID"]
    line = wait_access(server, rid)
    assert line["path"] == "/quiet"


def test_access_line_for_request_with_query_names_the_endpoint_path(server):
    rid = unique("acc-q")
    server.get("/quiet?a=1", headers={"X-Request-ID": rid})
    line = wait_access(server, rid)
    assert line["path"].split("?")[0] == "/quiet"


def test_one_access_line_per_request(server):
    rids = [unique("once") for _ in range(3)]
    for rid in rids:
        server.get("/quiet", headers={"X-Request-ID": rid})
    for rid in rids:
        wait_access(server, rid)
    last = unique("once-last")
    server.get("/quiet", headers={"X-Request-ID": last})
    wait_access(server, last)
    for rid in rids:
        assert len(access_lines(server, rid)) == 1, rid


def test_no_access_log_flag_writes_no_access_lines(tmp_path_factory):
    srv = start(tmp_path_factory, "noaccess", "--no-access-log")
    try:
        for i in range(3):
            srv.get("/quiet", headers={"X-Request-ID": f"quiet-{i}"})
            srv.get("/nope")
        marker = unique("sync")
        srv.post("/quiet", json={"op": "info", "msg": marker})
        srv.post("/quiet", json={"op": "info", "msg": marker + "-2"})
        srv.wait_for_log(lambda l: l.get("message") == marker + "-2")
        assert not [l for l in srv.log_lines() if "status_code" in l]
    finally:
        srv.close()
