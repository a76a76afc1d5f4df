"""The pytest plugin (SPEC section 8): the `cortex_api` fixture, tested with pytest's own
`pytester` (a test session inside a test), and cortex_runtime.testing used directly."""
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import SIMPLE_YAML, free_port, run_cli, write_project
from cortex_runtime import testing
from cortex_runtime.testing import StartupFailed, start_api

pytest_plugins = ["pytester"]

ECHO = """
import os

from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config, metrics_client):
        self.config = config
        self.metrics = metrics_client
        logger.info("init done", extra={"cwd": os.getcwd()})

    def predict(self, payload, query_params):
        logger.info("predicting", extra={"payload": payload})
        self.metrics.increment("echo_calls", tags={"kind": type(payload).__name__})
        if query_params.get("env"):
            return {"env": os.environ.get(query_params["env"])}
        return {"got": payload, "config": self.config}
"""

INIT_RAISES = """
class PythonPredictor:
    def __init__(self, config):
        raise ValueError("boom")

    def predict(self, payload):
        return payload
"""

TWO_APIS = """
- name: alpha
  predictor:
    type: python
    path: named.py
    config: {name: alpha}
- name: beta
  predictor:
    type: python
    path: named.py
    config: {name: beta}
"""

NAMED = """
class PythonPredictor:
    def __init__(self, config):
        self.name = config["name"]

    def predict(self):
        return self.name
"""


def make_project(root: Path, predictor=ECHO, yaml=SIMPLE_YAML, **files) -> Path:
    return write_project(root, {"cortex.yaml": yaml, "predictor.py": predictor, **files})


def socket_fds() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            pass  # closed meanwhile (the listdir fd itself)
    return count


def port_is_closed(port) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# -- inner sessions ----------------------------------------------------------------------------

def test_passing_and_failing_predictor_tests_report_as_they_should(pytester):
    make_project(pytester.path / "echo")
    pytester.makepyfile(test_inner="""
        def test_passes(cortex_api):
            api = cortex_api("echo")
            assert api.post(json={"x": 1}).json() == {"got": {"x": 1}, "config": {}}

        def test_fails(cortex_api):
            api = cortex_api("echo")
            assert api.post(json={"x": 1}).json() == {"got": "something else"}
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_fails*", "*AssertionError*"])
    # the failing test's report carries the API's log lines, access line included
    result.stdout.fnmatch_lines(["*Captured cortex echo logs call*", '*"message": "predicting"*',
                                 '*"path": "/echo"*'])


def test_startup_error_is_readable_in_the_failure(pytester):
    make_project(pytester.path / "broken", predictor=INIT_RAISES)
    make_project(pytester.path / "badyaml", yaml="- name: echo\n  predictor: {path: predictor.py}\n")
    pytester.makepyfile(test_inner="""
        def test_init_raises(cortex_api):
            cortex_api("broken")

        def test_bad_config(cortex_api):
            cortex_api("badyaml")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*StartupFailed: predictor.py: __init__: boom: runtime exception*",
        '*StartupFailed: cortex.yaml: api "echo": predictor.type: required*',
    ])
    # the traceback of __init__ is shown with the failure, as a JSON log line
    result.stdout.fnmatch_lines(["*Captured stdout call*", '*ValueError: boom*'])


def test_startup_failed_message_is_the_line_serve_prints(tmp_path):
    path = make_project(tmp_path / "broken", predictor=INIT_RAISES)
    with pytest.raises(StartupFailed) as caught:
        testing.launch(path)
    served = run_cli("serve", path, "--port", free_port(), timeout=60)
    error_lines = [l for l in served.stderr.splitlines() if l.startswith("error: ")]
    assert error_lines == [f"error: {caught.value}"]
    assert isinstance(caught.value, Exception)
    assert any("ValueError: boom" in line.get("exc_info", "") for line in caught.value.logs)


def test_ports_do_not_leak_between_tests(pytester):
    make_project(pytester.path / "echo")
    ports = pytester.path / "ports.txt"
    pytester.makepyfile(test_inner=f"""
        import socket

        def closed(port):
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) != 0

        def test_first(cortex_api):
            api = cortex_api("echo")
            assert api.post(json=1).status_code == 200
            with open({str(ports)!r}, "a") as f:
                f.write(f"{{api.port}}\\n")

        def test_second_sees_the_first_port_closed(cortex_api):
            first = int(open({str(ports)!r}).read().split()[0])
            assert closed(first)
            api = cortex_api("echo")
            with open({str(ports)!r}, "a") as f:
                f.write(f"{{api.port}}\\n")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    for port in map(int, ports.read_text().split()):
        assert port_is_closed(port)
        with socket.socket() as s:  # and it can be bound again at once
            s.bind(("127.0.0.1", port))


def test_twenty_apis_in_one_session_leave_no_threads_or_sockets(pytester):
    make_project(pytester.path / "echo")
    pytester.makepyfile(test_inner="""
        import pytest

        @pytest.mark.parametrize("n", range(20))
        def test_api(cortex_api, n):
            api = cortex_api("echo", config={"n": n})
            assert api.post(json=n).json() == {"got": n, "config": {"n": n}}
    """)
    threads, sockets = threading.active_count(), socket_fds()
    result = pytester.runpytest("-p", "no:cacheprovider")  # in this process
    result.assert_outcomes(passed=20)
    assert threading.active_count() == threads
    assert socket_fds() == sockets


def test_several_apis_in_one_test_and_api_selection(pytester):
    make_project(pytester.path / "echo")
    write_project(pytester.path / "two", {"cortex.yaml": TWO_APIS, "named.py": NAMED})
    pytester.makepyfile(test_inner="""
        def test_both_on_one_port(cortex_api):
            apis = cortex_api("two")
            assert apis.names == ["alpha", "beta"]
            assert apis["alpha"].post().text == "alpha"
            assert apis["beta"].post().text == "beta"
            assert apis["beta"].url.endswith("/beta")
            assert apis.post("/alpha").text == "alpha"

        def test_one_by_name(cortex_api):
            beta = cortex_api("two", api="beta")
            assert beta.name == "beta" and beta.post().text == "beta"
            assert beta.post("/alpha").status_code == 404
            assert beta.post("/predict").text == "beta"  # the only API: /predict too

        def test_three_servers_at_once(cortex_api):
            alpha = cortex_api("two", api="alpha")
            beta = cortex_api("two", api="beta")
            echo = cortex_api("echo")
            assert len({alpha.port, beta.port, echo.port}) == 3
            assert (alpha.post().text, beta.post().text) == ("alpha", "beta")
            assert echo.post(json=[1]).json()["got"] == [1]
            assert [l["path"] for l in alpha.logs() if "path" in l] == ["/alpha"]

        def test_unknown_api_name(cortex_api):
            import pytest
            from cortex_runtime.testing import StartupFailed
            with pytest.raises(StartupFailed, match='no api named "gamma"'):
                cortex_api("two", api="gamma")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_works_with_xdist(pytester):
    pytest.importorskip("xdist")
    make_project(pytester.path / "echo")
    pytester.makepyfile(test_inner="""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_api(cortex_api, n):
            api = cortex_api("echo")
            assert api.post(json=n).json()["got"] == n
            assert api.metric("cortex_status_code", response_code="2XX") == 1
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=6)


# -- the client, logs, metrics, overrides --------------------------------------------------------

@pytest.fixture
def echo(tmp_path):
    return make_project(tmp_path / "echo")


def test_client_methods_and_response_object(echo):
    with start_api(echo) as api:
        assert api.url == f"http://127.0.0.1:{api.port}/echo"
        r = api.post(json={"a": [1, 2]}, params={"q": "1"})
        assert r.status_code == 200 and r.ok
        assert r.headers["content-type"] == r.headers["Content-Type"] == "application/json"
        assert r.json() == {"got": {"a": [1, 2]}, "config": {}}
        assert r.content == r.text.encode()
        assert api.post(data="text", headers={"Content-Type": "text/plain"}).json()["got"] == "text"
        assert api.post(data=b"\x00\x01").status_code == 500  # bytes payload is not JSON-able
        assert api.post(data={"field": "v"}).json()["got"] == {"field": "v"}
        assert api.get().json()["message"].startswith("make a prediction")
        assert api.put().status_code == 405 and api.delete().status_code == 405
        assert api.get("/healthz").text == "ok"
        assert api.get("nothing-here").status_code == 404  # /echo/nothing-here
        assert api.post(json=None).json()["got"] is None
        r = api.post(json=1, headers={"X-Request-ID": "my-id"})
        assert r.headers["x-request-id"] == "my-id"


def test_logs_are_this_apis_json_lines_with_access_lines(echo, tmp_path):
    other = make_project(tmp_path / "other")
    with start_api(echo) as api, start_api(other) as second:
        api.post(json="first", headers={"X-Request-ID": "id-1"})
        second.post(json="second")
        logs = api.logs()
        messages = [line["message"] for line in logs]
        assert messages[0] == "init done"
        assert "predicting" in messages and "POST /echo 200" in messages
        assert not [line for line in logs if line.get("payload") == "second"]
        access = next(line for line in logs if "status_code" in line)
        assert access["request_id"] == "id-1" and access["path"] == "/echo"
        # lines come back after stop too
    assert [l["message"] for l in api.logs()] == messages


def test_metric_reads_the_current_value_counting_from_this_apis_start(echo):
    for _ in range(2):  # the registry is process-wide: the second start starts from 0 again
        with start_api(echo) as api:
            assert api.metric("cortex_status_code", response_code="2XX") == 0
            for payload in [1, "x", 2]:
                api.post(json=payload)
            assert api.metric("cortex_status_code", response_code="2XX") == 3
            assert api.metric("cortex_status_code", api_name="echo", response_code="2XX") == 3
            assert api.metric("echo_calls", kind="int") == 2
            assert api.metric("echo_calls", kind="str") == 1
            assert api.metric("cortex_latency_count") == 3
            assert api.metric("cortex_in_flight_requests") == 0
            assert api.metric("no_such_metric") is None
            assert api.metric("echo_calls", kind="float") is None


def test_config_and_env_overrides_apply_and_env_is_restored(echo):
    os.environ.pop("ECHO_TEST_VAR", None)
    os.environ["ECHO_KEPT"] = "before"
    with start_api(echo, config={"model": "small"}, env={"ECHO_TEST_VAR": "on", "ECHO_KEPT": "x"}) as api:
        assert api.post(json=0).json()["config"] == {"model": "small"}
        assert api.post(json=0, params={"env": "ECHO_TEST_VAR"}).json() == {"env": "on"}
        assert os.environ["ECHO_KEPT"] == "x"
    assert "ECHO_TEST_VAR" not in os.environ
    assert os.environ.pop("ECHO_KEPT") == "before"


def test_dotenv_and_predictor_env_are_set_and_env_argument_wins(tmp_path):
    yaml = SIMPLE_YAML + "    env:\n      FROM_YAML: yaml\n      BOTH: yaml\n"
    path = make_project(tmp_path / "p", yaml=yaml, **{".env": "FROM_DOTENV=dotenv\n"})
    with start_api(path, env={"BOTH": "test"}) as api:
        def env(name):
            return api.post(json=0, params={"env": name}).json()["env"]
        assert (env("FROM_YAML"), env("FROM_DOTENV"), env("BOTH")) == ("yaml", "dotenv", "test")
    assert not {"FROM_YAML", "FROM_DOTENV", "BOTH"} & set(os.environ)


def test_cwd_is_the_staged_root_while_running_and_restored_out_of_order(echo, tmp_path):
    other = make_project(tmp_path / "other")
    before = os.getcwd()
    first = testing.launch(echo)
    second = testing.launch(other, env={"SHARED": "second"})
    try:
        assert os.getcwd() == second.root  # the most recently started one
        init = next(l for l in first.logs() if l["message"] == "init done")
        assert init["cwd"] == first.root
        assert testing.original_cwd() == before
        first.stop()
        assert os.getcwd() == second.root and os.environ["SHARED"] == "second"
    finally:
        second.stop()
        first.stop()  # idempotent
    assert os.getcwd() == before and "SHARED" not in os.environ
    assert not os.path.exists(first.root) and not os.path.exists(second.root)


def test_sys_path_and_project_modules_are_cleaned_up(tmp_path):
    predictor = "import helper\n" + ECHO.replace('"got": payload', '"got": helper.VALUE')
    one = make_project(tmp_path / "one", predictor=predictor, **{"helper.py": "VALUE = 1\n"})
    two = make_project(tmp_path / "two", predictor=predictor, **{"helper.py": "VALUE = 2\n"})
    path_before = list(sys.path)
    with start_api(one) as api:
        assert api.post(json=0).json()["got"] == 1
    assert "helper" not in sys.modules and sys.path == path_before
    with start_api(two) as api:  # its own helper.py, not the cached one
        assert api.post(json=0).json()["got"] == 2


def test_threads_override_runs_predict_concurrently(tmp_path):
    predictor = """
        import threading, time

        class PythonPredictor:
            def __init__(self, config):
                self.init_thread = threading.get_ident()

            def predict(self, payload):
                time.sleep(0.3)
                return threading.get_ident() == self.init_thread
    """
    path = make_project(tmp_path / "p", predictor=textwrap.dedent(predictor))
    with start_api(path) as api:  # one thread: predict runs where __init__ ran
        assert api.post(json=0).json() is True
    with start_api(path, threads=4) as api:
        from concurrent.futures import ThreadPoolExecutor
        import time
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: api.post(json=0).json(), range(4)))
        assert time.monotonic() - started < 1.0
        assert answers.count(True) <= 1


def test_processes_above_one_run_serve_in_a_subprocess(echo):
    with start_api(echo, processes=2, config={"mode": "sub"}, env={"SUB_VAR": "yes"}) as api:
        assert api.root is None
        assert api.post(json=5).json() == {"got": 5, "config": {"mode": "sub"}}
        assert api.post(json=0, params={"env": "SUB_VAR"}).json() == {"env": "yes"}
        assert "SUB_VAR" not in os.environ  # set in the child only
        assert any(line.get("path") == "/echo" for line in api.logs())
        assert api.metric("cortex_status_code", response_code="2XX") == 2
        port = api.port
    assert port_is_closed(port)


def test_subprocess_startup_error_is_the_serve_line(tmp_path):
    path = make_project(tmp_path / "broken", predictor=INIT_RAISES)
    with pytest.raises(StartupFailed) as caught:
        testing.launch(path, processes=2)
    assert str(caught.value) == "predictor.py: __init__: boom: runtime exception"


def test_start_api_works_outside_pytest(echo):
    code = textwrap.dedent(f"""
        import threading
        from cortex_runtime.testing import start_api
        with start_api({str(echo)!r}) as api:
            assert api.post(json=3).json()["got"] == 3
        assert threading.active_count() == 1
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_plugin_is_registered_through_the_entry_point():
    from importlib.metadata import entry_points
    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("cortex_runtime") == "cortex_runtime.pytest_plugin"


# -- AsyncAPI and tensorflow projects, in-process through serve's code ---------------------------

ASYNC_YAML = """
- name: job
  kind: AsyncAPI
  predictor:
    type: python
    path: predictor.py
"""

ASYNC_PREDICTOR = """
import threading
import time

from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config):
        self.config = config
        self.init_thread = threading.get_ident()

    def predict(self, payload, request_id):
        logger.info("predicting", extra={"workload": request_id})
        if payload == "not a dict":
            return payload
        return {"got": payload, "request_id": request_id, "config": self.config,
                "same_thread": threading.get_ident() == self.init_thread}
"""


@pytest.fixture
def job(tmp_path):
    return make_project(tmp_path / "job", predictor=ASYNC_PREDICTOR, yaml=ASYNC_YAML)


def test_asyncapi_project_in_an_inner_session(pytester):
    make_project(pytester.path / "job", predictor=ASYNC_PREDICTOR, yaml=ASYNC_YAML)
    dirs = pytester.path / "dirs.txt"
    pytester.makepyfile(test_inner=f"""
        import os
        import pytest

        def test_submit_and_wait(cortex_api):
            api = cortex_api("job", config={{"k": 1}})
            r = api.post(json={{"x": 1}})
            assert r.status_code == 200
            workload_id = r.json()["id"]
            done = api.wait(workload_id, timeout=10)
            assert done["status"] == "completed" and done["id"] == workload_id
            assert done["result"] == {{"got": {{"x": 1}}, "request_id": workload_id,
                                      "config": {{"k": 1}}, "same_thread": True}}
            assert api.get("0b5b3a4e-2d25-4c43-9d1c-6c8f1f1f1f1f").status_code == 404
            with pytest.raises(KeyError):
                api.status("0b5b3a4e-2d25-4c43-9d1c-6c8f1f1f1f1f")
            assert os.path.isfile(os.path.join(api.state_dir, "workloads.sqlite3"))
            with open({str(dirs)!r}, "a") as f:
                f.write(api.state_dir + "\\n")

        def test_each_start_has_its_own_state_dir(cortex_api):
            first, second = cortex_api("job"), cortex_api("job")
            assert first.state_dir != second.state_dir
            workload_id = first.submit(json=2)
            assert first.wait(workload_id)["result"]["got"] == 2
            assert second.get(workload_id).status_code == 404  # not in its store
            with open({str(dirs)!r}, "a") as f:
                f.write(first.state_dir + "\\n" + second.state_dir + "\\n")

        def test_not_a_dict_fails(cortex_api):
            api = cortex_api("job")
            workload_id = api.submit(json="not a dict")
            assert api.wait(workload_id) == {{"id": workload_id, "status": "failed"}}
            assert any("user response must be json serializable dictionary, got <class 'str'>"
                       in line["message"] for line in api.logs())
    """)
    threads, sockets = threading.active_count(), socket_fds()
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert threading.active_count() == threads and socket_fds() == sockets
    state_dirs = dirs.read_text().split()
    assert len(set(state_dirs)) == 3 and not any(os.path.exists(d) for d in state_dirs)


def test_async_workload_logs_go_to_the_apis_own_slot(echo, job):
    with start_api(echo) as realtime, start_api(job) as api:  # job's slot is not its index 0
        assert api.post(data="hello", headers={"Content-Type": "text/plain"}).status_code == 200
        realtime.post(json=1)
        workload_id = api.submit(json={"a": 1}, headers={"X-Request-ID": "my-workload-1"})
        assert workload_id == "my-workload-1"
        assert api.wait(workload_id)["result"]["got"] == {"a": 1}
        time.sleep(0.1)  # "workload completed" is logged just after the outcome is stored
        lines = api.logs()
        assert any(l["message"] == "predicting" and l.get("workload") == workload_id for l in lines)
        assert any(l["message"] == "workload completed" and l.get("request_id") == workload_id
                   for l in lines)
        assert any(l["message"] == "async workloads are stored here" for l in lines)
        assert not [l for l in realtime.logs() if "workload" in l["message"] or "workload" in l]


def test_state_dir_option_keeps_workloads_across_starts(job, tmp_path):
    state = tmp_path / "state"
    with start_api(job, state_dir=state) as api:
        assert api.state_dir == str(state)
        workload_id = api.submit(json=7)
        assert api.wait(workload_id)["status"] == "completed"
    assert (state / "workloads.sqlite3").is_file()  # given: kept
    with start_api(job, state_dir=state) as api:
        assert api.status(workload_id)["result"]["got"] == 7


def test_async_helpers_need_one_api_and_an_accepted_submit(tmp_path, echo):
    two = write_project(tmp_path / "two", {"cortex.yaml": TWO_APIS, "named.py": NAMED})
    with start_api(two) as apis:
        with pytest.raises(TypeError, match=r'api\["alpha"\]'):
            apis.submit(json=1)
    with start_api(echo) as api:  # a RealtimeAPI: no {"id"}
        with pytest.raises(AssertionError, match="not accepted"):
            api.submit(json=1)


def test_asyncapi_startup_errors_are_serves_lines(tmp_path):
    batching = ASYNC_YAML + "    server_side_batching: {max_batch_size: 2, batch_interval: 1s}\n"
    path = make_project(tmp_path / "b", predictor=ASYNC_PREDICTOR, yaml=batching)
    with pytest.raises(StartupFailed) as caught:
        testing.launch(path)
    assert str(caught.value) == ('cortex.yaml: api "job": predictor.server_side_batching: '
                                 "is not supported for kind AsyncAPI")
    served = run_cli("serve", path, "--port", free_port(), timeout=60)
    assert [l for l in served.stderr.splitlines() if l.startswith("error: ")] == [
        f"error: {caught.value}"]


def test_asyncapi_with_processes_runs_serve_with_a_temporary_state_dir(job):
    with start_api(job, processes=2) as api:
        state_dir = api.state_dir
        assert os.path.isdir(state_dir)
        workload_id = api.submit(json={"n": 3})
        assert api.wait(workload_id, timeout=30)["result"]["got"] == {"n": 3}
        assert os.path.isfile(os.path.join(state_dir, "workloads.sqlite3"))
    assert not os.path.exists(state_dir)


TF_PREDICTOR = """
from cortex_internal.lib.log import logger


class TensorFlowPredictor:
    def __init__(self, tensorflow_client, config):
        self.client = tensorflow_client
        logger.info("tf init done")

    def predict(self, payload):
        return {"doubled": self.client.predict(payload)["doubled"]}
"""


@pytest.fixture(scope="module")
def doubling_model(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("TensorFlow is not run under the AddressSanitizer preload")

    class Doubling(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"doubled": x * 2.0}

    root = tmp_path_factory.mktemp("tf-models")
    module = Doubling()
    tf.saved_model.save(module, str(root / "doubling" / "1"),
                        signatures={"serving_default": module.serve})
    return root / "doubling"


def tf_yaml(models, kind="RealtimeAPI"):
    return f"""
    - name: double
      kind: {kind}
      predictor:
        type: tensorflow
        path: predictor.py
        models:
          path: {models}
          poll_interval: 100ms
    """


def test_tensorflow_project_in_process(doubling_model, tmp_path):
    path = make_project(tmp_path / "tf", predictor=TF_PREDICTOR, yaml=tf_yaml(doubling_model))
    threads = threading.active_count()
    with start_api(path) as api:
        assert api.root is not None  # in this process
        assert api.post(json={"x": [1.5, 2]}).json() == {"doubled": [3.0, 4.0]}
        body = api.get().json()
        assert body["message"].startswith("make a prediction")
        assert body["model_metadata"]["_cortex_default-1"]["input_signatures"]["x"] == {
            "shape": [-1], "type": "float32"}
        assert api.post(json={"y": 1}).status_code == 500
        assert any(l["message"] == "tf init done" for l in api.logs())
    deadline = time.monotonic() + 5  # the model poller stops with the API
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() == threads


def test_tensorflow_asyncapi_in_an_inner_session(pytester, doubling_model):
    make_project(pytester.path / "tf", predictor=TF_PREDICTOR,
                 yaml=tf_yaml(doubling_model, kind="AsyncAPI"))
    pytester.makepyfile(test_inner="""
        def test_async_tensorflow(cortex_api):
            api = cortex_api("tf")
            done = api.wait(api.submit(json={"x": [4]}))
            assert done["status"] == "completed" and done["result"] == {"doubled": [8.0]}
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
