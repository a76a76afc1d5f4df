from pathlib import Path

HERE = Path(__file__).parent
TEXT = "Cortex served predictors.  This runtime serves them too!\nOn one machine? Yes. Fast."


def test_first_two_sentences_come_back_as_text(cortex_api):
    api = cortex_api(HERE)
    response = api.post(data=TEXT, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == "Cortex served predictors. This runtime serves them too!"


def test_query_param_and_config_override_choose_the_length(cortex_api):
    api = cortex_api(HERE, config={"sentences": 1})
    assert api.post(data=TEXT, headers={"Content-Type": "text/plain"}).text == \
        "Cortex served predictors."
    response = api.post(data=TEXT, headers={"Content-Type": "text/plain"},
                        params={"sentences": 3})
    assert response.text.endswith("On one machine?")


def test_charset_is_honoured(cortex_api):
    api = cortex_api(HERE)
    body = "Café crème. Très bien.".encode("latin-1")
    response = api.post(data=body, headers={"Content-Type": "text/plain; charset=latin-1"})
    assert response.text == "Café crème. Très bien."


def test_invalid_utf8_is_400(cortex_api):
    api = cortex_api(HERE)
    response = api.post(data=b"\xff\xfe oops", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
