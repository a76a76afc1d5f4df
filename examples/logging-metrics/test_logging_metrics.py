from pathlib import Path

HERE = Path(__file__).parent


def test_logs_carry_extra_fields_and_the_request_id(cortex_api):
    api = cortex_api(HERE)
    response = api.post(json={"text": "a great and excellent day"}, headers={"X-Request-ID": "req-1"})
    assert response.json() == {"label": "positive", "score": 2}
    logs = api.logs()
    loaded = next(line for line in logs if line["message"] == "vocabulary loaded")
    assert loaded["words"] == 8 and loaded["levelname"] == "INFO"
    scored = next(line for line in logs if line["message"] == "scored")
    assert scored["levelname"] == "DEBUG" and scored["request_id"] == "req-1" and scored["score"] == 2
    access = next(line for line in logs if line.get("path") == "/sentiment")
    assert access["status_code"] == "200 OK" and access["request_id"] == "req-1"


def test_log_level_can_be_raised_for_a_test(cortex_api):
    api = cortex_api(HERE, log_level="info")
    api.post(json={"text": "meh"})
    assert not [line for line in api.logs() if line["levelname"] == "DEBUG"]


def test_custom_and_builtin_metrics(cortex_api):
    api = cortex_api(HERE)
    for text in ["love it", "hate it", "good good", "fine"]:
        assert api.post(json={"text": text}).status_code == 200
    assert api.metric("predictions_total", label="positive") == 2
    assert api.metric("predictions_total", label="negative") == 1
    assert api.metric("predictions_total", label="neutral") == 1
    assert api.metric("last_text_words") == 1
    assert api.metric("scoring_ms_count") == 4
    assert api.metric("cortex_status_code", response_code="2XX") == 4
    assert api.metric("cortex_latency_count") == 4
    assert api.metric("predictions_total", label="no-such-label") is None
