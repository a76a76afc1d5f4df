"""The TensorFlow iris example through the real server (the `cortex_api` fixture, in this
process), on a model built in a temporary copy of the project:
`python -m pytest examples/tensorflow-iris`."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("sklearn")
if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("TensorFlow is not run under the AddressSanitizer preload", allow_module_level=True)

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of this project with its model built (models/iris/1)."""
    root = tmp_path_factory.mktemp("tensorflow-iris") / "project"
    shutil.copytree(HERE, root, ignore=shutil.ignore_patterns("models", "__pycache__"))
    subprocess.run([sys.executable, str(root / "build_model.py"), str(root / "models")],
                   check=True, capture_output=True, timeout=300)
    return root


def test_sample_is_setosa(cortex_api, project):
    api = cortex_api(project)
    response = api.post(json=json.loads((HERE / "sample.json").read_text()))
    assert response.status_code == 200 and response.text == "setosa"


def test_large_petals_are_virginica(cortex_api, project):
    api = cortex_api(project)
    assert api.post(json={"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1,
                          "petal_width": 2.3}).text == "virginica"


def test_get_describes_the_model(cortex_api, project):
    api = cortex_api(project)
    body = api.get().json()
    assert body["model_metadata"]["_cortex_default-1"]["input_signatures"]["petal_width"] == {
        "shape": [-1], "type": "float32"}
