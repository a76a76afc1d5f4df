from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

HERE = Path(__file__).parent
WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25])


def test_one_request_is_a_batch_of_one(cortex_api):
    api = cortex_api(HERE)
    response = api.post(json={"features": [1, 2, 3, 4]})
    assert response.status_code == 200
    assert response.json() == {"score": pytest.approx(1 * 0.5 - 2 + 6 + 1 + 0.1), "batch_size": 1}


def test_concurrent_requests_are_scored_together_and_answered_in_order(cortex_api):
    api = cortex_api(HERE)
    rows = [[i, i + 1, i + 2, i + 3] for i in range(8)]
    with ThreadPoolExecutor(len(rows)) as pool:
        answers = list(pool.map(lambda row: api.post(json={"features": row}).json(), rows))
    for row, answer in zip(rows, answers):
        assert answer["score"] == pytest.approx(float(np.dot(row, WEIGHTS) + 0.1))
    assert max(answer["batch_size"] for answer in answers) > 1
    batches = [line["batch_size"] for line in api.logs() if line["message"] == "scored a batch"]
    assert sum(batches) == len(rows)


def test_a_bad_item_fails_its_whole_batch_with_500(cortex_api):
    api = cortex_api(HERE)
    response = api.post(json={"no_features": True})
    assert response.status_code == 500
