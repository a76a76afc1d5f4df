import io
from pathlib import Path

import pytest

Image = pytest.importorskip("PIL.Image")

HERE = Path(__file__).parent


def png(width, height, color):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_bytes_give_its_size_and_colour(cortex_api):
    api = cortex_api(HERE)
    response = api.post(data=png(120, 80, (255, 0, 0)), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"format": "PNG", "width": 120, "height": 80, "mode": "RGB",
                               "mean_rgb": [255, 0, 0]}


def test_jpeg_without_content_type_is_bytes_too(cortex_api):
    api = cortex_api(HERE)
    buffer = io.BytesIO()
    Image.new("L", (10, 30), 128).save(buffer, format="JPEG")
    body = api.post(data=buffer.getvalue()).json()
    assert (body["format"], body["width"], body["height"], body["mode"]) == ("JPEG", 10, 30, "L")


def test_not_an_image_is_400(cortex_api):
    api = cortex_api(HERE)
    response = api.post(data=b"definitely not a PNG", headers={"Content-Type": "image/png"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("not an image")
