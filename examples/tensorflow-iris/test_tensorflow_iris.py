"""The TensorFlow iris example through the real server, on a model built in a temporary copy
of the project: `python -m pytest examples/tensorflow-iris`."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("sklearn")
if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("TensorFlow is not run under the AddressSanitizer preload", allow_module_level=True)

HERE = Path(__file__).parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorflow-iris") / "project"
    shutil.copytree(HERE, root, ignore=shutil.ignore_patterns("models", "__pycache__"))
    subprocess.run([sys.executable, str(root / "build_model.py"), str(root / "models")],
                   check=True, capture_output=True, timeout=300)
    port = free_port()
    log = open(root.parent / "serve.out", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "cortex_runtime", "serve", str(root),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while b'"listening"' not in (root.parent / "serve.out").read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, \
            (root.parent / "serve.out").read_text()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/iris-tf"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def post(url, payload):
    request = urllib.request.Request(url, json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def test_sample_is_setosa(server):
    assert post(server, json.loads((HERE / "sample.json").read_text())) == "setosa"


def test_large_petals_are_virginica(server):
    assert post(server, {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1,
                         "petal_width": 2.3}) == "virginica"


def test_get_describes_the_model(server):
    with urllib.request.urlopen(server, timeout=30) as response:
        body = json.loads(response.read())
    assert body["model_metadata"]["_cortex_default-1"]["input_signatures"]["petal_width"] == {
        "shape": [-1], "type": "float32"}
