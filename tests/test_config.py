"""cortex.yaml: every rule gives one line naming the file and the key; defaults and overrides."""
import textwrap

import pytest

from conftest import run_cli
from cortex_runtime.config import Batching, load_project, parse_duration
from cortex_runtime.errors import StartupError

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return payload
"""


def api(name="iris", predictor_extra="", api_extra="", path="predictor.py", kind=None):
    """One API entry of a YAML list; the *_extra texts are indented under predictor / the API."""
    lines = [f"- name: {name}"]
    if kind:
        lines.append(f"  kind: {kind}")
    lines += ["  predictor:", "    type: python", f"    path: {path}"]
    lines += ["    " + line for line in textwrap.dedent(predictor_extra).strip("\n").splitlines()]
    lines += ["  " + line for line in textwrap.dedent(api_extra).strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


# (id, cortex.yaml text, extra files, the start of the expected message)
INVALID = [
    ("name-required", "- predictor:\n    type: python\n    path: predictor.py\n", {},
     "cortex.yaml: api at index 0: name: required"),
    ("name-required-second", api() + "- predictor:\n    type: python\n    path: predictor.py\n",
     {}, "cortex.yaml: api at index 1: name: required"),
    ("name-not-string", api(name="123"), {}, "cortex.yaml: api at index 0: name: must be a string"),
    ("name-uppercase", api(name="Iris"), {},
     'cortex.yaml: api at index 0: name: must contain only lower case letters, numbers and '
     'dashes, start with a letter and not end with a dash, got "Iris"'),
    ("name-underscore", api(name="my_api"), {}, "cortex.yaml: api at index 0: name: must "),
    ("name-trailing-dash", api(name="iris-"), {}, "cortex.yaml: api at index 0: name: must "),
    ("name-leading-digit", api(name="1iris"), {}, "cortex.yaml: api at index 0: name: must "),
    ("name-too-long", api(name="a" * 43), {},
     "cortex.yaml: api at index 0: name: must be at most 42 characters long"),
    ("name-duplicate", api() + api(), {},
     'cortex.yaml: api at index 1: name: "iris" is already used by the api at index 0'),
    ("kind-invalid", api(kind="BatchAPI"), {},
     'cortex.yaml: api "iris": kind: must be "RealtimeAPI" or "AsyncAPI", got "BatchAPI"'),
    ("predictor-required", "- name: iris\n", {}, 'cortex.yaml: api "iris": predictor: required'),
    ("predictor-not-mapping", "- name: iris\n  predictor: predictor.py\n", {},
     'cortex.yaml: api "iris": predictor: must be a mapping, got a string'),
    ("type-required", "- name: iris\n  predictor:\n    path: predictor.py\n", {},
     'cortex.yaml: api "iris": predictor.type: required'),
    ("type-invalid", "- name: iris\n  predictor:\n    type: pyhton\n    path: predictor.py\n", {},
     'cortex.yaml: api "iris": predictor.type: must be "python" or "tensorflow", got "pyhton"'),
    ("path-required", "- name: iris\n  predictor:\n    type: python\n", {},
     'cortex.yaml: api "iris": predictor.path: required'),
    ("path-not-py", api(path="predictor.txt"), {"predictor.txt": "x"},
     'cortex.yaml: api "iris": predictor.path: must be a .py file, got "predictor.txt"'),
    ("path-absolute", api(path="/etc/predictor.py"), {},
     'cortex.yaml: api "iris": predictor.path: must be relative to the project directory'),
    ("path-escapes-root", api(path="../predictor.py"), {},
     'cortex.yaml: api "iris": predictor.path: must stay inside the project directory'),
    ("path-escapes-root-midway", api(path="src/../../predictor.py"), {},
     'cortex.yaml: api "iris": predictor.path: must stay inside the project directory'),
    ("path-missing-file", api(path="missing.py"), {},
     'cortex.yaml: api "iris": predictor.path: "missing.py" does not exist in'),
    ("path-not-string", api(path="[a.py]"), {},
     'cortex.yaml: api "iris": predictor.path: must be a non-empty string'),
    ("config-not-mapping", api(predictor_extra="config: [1, 2]"), {},
     'cortex.yaml: api "iris": predictor.config: must be a mapping, got a list'),
    ("env-not-mapping", api(predictor_extra="env: A=1"), {},
     'cortex.yaml: api "iris": predictor.env: must be a mapping, got a string'),
    ("env-value-not-string", api(predictor_extra="env:\n  A: [1]"), {},
     'cortex.yaml: api "iris": predictor.env.A: must be a string, got a list'),
    ("env-value-null", api(predictor_extra="env:\n  A:"), {},
     'cortex.yaml: api "iris": predictor.env.A: must be a string, got null'),
    ("env-reserved", api(predictor_extra="env:\n  CORTEX_FOO: x"), {},
     'cortex.yaml: api "iris": predictor.env.CORTEX_FOO: environment variables starting with '
     "CORTEX_ are reserved"),
    ("python-path-missing", api(predictor_extra="python_path: lib"), {},
     'cortex.yaml: api "iris": predictor.python_path: "lib" is not a directory'),
    ("python-path-absolute", api(predictor_extra="python_path: /usr/lib"), {},
     'cortex.yaml: api "iris": predictor.python_path: must be relative'),
    ("python-path-escapes", api(predictor_extra="python_path: .."), {},
     'cortex.yaml: api "iris": predictor.python_path: must stay inside the project directory'),
    ("log-level-invalid", api(predictor_extra="log_level: verbose"), {},
     'cortex.yaml: api "iris": predictor.log_level: must be one of "debug", "info", "warning", '
     '"error", got "verbose"'),
    ("processes-zero", api(predictor_extra="processes_per_replica: 0"), {},
     'cortex.yaml: api "iris": predictor.processes_per_replica: must be an integer >= 1, got 0'),
    ("processes-string", api(predictor_extra="processes_per_replica: '2'"), {},
     'cortex.yaml: api "iris": predictor.processes_per_replica: must be an integer >= 1, got "2"'),
    ("processes-boolean", api(predictor_extra="processes_per_replica: true"), {},
     'cortex.yaml: api "iris": predictor.processes_per_replica: must be an integer >= 1, got true'),
    ("threads-zero", api(predictor_extra="threads_per_process: 0"), {},
     'cortex.yaml: api "iris": predictor.threads_per_process: must be an integer >= 1, got 0'),
    ("threads-float", api(predictor_extra="threads_per_process: 1.5"), {},
     'cortex.yaml: api "iris": predictor.threads_per_process: must be an integer >= 1, got 1.5'),
    ("batching-not-mapping", api(predictor_extra="server_side_batching: 8"), {},
     'cortex.yaml: api "iris": predictor.server_side_batching: must be a mapping'),
    ("batch-size-required", api(predictor_extra="server_side_batching:\n  batch_interval: 1s"),
     {}, 'cortex.yaml: api "iris": predictor.server_side_batching.max_batch_size: required'),
    ("batch-size-too-small", api(predictor_extra="server_side_batching:\n  max_batch_size: 1\n"
                                                 "  batch_interval: 1s"), {},
     'cortex.yaml: api "iris": predictor.server_side_batching.max_batch_size: must be an '
     "integer from 2 to 1024, got 1"),
    ("batch-size-too-big", api(predictor_extra="server_side_batching:\n  max_batch_size: 1025\n"
                                               "  batch_interval: 1s"), {},
     'cortex.yaml: api "iris": predictor.server_side_batching.max_batch_size: must be an '
     "integer from 2 to 1024, got 1025"),
    ("batch-interval-required", api(predictor_extra="server_side_batching:\n"
                                                    "  max_batch_size: 8"), {},
     'cortex.yaml: api "iris": predictor.server_side_batching.batch_interval: required'),
    ("batch-interval-garbage", api(predictor_extra="server_side_batching:\n  max_batch_size: 8\n"
                                                   "  batch_interval: soon"), {},
     'cortex.yaml: api "iris": predictor.server_side_batching.batch_interval: must be a '
     'duration such as "100ms" or "0.1s", or a number of seconds, got "soon"'),
    ("batch-interval-unknown-unit", api(predictor_extra="server_side_batching:\n"
                                                        "  max_batch_size: 8\n"
                                                        "  batch_interval: 5d"), {},
     'cortex.yaml: api "iris": predictor.server_side_batching.batch_interval: must be a duration'),
    ("batch-interval-zero", api(predictor_extra="server_side_batching:\n  max_batch_size: 8\n"
                                                "  batch_interval: 0ms"), {},
     'cortex.yaml: api "iris": predictor.server_side_batching.batch_interval: must be greater '
     'than 0, got "0ms"'),
    ("endpoint-no-slash", api(api_extra="networking:\n  endpoint: iris"), {},
     'cortex.yaml: api "iris": networking.endpoint: must start with "/", got "iris"'),
    ("endpoint-root", api(api_extra="networking:\n  endpoint: /"), {},
     'cortex.yaml: api "iris": networking.endpoint: must not be "/"'),
    ("endpoint-reserved", api(api_extra="networking:\n  endpoint: /healthz"), {},
     'cortex.yaml: api "iris": networking.endpoint: "/healthz" is reserved'),
    ("endpoint-bad-chars", api(api_extra="networking:\n  endpoint: /a b"), {},
     'cortex.yaml: api "iris": networking.endpoint: must be a URL path'),
    ("endpoint-duplicate", api(api_extra="networking:\n  endpoint: /shared") +
     api(name="rose", api_extra="networking:\n  endpoint: /shared/"), {},
     'cortex.yaml: api "rose": networking.endpoint: "/shared" is already used by api "iris"'),
    ("endpoint-collides-with-default", api() +
     api(name="rose", api_extra="networking:\n  endpoint: /iris"), {},
     'cortex.yaml: api "rose": networking.endpoint: "/iris" is already used by api "iris"'),
    ("concurrency-zero", api(api_extra="autoscaling:\n  max_replica_concurrency: 0"), {},
     'cortex.yaml: api "iris": autoscaling.max_replica_concurrency: must be an integer >= 1, '
     "got 0"),
    ("concurrency-string", api(api_extra="autoscaling:\n  max_replica_concurrency: lots"), {},
     'cortex.yaml: api "iris": autoscaling.max_replica_concurrency: must be an integer >= 1'),
    ("invalid-yaml", "- name: iris\n  predictor: {type: python\n", {},
     "cortex.yaml: invalid YAML: "),
    ("invalid-yaml-indent", "- name: iris\n predictor:\n    type: python\n", {},
     "cortex.yaml: invalid YAML: "),
    ("duplicate-key", api(predictor_extra="type: tensorflow"), {},
     'cortex.yaml: invalid YAML: duplicate key "type" (line 5, column 5)'),
    ("empty-file", "", {}, "cortex.yaml: the file is empty"),
    ("only-comments", "# nothing here\n", {}, "cortex.yaml: the file is empty"),
    ("top-level-scalar", "iris\n", {},
     "cortex.yaml: expected a list of APIs or one API mapping, got a string"),
    ("empty-list", "[]\n", {}, "cortex.yaml: no APIs defined"),
    ("list-of-scalars", api() + "- rose\n", {},
     "cortex.yaml: api at index 1: expected an API mapping, got a string"),
]


def make_project(project, yaml, extra):
    files = {"cortex.yaml": yaml, "predictor.py": PREDICTOR}
    files.update(extra)
    return project(files)


@pytest.mark.parametrize("yaml, extra, expected", [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_load_project_rejects(project, yaml, extra, expected):
    path = make_project(project, yaml, extra)
    with pytest.raises(StartupError) as info:
        load_project(str(path))
    message = str(info.value)
    assert message.startswith(expected)
    assert "\n" not in message


@pytest.mark.parametrize("yaml, extra, expected", [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_validate_prints_one_error_line(project, yaml, extra, expected):
    path = make_project(project, yaml, extra)
    result = run_cli("validate", path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: " + expected), result.stderr


def test_validate_reports_a_missing_config_file(tmp_path):
    result = run_cli("validate", tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: cortex.yaml: not found in {tmp_path}"


def test_validate_accepts_a_valid_project_and_names_its_apis(project):
    path = make_project(project, api() + api(name="rose"), {})
    result = run_cli("validate", path)
    assert result.returncode == 0, result.stderr
    assert "iris" in result.stdout and "rose" in result.stdout


def test_validate_accepts_a_config_file_path(project):
    path = project({"apis.yaml": api(), "predictor.py": PREDICTOR})
    result = run_cli("validate", path / "apis.yaml")
    assert result.returncode == 0, result.stderr
    assert "iris" in result.stdout


# ---------------------------------------------------------------------------------------------
# load_project, directly


def test_defaults(project):
    path = make_project(project, api(), {})
    loaded = load_project(str(path))
    assert loaded.root == str(path)
    assert loaded.config_file == str(path / "cortex.yaml")
    assert loaded.warnings == []
    [spec] = loaded.apis
    assert spec.name == "iris"
    assert spec.kind == "RealtimeAPI"
    assert spec.predictor_type == "python"
    assert spec.predictor_path == "predictor.py"
    assert spec.config == {}
    assert spec.env == {}
    assert spec.python_path is None
    assert spec.log_level == "info"
    assert (spec.processes, spec.threads) == (1, 1)
    assert spec.batching is None
    assert spec.models is None
    assert spec.endpoint == "/iris"
    assert spec.max_replica_concurrency == 1024
    assert spec.raw == {"name": "iris", "predictor": {"type": "python", "path": "predictor.py"}}


def test_every_key_read(project):
    yaml = """
    - name: iris
      kind: AsyncAPI
      predictor:
        type: python
        path: src/predictor.py
        config: {threshold: 0.5, labels: [a, b]}
        env: {TEXT: hello, NUMBER: 5, RATIO: 0.5, FLAG: true}
        python_path: src
        log_level: debug
        processes_per_replica: 3
        threads_per_process: 8
        server_side_batching: {max_batch_size: 16, batch_interval: 250ms}
      networking:
        endpoint: /v1/iris/
      autoscaling:
        max_replica_concurrency: 12
        min_replicas: 2
    """
    path = project({"cortex.yaml": yaml, "src/predictor.py": PREDICTOR})
    loaded = load_project(str(path))
    [spec] = loaded.apis
    assert spec.kind == "AsyncAPI"
    assert spec.predictor_path == "src/predictor.py"
    assert spec.config == {"threshold": 0.5, "labels": ["a", "b"]}
    assert spec.env == {"TEXT": "hello", "NUMBER": "5", "RATIO": "0.5", "FLAG": "true"}
    assert spec.python_path == "src"
    assert spec.log_level == "debug"
    assert (spec.processes, spec.threads) == (3, 8)
    assert spec.batching == Batching(max_batch_size=16, batch_interval=0.25)
    assert spec.endpoint == "/v1/iris"
    assert spec.max_replica_concurrency == 12
    assert loaded.warnings == []


def test_one_mapping_is_one_api(project):
    yaml = "name: iris\npredictor:\n  type: python\n  path: predictor.py\n"
    path = make_project(project, yaml, {})
    assert [spec.name for spec in load_project(str(path)).apis] == ["iris"]


def test_apis_keep_file_order(project):
    path = make_project(project, api("zeta") + api("alpha") + api("mid"), {})
    assert [spec.name for spec in load_project(str(path)).apis] == ["zeta", "alpha", "mid"]


def test_api_names_select_in_file_order(project):
    path = make_project(project, api("zeta") + api("alpha") + api("mid"), {})
    loaded = load_project(str(path), api_names=["mid", "zeta"])
    assert [spec.name for spec in loaded.apis] == ["zeta", "mid"]


def test_unknown_api_name_is_an_error(project):
    path = make_project(project, api("iris") + api("rose"), {})
    with pytest.raises(StartupError) as info:
        load_project(str(path), api_names=["tulip"])
    assert str(info.value) == 'cortex.yaml: no api named "tulip" (defined: "iris", "rose")'


def test_overrides_replace_file_values(project):
    path = make_project(project, api("iris", predictor_extra="processes_per_replica: 4\n"
                                                           "threads_per_process: 2\n"
                                                           "log_level: error") + api("rose"), {})
    loaded = load_project(str(path), overrides={"processes": 2, "threads": 16,
                                                "log_level": "debug"})
    for spec in loaded.apis:
        assert (spec.processes, spec.threads, spec.log_level) == (2, 16, "debug")


def test_none_overrides_keep_file_values(project):
    path = make_project(project, api(predictor_extra="processes_per_replica: 4\n"
                                                     "log_level: error"), {})
    [spec] = load_project(str(path), overrides={"processes": None, "threads": None,
                                                "log_level": None}).apis
    assert (spec.processes, spec.threads, spec.log_level) == (4, 1, "error")


def test_invalid_override_is_an_error(project):
    path = make_project(project, api(), {})
    with pytest.raises(StartupError, match="--processes: must be an integer >= 1"):
        load_project(str(path), overrides={"processes": 0})


def test_cortex_yml_is_the_fallback(project):
    path = project({"cortex.yml": api(), "predictor.py": PREDICTOR})
    loaded = load_project(str(path))
    assert loaded.config_file == str(path / "cortex.yml")


def test_config_file_path_sets_the_root(project):
    path = project({"deploy/apis.yaml": api(), "deploy/predictor.py": PREDICTOR})
    loaded = load_project(str(path / "deploy" / "apis.yaml"))
    assert loaded.root == str(path / "deploy")
    assert loaded.config_file == str(path / "deploy" / "apis.yaml")


def test_messages_name_the_config_file_given(project):
    path = project({"apis.yaml": api(path="missing.py")})
    with pytest.raises(StartupError, match=r'^apis\.yaml: api "iris": predictor\.path: '):
        load_project(str(path / "apis.yaml"))


def test_null_values_mean_defaults(project):
    path = make_project(project, api(predictor_extra="config:\nenv:\nlog_level:",
                                     api_extra="networking:\nautoscaling:"), {})
    [spec] = load_project(str(path)).apis
    assert (spec.config, spec.env, spec.log_level, spec.endpoint) == ({}, {}, "info", "/iris")


def test_unknown_keys_are_warnings(project):
    path = make_project(project, api(predictor_extra="typo_key: 1\nserver_side_batching:\n"
                                                     "  max_batch_size: 4\n"
                                                     "  batch_interval: 1s\n  extra: 1",
                                     api_extra="foo: bar\nnetworking:\n  endpiont: /x\n"
                                               "autoscaling:\n  max_replica_concurency: 3"),
                        {})
    loaded = load_project(str(path))
    assert loaded.warnings == [
        'cortex.yaml: api "iris": unknown key "foo" (ignored)',
        'cortex.yaml: api "iris": unknown key "predictor.typo_key" (ignored)',
        'cortex.yaml: api "iris": unknown key "networking.endpiont" (ignored)',
        'cortex.yaml: api "iris": unknown key "autoscaling.max_replica_concurency" (ignored)',
        'cortex.yaml: api "iris": unknown key "predictor.server_side_batching.extra" (ignored)',
    ]
    assert loaded.apis[0].max_replica_concurrency == 1024


def test_cortex_cluster_keys_are_accepted_silently(project):
    yaml = """
    - name: iris
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
        image: quay.io/cortexlabs/python-predictor-cpu:0.31.0
        tensorflow_serving_image: quay.io/cortexlabs/tensorflow-serving-cpu:0.31.0
        shm_size: 1Gi
        dependencies: {pip: requirements.txt}
        multi_model_reloading: {path: s3://bucket/model}
        signature_key: serving_default
      compute: {cpu: 1, gpu: 0, mem: 2G}
      autoscaling:
        min_replicas: 1
        max_replicas: 10
        init_replicas: 2
        target_replica_concurrency: 4
        window: 60s
        downscale_stabilization_period: 5m
        upscale_stabilization_period: 1m
        max_downscale_factor: 0.75
        max_upscale_factor: 1.5
        downscale_tolerance: 0.05
        upscale_tolerance: 0.05
      update_strategy: {max_surge: 25%, max_unavailable: 25%}
      networking:
        api_gateway: public
    """
    path = make_project(project, yaml, {})
    loaded = load_project(str(path))
    assert loaded.warnings == []


def test_tensorflow_models_mapping_is_kept(project):
    yaml = """
    - name: tf
      predictor:
        type: tensorflow
        path: predictor.py
        models:
          paths:
            - {name: a, path: models/a}
          signature_key: serving_default
    """
    [spec] = load_project(str(make_project(project, yaml, {}))).apis
    assert spec.predictor_type == "tensorflow"
    assert spec.models == {"paths": [{"name": "a", "path": "models/a"}],
                           "signature_key": "serving_default"}


def test_models_must_be_a_mapping(project):
    yaml = "- name: tf\n  predictor:\n    type: tensorflow\n    path: predictor.py\n" \
           "    models: [a]\n"
    with pytest.raises(StartupError, match=r'api "tf": predictor\.models: must be a mapping'):
        load_project(str(make_project(project, yaml, {})))


def test_name_of_42_characters_is_accepted(project):
    name = "a" + "-b" * 20 + "c"
    assert len(name) == 42
    [spec] = load_project(str(make_project(project, api(name=name), {}))).apis
    assert spec.name == name


def test_yaml_error_gives_the_line(project):
    path = make_project(project, "- name: iris\n  predictor: {type: python\n", {})
    with pytest.raises(StartupError) as info:
        load_project(str(path))
    assert "(line " in str(info.value)


@pytest.mark.parametrize("text, seconds", [
    ("100ms", 0.1), ("0.1s", 0.1), ("2m", 120.0), ("1h", 3600.0), ("1m30s", 90.0),
    ("1.5s", 1.5), ("250us", 0.00025), ("250µs", 0.00025), ("500ns", 5e-7), (".5s", 0.5),
    ("2", 2.0), ("0.25", 0.25), (3, 3.0), (0.5, 0.5),
])
def test_batch_interval_forms(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "1x", "1 s", "s1", "1s junk", True, None, [1]])
def test_batch_interval_rejects(text):
    assert parse_duration(text) is None
