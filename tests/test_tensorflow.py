"""TensorFlowPredictor and tensorflow_client: SavedModels built here, served in-process and
through a local gRPC PredictionService standing in for TensorFlow Serving."""
import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest

if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("TensorFlow is not run under the AddressSanitizer preload", allow_module_level=True)
tf = pytest.importorskip("tensorflow")
np = pytest.importorskip("numpy")

from conftest import write_project  # noqa: E402

from cortex_runtime import tensorflow as tfc  # noqa: E402
from cortex_runtime.errors import StartupError  # noqa: E402

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}
LABELS = ["setosa", "versicolor", "virginica"]


# -------------------------------------------------------------------------------------------
# models


class Iris(tf.Module):
    """Iris-shaped: four float inputs of shape [-1]; class_ids int64 [-1, 1] and
    probabilities float32 [-1, 3].  The class follows petal_length; `shift` is added to the
    last logit, so a version with a large shift always answers virginica."""

    def __init__(self, shift=0.0):
        super().__init__()
        self.shift = tf.Variable([0.0, 0.0, shift])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=n) for n in FEATURES])
    def serve(self, sepal_length, sepal_width, petal_length, petal_width):
        logits = (petal_length[:, None] * tf.constant([-1.0, 0.0, 1.0])
                  + tf.constant([4.0, 1.0, -4.0]) + self.shift + 0.0 * sepal_length[:, None])
        return {"class_ids": tf.argmax(logits, axis=1, output_type=tf.int64)[:, None],
                "probabilities": tf.nn.softmax(logits)}


class Kinds(tf.Module):
    """One output of each kind, for the conversion rules."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                  tf.TensorSpec([], tf.int64, name="n"),
                                  tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, x, n, text):
        return {"int64": tf.stack([n, n * 2, tf.constant(2 ** 40, tf.int64)]),
                "float": x * 0.1,
                "double": tf.cast(x, tf.float64) / 3.0,
                "bytes": text,
                "bool": x > 0,
                "int32": tf.cast(x, tf.int32)[:, None],
                "ratio": x / tf.constant(0.0),
                "matrix": tf.reshape(tf.range(4.0), [2, 2])}


class MoreKinds(tf.Module):
    """The dtypes Kinds leaves out: float16, the small ints, unsigned ints, text made by the
    model."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"half": tf.cast(x, tf.float16),
                "int8": tf.cast(x * 100.0, tf.int8),
                "int16": tf.cast(x * 1000.0, tf.int16)[None, :],
                "uint8": tf.cast(tf.abs(x) * 100.0, tf.uint8),
                "uint16": tf.cast(tf.abs(x) * 1000.0, tf.uint16),
                "uint32": tf.cast(tf.abs(x) * 1000.0, tf.uint32),
                "uint64": tf.cast(tf.abs(x) * 1000.0, tf.uint64),
                "float64": tf.cast(x, tf.float64) * 0.1,
                "text": tf.strings.as_string(x, precision=1),
                "positive": tf.reshape(x > 0, [-1, 1])}


class TwoSignatures(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def total(self, x):
        return {"total": tf.reduce_sum(x, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def first(self, x):
        return {"first": x[:, 0]}


class Slow(tf.Module):
    """Runs for a while inside TensorFlow (for the GIL test)."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="steps")])
    def serve(self, steps):
        m = tf.random.stateless_uniform([300, 300], seed=[1, 2])
        result = tf.while_loop(lambda i, a: i < steps,
                               lambda i, a: (i + 1, tf.matmul(a, m) / 300.0), [0, m])[1]
        return {"sum": tf.reduce_sum(result)}


def save(module, path, signatures):
    tf.saved_model.save(module, str(path), signatures=signatures)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The SavedModels, built once for this file: a read-only tree tests copy from."""
    root = tmp_path_factory.mktemp("models")
    iris1, iris2 = Iris(), Iris(shift=100.0)
    save(iris1, root / "iris" / "1", {"serving_default": iris1.serve})
    save(iris2, root / "iris" / "2", {"serving_default": iris2.serve})
    kinds = Kinds()
    save(kinds, root / "kinds" / "1", {"serving_default": kinds.serve})
    more = MoreKinds()
    save(more, root / "more-kinds" / "1", {"serving_default": more.serve})
    two = TwoSignatures()
    save(two, root / "predict-and-other" / "1", {"predict": two.total, "other": two.first})
    save(two, root / "neither" / "1", {"a": two.total, "b": two.first})
    slow = Slow()
    save(slow, root / "slow" / "1", {"serving_default": slow.serve})
    shutil.copytree(root / "iris" / "1", root / "unversioned")  # a SavedModel right there
    return root


def local_client(models_mapping, root):
    models = tfc.Models.from_mapping(models_mapping, str(root))
    return tfc.TensorFlowClient(models, tfc.LocalBackend(models))


@pytest.fixture(scope="module")
def paths_client(models):
    return local_client({"paths": [{"name": "iris", "path": "iris"},
                                   {"name": "kinds", "path": "kinds"},
                                   {"name": "two", "path": "predict-and-other"}],
                         "poll_interval": 0}, models)


# -------------------------------------------------------------------------------------------
# the client in this process: errors with Cortex's wording, conversions


def error_of(call):
    with pytest.raises(tfc.TensorFlowClientError) as info:
        call()
    return str(info.value)


def test_missing_input_is_named_with_model_and_version(paths_client):
    message = error_of(lambda: paths_client.predict({"sepal_length": 5.1}, "iris", "1"))
    assert message == "missing key 'petal_length' for model 'iris' of version '1'"
    # latest names the version it resolved to
    message = error_of(lambda: paths_client.predict({"sepal_length": 5.1}, "iris"))
    assert message == "missing key 'petal_length' for model 'iris' of version '2'"


def test_model_name_is_required_with_paths_and_must_be_listed(paths_client):
    assert error_of(lambda: paths_client.predict(SETOSA)) == (
        "model_name was not specified, choose one of the following: ['iris', 'kinds', 'two']")
    assert error_of(lambda: paths_client.predict(SETOSA, "rose")) == (
        "'rose' model wasn't found in the list of available models")


@pytest.mark.parametrize("version", ["one", "-1", "1.0", "", None, "²"])
def test_version_must_be_numeric_or_latest(paths_client, version):
    assert error_of(lambda: paths_client.predict(SETOSA, "iris", version)) == (
        "model_version must be either a parse-able numeric value or 'latest'")


def test_unknown_version_is_named(paths_client):
    assert error_of(lambda: paths_client.predict(SETOSA, "iris", "7")) == (
        "model 'iris' of version '7' couldn't be found")


def test_versions_select_the_model_and_latest_is_the_highest(paths_client):
    assert paths_client.predict(SETOSA, "iris", "1")["class_ids"] == ["0"]
    assert paths_client.predict(SETOSA, "iris", 1)["class_ids"] == ["0"]
    assert paths_client.predict(SETOSA, "iris", "01")["class_ids"] == ["0"]
    assert paths_client.predict(SETOSA, "iris")["class_ids"] == ["2"]
    assert paths_client.predict(SETOSA, "iris", "latest")["class_ids"] == ["2"]


def test_inputs_are_converted_to_the_signature_dtypes_and_batched(paths_client):
    ints = {key: int(round(value)) for key, value in VIRGINICA.items()}
    assert paths_client.predict(ints, "iris", "1")["class_ids"] == ["2"]
    batch = {key: [SETOSA[key], VIRGINICA[key]] for key in FEATURES}
    prediction = paths_client.predict(batch, "iris", "1")
    assert prediction["class_ids"] == ["0", "2"]
    assert len(prediction["probabilities"]) == 6  # [2, 3] flattened
    arrays = {key: np.array([value], dtype=np.float64) for key, value in SETOSA.items()}
    assert paths_client.predict(arrays, "iris", "1")["class_ids"] == ["0"]


def test_bad_values_name_the_key_and_the_expected_shape(paths_client):
    message = error_of(lambda: paths_client.predict({**SETOSA, "petal_width": "wide"}, "iris", "1"))
    assert message.startswith('key "petal_width": expected shape [-1]: ')
    message = error_of(lambda: paths_client.predict({**SETOSA, "petal_width": [[1.0]]}, "iris", "1"))
    assert message == 'key "petal_width": expected shape [-1]: got shape [1, 1]'
    message = error_of(lambda: paths_client.predict(
        {"x": [1.0], "n": [1, 2], "text": ["a"]}, "kinds", "1"))
    assert message == 'key "n": expected to be a scalar: got shape [2]'
    message = error_of(lambda: paths_client.predict({"x": [1.0], "n": 1.5, "text": ["a"]},
                                                    "kinds", "1"))
    assert message.startswith('key "n": expected to be a scalar: ')


def test_model_input_must_be_a_dict_without_unknown_keys(paths_client):
    assert error_of(lambda: paths_client.predict([1, 2], "iris")) == (
        "model_input must be a dictionary of input names to values, got list")
    message = error_of(lambda: paths_client.predict({**SETOSA, "colour": 1}, "iris", "1"))
    assert message.startswith("unexpected key 'colour' for model 'iris' of version '1'")


def test_outputs_are_flat_lists_int64_as_strings_bytes_as_base64(paths_client):
    out = paths_client.predict({"x": [1.5, -2.0, 0.0], "n": 7, "text": ["héllo", b"\x00\xff"]},
                               "kinds")
    assert out["int64"] == ["7", "14", str(2 ** 40)]
    assert out["float"] == [0.15, -0.2, 0.0]  # float32 as its shortest text, as TFS's JSON
    assert out["double"] == [0.5, -2.0 / 3.0, 0.0]
    assert out["bytes"] == [base64.b64encode("héllo".encode()).decode(),
                            base64.b64encode(b"\x00\xff").decode()]
    assert out["bool"] == [True, False, False]
    assert out["int32"] == [1, -2, 0]
    assert out["ratio"] == ["Infinity", "-Infinity", "NaN"]
    assert out["matrix"] == [0.0, 1.0, 2.0, 3.0]
    json.dumps(out, allow_nan=False)  # plain JSON


MORE_KINDS_INPUT = {"x": [0.5, -1.0, 0.1]}
MORE_KINDS_OUTPUT = {
    # float16 as the 16 bits TF Serving's half_val carried, which Cortex passed on as ints
    "half": [0x3800, 0xBC00, 0x2E66],
    "int8": [50, -100, 10],
    "int16": [500, -1000, 100],
    "uint8": [50, 100, 10],
    "uint16": [500, 1000, 100],
    "uint32": [500, 1000, 100],
    "uint64": ["500", "1000", "100"],
    "float64": [0.05, -0.1, float(np.float32(0.1)) * 0.1],
    "text": [base64.b64encode(t).decode() for t in (b"0.5", b"-1.0", b"0.1")],
    "positive": [True, False, True],
}


def test_outputs_of_the_other_dtypes(models):
    client = local_client({"path": "more-kinds", "poll_interval": 0}, models)
    out = client.predict(MORE_KINDS_INPUT)
    assert out == MORE_KINDS_OUTPUT
    assert [type(v) for v in out["half"]] == [int] * 3
    assert np.array(out["half"], np.uint16).view(np.float16).tolist() == [0.5, -1.0, 0.0999755859375]
    json.dumps(out, allow_nan=False)


def test_to_list_rules_for_other_dtypes():
    assert tfc.to_list(np.array([[1, 2]], dtype=np.uint64)) == ["1", "2"]
    assert tfc.to_list(np.array([1, 2], dtype=np.uint8)) == [1, 2]
    assert tfc.to_list(np.array([0.5, -0.0, np.inf, np.nan], dtype=np.float16)) == [
        0x3800, 0x8000, 0x7C00, 0x7E00]
    assert tfc.to_list(np.array([0.5], dtype=">f2")) == [0x3800]
    assert tfc.to_list(np.array([1 + 2j], dtype=np.complex64)) == [1.0, 2.0]
    assert tfc.to_list(np.float32(0.1)) == [0.1]


def test_signature_key_default_is_the_only_one_else_predict(paths_client, models):
    assert paths_client.predict({"x": [[1.0, 2.0]]}, "two") == {"total": [3.0]}
    client = local_client({"path": "predict-and-other", "signature_key": "other",
                           "poll_interval": 0}, models)
    assert client.predict({"x": [[1.0, 2.0]]}) == {"first": [1.0]}
    assert client.metadata["_cortex_default-1"]["signature_key"] == "other"


def test_signature_key_errors_list_the_keys(models):
    with pytest.raises(StartupError) as info:
        local_client({"path": "neither", "poll_interval": 0}, models)
    assert str(info.value) == (
        "predictor.models: signature_key was not configured by user, please specify one the "
        "following keys 'a, b' for model '_cortex_default' of version '1' (found in the "
        "signature def map)")
    with pytest.raises(StartupError) as info:
        local_client({"paths": [{"name": "n", "path": "neither", "signature_key": "c"}],
                      "poll_interval": 0}, models)
    assert str(info.value) == (
        "predictor.models: signature_key 'c' was not found in signature def map for model 'n' "
        "of version '1', but found the following keys: 'a', 'b'")
    with pytest.raises(StartupError, match="but found the following key: 'serving_default'$"):
        local_client({"path": "iris", "signature_key": "predict", "poll_interval": 0}, models)


def test_missing_and_empty_model_folders_are_startup_errors(models, tmp_path):
    with pytest.raises(StartupError, match=r"^predictor.models.path: .*/nowhere is not a directory$"):
        local_client({"path": "nowhere"}, models)
    (tmp_path / "empty" / "7").mkdir(parents=True)
    with pytest.raises(StartupError, match=r"^predictor.models: model 'e' at .*/empty has no SavedModel"):
        local_client({"paths": [{"name": "e", "path": "empty"}]}, tmp_path)
    with pytest.raises(StartupError, match=r"^predictor.models.dir: .* has no model folders$"):
        local_client({"dir": "empty/7"}, tmp_path)


def test_a_saved_model_without_version_folders_is_version_1(models):
    client = local_client({"path": "unversioned", "poll_interval": 0}, models)
    assert client.predict(SETOSA)["class_ids"] == ["0"]
    assert list(client.metadata) == ["_cortex_default-1"]


def test_dir_models_need_model_name(models, tmp_path):
    shutil.copytree(models / "iris", tmp_path / "all" / "iris")
    shutil.copytree(models / "kinds", tmp_path / "all" / "kinds")
    client = local_client({"dir": "all", "poll_interval": 0}, tmp_path)
    assert error_of(lambda: client.predict(SETOSA)) == "model_name was not specified"
    assert error_of(lambda: client.predict(SETOSA, "rose")) == (
        "'rose' model wasn't found in the list of available models")
    assert client.predict(SETOSA, "iris", "1")["class_ids"] == ["0"]
    assert sorted(client.metadata) == ["iris-1", "iris-2", "kinds-1"]


def test_metadata_gives_signature_key_and_inputs_per_model_and_version(paths_client, models):
    metadata = paths_client.metadata
    assert sorted(metadata) == ["iris-1", "iris-2", "kinds-1", "two-1"]
    iris = metadata["iris-1"]
    assert iris["signature_key"] == "serving_default"
    assert iris["input_signatures"] == {name: {"shape": [-1], "type": "float32"}
                                        for name in FEATURES}
    assert iris["disk_path"] == str(models / "iris" / "1")
    assert isinstance(iris["timestamp"], int)
    assert metadata["kinds-1"]["input_signatures"] == {
        "n": {"shape": ["scalar"], "type": "int64"},
        "text": {"shape": [-1], "type": "string"},
        "x": {"shape": [-1], "type": "float32"}}


def test_calls_run_with_the_gil_released(models):
    client = local_client({"path": "slow", "poll_interval": 0}, models)
    steps = 1
    while True:  # a call long enough to measure
        start = time.perf_counter()
        client.predict({"steps": steps})
        if time.perf_counter() - start > 0.3 or steps > 10 ** 5:
            break
        steps *= 4
    counted = [0]
    done = threading.Event()

    def count():
        while not done.is_set():
            counted[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        start = time.perf_counter()
        client.predict({"steps": steps})
        during = counted[0]
        elapsed = time.perf_counter() - start
    finally:
        done.set()
        counter.join()
    # with the GIL held for the whole call the counter would barely move
    assert during > 20000 * elapsed, (during, elapsed)


def test_import_cortex_runtime_does_not_import_tensorflow():
    code = ("import sys, cortex_runtime, cortex_runtime.serve, cortex_runtime.tensorflow; "
            "assert 'tensorflow' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------------------------
# served: the Cortex-style predictor, GET, hot-added versions, startup errors

IRIS_PREDICTOR = """
labels = ["setosa", "versicolor", "virginica"]

class TensorFlowPredictor:
    def __init__(self, tensorflow_client, config):
        self.client = tensorflow_client

    def predict(self, payload, query_params):
        version = query_params.get("version", "latest")
        prediction = self.client.predict(payload, model_version=version)
        return labels[int(prediction["class_ids"][0])]
"""

PROBE_PREDICTOR = """
class TensorFlowPredictor:
    def __init__(self, tensorflow_client, config, metrics_client):
        self.client = tensorflow_client

    def predict(self, payload):
        try:
            return {"result": self.client.predict(payload["input"], *payload.get("args", []))}
        except Exception as e:
            return {"error": str(e)}
"""


def iris_project(root, models_dir, poll="200ms"):
    return write_project(root, {
        "cortex.yaml": f"""
        - name: iris
          predictor:
            type: tensorflow
            path: predictor.py
            models:
              path: {models_dir}
              poll_interval: {poll}
        """,
        "predictor.py": IRIS_PREDICTOR})


def test_cortex_iris_predictor_runs_unchanged_and_sees_new_versions(serve, models, tmp_path):
    served_models = tmp_path / "served"
    shutil.copytree(models / "iris", served_models / "iris")
    shutil.rmtree(served_models / "iris" / "2")
    server = serve(iris_project(tmp_path / "project", served_models / "iris"))
    assert server.post("/iris", json=SETOSA).text == "setosa"
    assert server.post("/iris", json=VIRGINICA).text == "virginica"
    body = server.get("/iris").json()
    assert body["message"] == ("make a prediction by sending a post request to this endpoint "
                               "with a json payload")
    assert list(body["model_metadata"]) == ["_cortex_default-1"]
    assert body["model_metadata"]["_cortex_default-1"]["input_signatures"]["sepal_length"] == {
        "shape": [-1], "type": "float32"}

    response = server.post("/iris", json={"sepal_length": 5.1})
    assert response.status_code == 500
    error = server.wait_for_log(lambda line: line.get("levelname") == "ERROR")
    assert "missing key 'petal_length' for model '_cortex_default' of version '1'" in error["exc_info"]

    # a version dropped in while serving (written aside, then renamed in) becomes latest
    shutil.copytree(models / "iris" / "2", served_models / "iris" / ".incoming")
    os.rename(served_models / "iris" / ".incoming", served_models / "iris" / "2")
    deadline = time.monotonic() + 20
    while server.post("/iris", json=SETOSA).text != "virginica":
        assert time.monotonic() < deadline, server.stdout_text()
        time.sleep(0.1)
    assert server.post("/iris?version=1", json=SETOSA).text == "setosa"
    server.wait_for_log(lambda line: line.get("message", "").startswith(
        "loaded model '_cortex_default' of version '2'"))
    # and GET's model_metadata follows
    deadline = time.monotonic() + 20
    while list(server.get("/iris").json()["model_metadata"]) != ["_cortex_default-1", "_cortex_default-2"]:
        assert time.monotonic() < deadline, server.get("/iris").text
        time.sleep(0.1)


def add_version(models, served, version):
    """Drops iris version `version` into served (written aside, then renamed in)."""
    shutil.copytree(models / "iris" / version, served / f".incoming-{version}")
    os.rename(served / f".incoming-{version}", served / version)


def add_broken_version(served, version):
    (served / f".incoming-{version}").mkdir()
    (served / f".incoming-{version}" / "saved_model.pb").write_bytes(b"not a SavedModel")
    os.rename(served / f".incoming-{version}", served / version)


def logged(lines, start):
    return [line for line in lines if line.get("message", "").startswith(start)]


def test_polled_versions_are_logged_in_the_apis_own_logs(models, tmp_path):
    from cortex_runtime import testing
    served = tmp_path / "served" / "iris"
    shutil.copytree(models / "iris" / "1", served / "1")
    with testing.start_api(iris_project(tmp_path / "project", served, poll="100ms")) as api:
        assert api.post(json=SETOSA).text == "setosa"
        add_broken_version(served, "3")
        add_version(models, served, "2")
        deadline = time.monotonic() + 20
        start = "loaded model '_cortex_default' of version '2' from "
        while not logged(api.logs(), start):  # the polling thread's line, in this API's logs
            assert time.monotonic() < deadline, api.logs()
            time.sleep(0.1)
        assert api.post(json=SETOSA).text == "virginica"
        broken = logged(api.logs(), "cannot load model '_cortex_default' of version '3' from ")
        assert len(broken) == 1 and broken[0]["levelname"] == "WARNING"
        assert broken[0]["message"].endswith("(retrying every poll)")


def test_polled_versions_are_logged_at_the_apis_log_level(serve, models, tmp_path):
    served = tmp_path / "served" / "iris"
    shutil.copytree(models / "iris" / "1", served / "1")
    project = iris_project(tmp_path / "project", served, poll="100ms")
    yaml = (project / "cortex.yaml").read_text().replace(
        "type: tensorflow", "type: tensorflow\n    log_level: warning")
    (project / "cortex.yaml").write_text(yaml)
    server = serve(project)
    add_broken_version(served, "3")
    server.wait_for_log(lambda line: line.get("message", "").startswith(
        "cannot load model '_cortex_default' of version '3'"))
    add_version(models, served, "2")
    deadline = time.monotonic() + 20
    while server.post("/iris", json=SETOSA).text != "virginica":
        assert time.monotonic() < deadline, server.stdout_text()
        time.sleep(0.1)
    # the loaded line is INFO: below this API's level, so not written
    assert "loaded model" not in server.stdout_text()


def paths_yaml(models, threads=1):
    return f"""
    - name: probe
      predictor:
        type: tensorflow
        path: predictor.py
        threads_per_process: {threads}
        models:
          paths:
            - {{name: iris, path: {models / "iris"}}}
            - {{name: kinds, path: {models / "kinds"}, signature_key: serving_default}}
    """


PROBE_CALLS = [
    ({"input": SETOSA, "args": ["iris", "1"]}, {"result": {"class_ids": ["0"]}}),
    ({"input": SETOSA, "args": ["iris"]}, {"result": {"class_ids": ["2"]}}),
    ({"input": {"x": [0.5], "n": 3, "text": ["hi"]}, "args": ["kinds"]},
     {"result": {"int64": ["3", "6", str(2 ** 40)], "bytes": ["aGk="], "float": [0.05],
                 "bool": [True], "int32": [0], "ratio": ["Infinity"],
                 "matrix": [0.0, 1.0, 2.0, 3.0], "double": [0.5 / 3.0]}}),
    ({"input": SETOSA}, {"error": "model_name was not specified, choose one of the following: "
                                  "['iris', 'kinds']"}),
    ({"input": SETOSA, "args": ["rose"]},
     {"error": "'rose' model wasn't found in the list of available models"}),
    ({"input": SETOSA, "args": ["iris", "v1"]},
     {"error": "model_version must be either a parse-able numeric value or 'latest'"}),
    ({"input": {"sepal_length": 1}, "args": ["iris", "1"]},
     {"error": "missing key 'petal_length' for model 'iris' of version '1'"}),
]


def check_probe(server):
    for payload, expected in PROBE_CALLS:
        got = server.post("/probe", json=payload).json()
        if "result" in expected and "result" in got:
            got = {"result": {k: v for k, v in got["result"].items() if k in expected["result"]}}
        assert got == expected, payload


def test_paths_project_over_http_with_threads(serve, project, models):
    server = serve(project({"cortex.yaml": paths_yaml(models, threads=4),
                            "predictor.py": PROBE_PREDICTOR}))
    check_probe(server)
    metadata = server.get("/probe").json()["model_metadata"]
    assert sorted(metadata) == ["iris-1", "iris-2", "kinds-1"]
    payload = {"input": {k: [v] * 50 for k, v in SETOSA.items()}, "args": ["iris", "1"]}
    with futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: server.post("/probe", json=payload).json(), range(40)))
    assert all(a == {"result": {"class_ids": ["0"] * 50, "probabilities": a["result"]["probabilities"]}}
               for a in answers)


def test_startup_error_is_one_line_naming_the_api(project, models):
    path = project({"cortex.yaml": f"""
        - name: broken
          predictor:
            type: tensorflow
            path: predictor.py
            models: {{path: {models / "neither"}}}
        """, "predictor.py": PROBE_PREDICTOR})
    result = subprocess.run([sys.executable, "-m", "cortex_runtime", "serve", str(path),
                             "--port", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: api \"broken\": predictor.models: signature_key was not configured by user, "
        "please specify one the following keys 'a, b' for model '_cortex_default' of version "
        "'1' (found in the signature def map)")


# -------------------------------------------------------------------------------------------
# the remote backend, against a PredictionService in this process


def start_prediction_service(backend):
    grpc = pytest.importorskip("grpc")
    apis = pytest.importorskip("tensorflow_serving.apis")
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                         model_service_pb2_grpc, predict_pb2,
                                         prediction_service_pb2_grpc)
    del apis

    def entry_of(model_spec, context):
        versions = backend._table.get(model_spec.name)
        if versions is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {model_spec.name}")
        version = str(model_spec.version.value) if model_spec.HasField("version") else \
            max(versions, key=int)
        if version not in versions:
            context.abort(grpc.StatusCode.NOT_FOUND, f"version {version} not found")
        return versions[version]

    def tensor_info(info, name):
        proto = meta_graph_pb2.TensorInfo(name=f"{name}:0", dtype=info.dtype.as_datatype_enum)
        if info.shape is None:
            proto.tensor_shape.unknown_rank = True
        for size in info.shape or []:
            proto.tensor_shape.dim.add(size=size)
        return proto

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        def GetModelMetadata(self, request, context):
            entry = entry_of(request.model_spec, context)
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for key, function in entry.signatures.items():
                signature = tfc.function_signature(key, function)
                definition = signatures.signature_def[key]
                for name, info in signature.inputs.items():
                    definition.inputs[name].CopyFrom(tensor_info(info, name))
                for name, info in signature.outputs.items():
                    definition.outputs[name].CopyFrom(tensor_info(info, name))
            signatures.signature_def["__saved_model_init_op"].outputs["x"].name = "init"
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.CopyFrom(request.model_spec)
            response.metadata["signature_def"].Pack(signatures)
            return response

        def Predict(self, request, context):
            entry = entry_of(request.model_spec, context)
            function = entry.signatures[request.model_spec.signature_name or "serving_default"]
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            try:
                outputs = function(**inputs)
            except Exception as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e).splitlines()[0])
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    class Status(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            versions = backend._table.get(request.model_spec.name)
            if versions is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "Could not find any versions of model")
            response = get_model_status_pb2.GetModelStatusResponse()
            for version in versions:
                response.model_version_status.add(
                    version=int(version), state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
            return response

    server = grpc.server(futures.ThreadPoolExecutor(8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Status(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture(scope="module")
def prediction_service(models):
    """A stand-in for TensorFlow Serving with iris and kinds (TFS cannot be installed here)."""
    backend = tfc.LocalBackend(tfc.Models.from_mapping(
        {"paths": [{"name": "iris", "path": "iris"}, {"name": "kinds", "path": "kinds"},
                   {"name": "more-kinds", "path": "more-kinds"}],
         "poll_interval": 0}, str(models)))
    server, port = start_prediction_service(backend)
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_remote_backend_gives_the_same_answers(serve, project, models, prediction_service):
    server = serve(project({"cortex.yaml": paths_yaml(models), "predictor.py": PROBE_PREDICTOR}),
                   "--tfs-address", prediction_service)
    check_probe(server)
    metadata = server.get("/probe").json()["model_metadata"]
    assert sorted(metadata) == ["iris-1", "iris-2", "kinds-1"]
    assert metadata["iris-1"]["signature_key"] == "serving_default"
    assert metadata["kinds-1"]["input_signatures"]["n"] == {"shape": ["scalar"], "type": "int64"}


def test_remote_backend_path_model_is_named_by_its_folder(models, prediction_service):
    from cortex_runtime.tfs_remote import RemoteBackend
    mapping = tfc.Models.from_mapping({"path": "iris"}, str(models))
    client = tfc.TensorFlowClient(mapping, RemoteBackend(prediction_service, mapping))
    assert client.predict(SETOSA, model_version="1") == paths_probe(models, "iris", "1")
    assert error_of(lambda: client.predict({"sepal_length": 1.0}, model_version="1")) == (
        "missing key 'petal_length' for model 'iris' of version '1'")
    assert error_of(lambda: client.predict(SETOSA, model_version="9")) == (
        "model 'iris' of version '9' couldn't be found")


def test_remote_backend_gives_the_other_dtypes_alike(models, prediction_service):
    from cortex_runtime.tfs_remote import RemoteBackend
    mapping = tfc.Models.from_mapping({"path": "more-kinds"}, str(models))
    client = tfc.TensorFlowClient(mapping, RemoteBackend(prediction_service, mapping))
    assert client.predict(MORE_KINDS_INPUT) == MORE_KINDS_OUTPUT


def paths_probe(models, name, version):
    return local_client({"paths": [{"name": name, "path": name}], "poll_interval": 0},
                        models).predict(SETOSA, name, version)


def test_remote_backend_unreachable_or_unknown_model_is_a_startup_error(models, prediction_service):
    from cortex_runtime import tfs_remote
    mapping = tfc.Models.from_mapping({"paths": [{"name": "rose", "path": "iris"}]}, str(models))
    with pytest.raises(StartupError, match="has no available version of model 'rose'$"):
        tfs_remote.RemoteBackend(prediction_service, mapping)
    old = tfs_remote.CONNECT_TIMEOUT
    tfs_remote.CONNECT_TIMEOUT = 0.5
    try:
        with pytest.raises(StartupError, match=r"^--tfs-address: no TensorFlow Serving answered "
                                               r"at 127.0.0.1:1 "):
            tfs_remote.RemoteBackend("127.0.0.1:1", mapping)
    finally:
        tfs_remote.CONNECT_TIMEOUT = old


def test_float32_outputs_are_their_shortest_text_for_large_arrays_too():
    rng = np.random.RandomState(0)
    values = (rng.randn(4000) * 10.0 ** rng.randint(-44, 38, 4000)).astype(np.float32)
    values[:4] = [0.1, 0.0, 3.4e38, 1e-45]
    assert tfc.to_list(values) == [float(text) for text in values.astype(str)]
