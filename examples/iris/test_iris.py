"""The iris example through the real server: run with `python -m pytest examples/iris`."""
import json
from pathlib import Path

HERE = Path(__file__).parent


def test_sample_is_setosa(cortex_api):
    api = cortex_api(HERE)
    sample = json.loads((HERE / "sample.json").read_text())
    response = api.post(json=sample)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "setosa"


def test_large_petals_are_virginica(cortex_api):
    api = cortex_api(HERE)
    response = api.post(json={"sepal_length": 7.7, "sepal_width": 3.0,
                              "petal_length": 6.1, "petal_width": 2.3})
    assert response.text == "virginica"


def test_missing_feature_is_500_and_logged(cortex_api):
    api = cortex_api(HERE)
    response = api.post(json={"sepal_length": 5.2})
    assert response.status_code == 500
    errors = [line for line in api.logs() if line["levelname"] == "ERROR"]
    assert "payload is missing sepal_width" in errors[0]["exc_info"]
    assert errors[0]["request_id"] == response.headers["X-Request-ID"]
