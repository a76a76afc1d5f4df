"""The AsyncAPI example through the real server: `python -m pytest examples/async-text`."""
from pathlib import Path

HERE = Path(__file__).parent
TEXT = "The cat sat. The cat ran! A dog sat too?"


def test_text_is_counted_in_the_background(cortex_api):
    api = cortex_api(HERE)
    response = api.post(data=TEXT, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    workload_id = response.json()["id"]
    assert api.get(workload_id).json()["status"] in ("in_queue", "in_progress", "completed")
    done = api.wait(workload_id, timeout=10)  # polls GET /text-stats/<id>
    assert done["status"] == "completed" and done["id"] == workload_id
    assert done["result"] == {"words": 10, "distinct": 7, "sentences": 3,
                              "top": [["the", 2], ["cat", 2], ["sat", 2]]}
    assert done["timestamp"].endswith("Z")


def test_json_payload_and_config_override(cortex_api):
    api = cortex_api(HERE, config={"top": 1})
    workload_id = api.submit(json={"text": "to be or not to be"})
    assert api.wait(workload_id)["result"]["top"] == [["to", 2]]


def test_unknown_id_is_404(cortex_api):
    api = cortex_api(HERE)
    assert api.get("0b5b3a4e-2d25-4c43-9d1c-6c8f1f1f1f1f").status_code == 404


def test_empty_text_fails_and_the_log_says_why(cortex_api):
    api = cortex_api(HERE)
    workload_id = api.submit(json={"text": "  "})
    assert api.wait(workload_id) == {"id": workload_id, "status": "failed"}
    errors = [line for line in api.logs() if line["levelname"] == "ERROR"]
    assert "send some text" in errors[0]["message"]
    assert errors[0]["request_id"] == workload_id
