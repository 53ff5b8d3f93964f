"""`/reconstruct` and the `/ui` page's files on the real server (the digits run folder)."""

import math

import numpy as np
import pytest
import requests

from serving_helpers import TEST_MAX_BATCH

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def autoencoder_reference(digits_run):
    """Raw images -> the run's autoencoder reconstruction in raw pixels, in process."""
    import json

    import keras

    # Registers the Autoencoder's layers, even if softvq_keras came before Keras.
    from softvq_keras import Autoencoder, make_bottleneck  # noqa: F401
    from softvq_keras.data import preprocess

    config = json.loads((digits_run / "config.json").read_text())
    model = keras.saving.load_model(digits_run / "autoencoder.keras", safe_mode=True)

    def reconstruct(raw):
        x = preprocess(config["dataset"], raw)
        out = keras.ops.convert_to_numpy(model(x, training=False)["reconstruction"])
        raw_out = (out - config["offset"]) * config["pixel_max"]
        return np.clip(raw_out, 0, config["pixel_max"])

    return reconstruct


def test_reconstruct_equals_the_autoencoder_in_the_raw_range(post, digits_images,
                                                             autoencoder_reference):
    raw, _ = digits_images
    expected = autoencoder_reference(raw).reshape(len(raw), 8, 8)
    response = post("/reconstruct", json={"images": raw.tolist()})
    assert response.status_code == 200, response.text
    images = np.asarray(response.json()["images"])
    assert images.shape == (40, 8, 8)  # shaped like the input
    np.testing.assert_allclose(images, expected, atol=1e-4)
    assert images.min() >= 0 and images.max() <= 16 and images.max() > 1  # raw 0-16 range


def test_reconstruct_keeps_the_flat_layout(post, digits_images, autoencoder_reference):
    raw, _ = digits_images
    flat = raw[:3].reshape(3, 64)
    response = post("/reconstruct", json={"images": flat.tolist()})
    assert response.status_code == 200, response.text
    images = np.asarray(response.json()["images"])
    assert images.shape == (3, 64)
    np.testing.assert_allclose(images, autoencoder_reference(raw[:3]).reshape(3, 64), atol=1e-4)


@pytest.mark.parametrize("kwargs, status, message", [
    ({"json": {"images": [[1, 2]]}}, 422, "wrong image shape"),
    ({"json": {"images": []}}, 422, "empty"),
    ({"json": {"images": [[[17] * 8] * 8]}}, 422, "0 to 16"),
    ({"json": {"images": [[["a"] * 8] * 8]}}, 422, ""),
    ({"json": {"images": [[[0] * 8] * 8] * (TEST_MAX_BATCH + 1)}}, 422, str(TEST_MAX_BATCH)),
    ({"json": {"pictures": []}}, 400, "images"),
    ({"data": b'{"images": [[1, 2]', "headers": {"Content-Type": "application/json"}}, 400,
     "malformed JSON request body"),
    ({"files": {"image": ("d.png", b"\x89PNG", "image/png")}}, 415,
     "unsupported Content-Type multipart/form-data for /reconstruct"),
    ({"data": {"images": "1"}}, 415, "application/x-www-form-urlencoded"),
])
def test_reconstruct_refuses_bad_input_like_the_other_routes(post, kwargs, status, message):
    response = post("/reconstruct", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error
    assert "expected" in error and "_png" not in error  # no /reconstruct_png to point to
    assert "Traceback" not in response.text


def test_ui_page_and_its_run_description(server, digits_run):
    import json

    redirect = requests.get(server.url + "/ui", timeout=10, allow_redirects=False)
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/ui/")
    page = requests.get(server.url + "/ui/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('<canvas id="pad"', 'id="image" type="file"', 'id="prediction"',
                    'id="probabilities"', 'id="cluster"', 'id="reconstruction"', 'id="error"'):
        assert element in page.text
    for name, kind in (("app.js", "javascript"), ("pixels.js", "javascript"),
                       ("style.css", "text/css")):
        asset = requests.get(server.url + "/ui/" + name, timeout=10)
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert "http" not in page.text.replace('href="../"', "")  # no CDN, nothing external
    info = requests.get(server.url + "/ui/config.json", timeout=10).json()
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert info["source"] == f"run folder {digits_run.name}"
    assert (info["height"], info["width"], info["channels"]) == (8, 8, 1)
    assert info["pixel_max"] == 16 and info["labelled"] is True
    assert info["class_names"] == [str(i) for i in range(10)]
    assert info["reconstruct"] is True and info["api_key_required"] is False
    assert math.isclose(info["metrics"]["clustering_accuracy"], metrics["clustering_accuracy"])
    assert requests.get(server.url + "/ui/nothing.js", timeout=10).status_code == 404
