"""Runs trained on users' own image folders, served by the real server (issue 9).

The runs are `own_image_runs` (tests/conftest.py), made by `training.fit`:
a CNN on 16x16 RGB JPEG folders with classes `bars` and `blobs`, and an MLP
on 8x8 PNGs without labels. The service reads size, channels, scaling and
class names from the run folder.
"""

import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rgb_server(own_image_runs):
    from serving.launch import BentoServer

    with BentoServer(own_image_runs["rgb"][1], env={"KERAS_BACKEND": "jax"}) as running:
        yield running


@pytest.fixture(scope="module")
def loose_server(own_image_runs):
    from serving.launch import BentoServer

    with BentoServer(own_image_runs["loose"][1], env={"KERAS_BACKEND": "jax"}) as running:
        yield running


def _reference(run, raw):
    """Latents, probabilities (None without labels) and clusters, in process."""
    import keras

    config = json.loads((run / "config.json").read_text())
    x = np.asarray(raw, np.float32).reshape((len(raw),) + tuple(config["input_shape"]))
    z = keras.saving.load_model(run / "encoder.keras").predict(
        x / config["pixel_max"] + config["offset"], verbose=0)
    p = None
    if (run / "classifier.keras").exists():
        p = keras.saving.load_model(run / "classifier.keras").predict(z, verbose=0)
    with np.load(run / "kmeans.npz") as f:
        centroids = f["centroids"].astype(np.float64)
    clusters = np.linalg.norm(z[:, None].astype(np.float64) - centroids[None], axis=-1).argmin(1)
    return z, p, clusters


def test_rgb_folder_run_classifies_json_and_jpeg_with_class_names(rgb_server, own_image_runs):
    folder, run, _ = own_image_runs["rgb"]
    files = sorted((folder / "test").rglob("*.jpg"))
    raw = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float64) for p in files])
    z, p, _ = _reference(run, raw)
    answer = requests.post(rgb_server.url + "/classify", json={"images": raw.tolist()},
                           timeout=30)
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    assert answer["labels"] == p.argmax(axis=1).tolist()
    assert answer["names"] == [["bars", "blobs"][i] for i in p.argmax(axis=1)]
    np.testing.assert_allclose(answer["probabilities"], p, atol=1e-5)
    upload = requests.post(rgb_server.url + "/classify_png", timeout=30, files={
        "image": (files[0].name, files[0].read_bytes(), "image/jpeg")})
    assert upload.status_code == 200, upload.text
    assert upload.json()["names"] == [answer["names"][0]]
    np.testing.assert_allclose(upload.json()["probabilities"], p[:1], atol=1e-5)
    encoded = requests.post(rgb_server.url + "/encode", json={"images": raw[:2].tolist()},
                            timeout=30).json()
    np.testing.assert_allclose(encoded["latents"], z[:2], atol=1e-4)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(buffer, "PNG")
    wrong = requests.post(rgb_server.url + "/encode_png", timeout=30, files={
        "image": ("small.png", buffer.getvalue(), "image/png")})
    assert wrong.status_code == 422 and "16x16 pixels" in wrong.json()["error"]


def test_unlabelled_folder_run_encodes_and_clusters_but_has_no_classify(loose_server,
                                                                        own_image_runs):
    folder, run, _ = own_image_runs["loose"]
    raw = np.stack([np.asarray(Image.open(p), np.float64) for p in sorted(folder.glob("*.png"))])
    z, _, clusters = _reference(run, raw[:10])
    response = requests.post(loose_server.url + "/cluster", json={"images": raw[:10].tolist()},
                             timeout=30)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"clusters", "distances"}
    assert response.json()["clusters"] == clusters.tolist()
    assert set(clusters.tolist()) <= set(range(4))
    latents = requests.post(loose_server.url + "/encode", json={"images": raw[:3].tolist()},
                            timeout=30).json()["latents"]
    np.testing.assert_allclose(latents, z[:3], atol=1e-4)
    refused = requests.post(loose_server.url + "/classify", json={"images": raw[:1].tolist()},
                            timeout=30)
    assert refused.status_code == 404
    assert "this run was trained without labels" in refused.json()["error"]
