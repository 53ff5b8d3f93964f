"""Runs of other kinds on the real server (docs/ARTIFACTS.md, issue 9), and API keys.

- a run trained without labels: the digits run with its classifier removed
  and `"labelled": false` (as training writes it for unlabelled data);
- a user's colour run: a tiny encoder on 12x10 RGB images (height 12, width
  10, so that a swapped width and height would show), three named classes,
  and the plain autoencoder (`ae`, no quantizer) of softvq_keras, served with
  API keys from a key file.

Plus: a key setting that cannot be used stops `bentoml serve` with one line.
"""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from serving_helpers import CLASS_NAMES, KEYS, RGB_SHAPE, png_bytes

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def unlabelled_run(digits_run, tmp_path_factory):
    """The digits run as an unlabelled run: no classifier.keras, no cluster_to_label.

    Nor autoencoder.keras, as in run folders packed before /reconstruct existed.
    """
    run = tmp_path_factory.mktemp("unlabelled") / "run"
    shutil.copytree(digits_run, run)
    (run / "classifier.keras").unlink()
    (run / "autoencoder.keras").unlink()
    with np.load(run / "kmeans.npz") as f:
        centroids = f["centroids"]
    np.savez(run / "kmeans.npz", centroids=centroids)
    config = json.loads((run / "config.json").read_text())
    config.update(labelled=False, num_classes=None, class_names=None,
                  clusters=len(centroids), dataset="my_photos/", dataset_kind="folder")
    (run / "config.json").write_text(json.dumps(config))
    return run


def _server(run, tmp_path_factory, **env):
    from serving.launch import BentoServer

    return BentoServer(run, env={"KERAS_BACKEND": "jax", **env})


@pytest.fixture(scope="module")
def unlabelled_server(unlabelled_run, tmp_path_factory):
    with _server(unlabelled_run, tmp_path_factory) as running:
        yield running


def _rgb_reference(rgb_run, raw):
    import keras

    encoder = keras.saving.load_model(rgb_run / "encoder.keras")
    classifier = keras.saving.load_model(rgb_run / "classifier.keras")
    z = encoder.predict(np.asarray(raw, np.float32) / 255.0 - 0.5, verbose=0)
    return z, classifier.predict(z, verbose=0)


AUTH = {"Authorization": f"Bearer {KEYS[1]}"}


def test_unlabelled_run_has_no_classify_and_clusters_without_labels(unlabelled_server,
                                                                    reference, digits_images):
    raw, _ = digits_images
    url = unlabelled_server.url
    for route, kwargs in [("/classify", {"json": {"images": raw[:2].tolist()}}),
                          ("/classify_png", {"files": {"image": (
                              "d.png", png_bytes(np.zeros((8, 8))), "image/png")}})]:
        response = requests.post(url + route, timeout=30, **kwargs)
        assert response.status_code == 404, response.text
        assert "this run was trained without labels" in response.json()["error"]
    response = requests.post(url + "/cluster", json={"images": raw.tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"clusters", "distances"}
    ids, _, distances = reference.clusters(raw)  # same encoder and centroids
    assert answer["clusters"] == ids.tolist()
    np.testing.assert_allclose(answer["distances"], distances, atol=1e-5)
    response = requests.post(url + "/encode", json={"images": raw[:3].tolist()}, timeout=30)
    np.testing.assert_allclose(response.json()["latents"], reference.latents(raw[:3]), atol=1e-5)
    response = requests.post(url + "/reconstruct", json={"images": raw[:1].tolist()}, timeout=30)
    assert response.status_code == 404
    assert "served without autoencoder.keras" in response.json()["error"]
    for route, body in (("/codes", {"images": raw[:1].tolist()}), ("/decode", {"indices": [0]})):
        response = requests.post(url + route, json=body, timeout=30)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == (
            "no autoencoder: this run was served without autoencoder.keras, so /codes and "
            "/decode are not available (store or pack the whole run folder)")
    info = requests.get(url + "/ui/config.json", timeout=10).json()
    assert info["labelled"] is False and info["class_names"] is None
    assert info["reconstruct"] is False and info["clusters"] == 10


def test_rgb_run_json_images_of_its_shape_and_class_names(rgb_server, rgb_run):
    raw = np.random.default_rng(3).integers(0, 256, size=(5,) + RGB_SHAPE).astype(np.float64)
    z, p = _rgb_reference(rgb_run, raw)
    for images in (raw, raw.reshape(5, -1)):
        response = requests.post(rgb_server.url + "/encode", json={"images": images.tolist()},
                                 headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["latents"], z, atol=1e-5)
    answer = requests.post(rgb_server.url + "/classify", json={"images": raw.tolist()},
                           headers=AUTH, timeout=30).json()
    assert answer["labels"] == p.argmax(axis=1).tolist()
    assert answer["names"] == [CLASS_NAMES[i] for i in p.argmax(axis=1)]
    np.testing.assert_allclose(answer["probabilities"], p, atol=1e-5)
    wrong = requests.post(rgb_server.url + "/encode", json={"images": [[[0] * 10] * 12]},
                          headers=AUTH, timeout=30)
    assert wrong.status_code == 422
    assert "each an array shaped [12, 10, 3] or [360]" in wrong.json()["error"]


def _encoded(array, mode, fmt, **options):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_rgb_run_png_and_jpeg_uploads(rgb_server, rgb_run):
    from PIL import Image

    pixels = np.random.default_rng(4).integers(0, 256, size=RGB_SHAPE)
    grey = np.random.default_rng(5).integers(0, 256, size=RGB_SHAPE[:2])
    jpeg = _encoded(pixels, "RGB", "JPEG", quality=90)
    cases = [
        (_encoded(pixels, "RGB", "PNG"), pixels),
        (_encoded(np.dstack([pixels, np.full(RGB_SHAPE[:2], 7)]), "RGBA", "PNG"), pixels),
        (_encoded(grey, "L", "PNG"), np.repeat(grey[..., None], 3, axis=-1)),
        (jpeg, np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))),
    ]
    for data, expected_raw in cases:
        z, p = _rgb_reference(rgb_run, expected_raw[None])
        response = requests.post(rgb_server.url + "/classify_png", headers=AUTH, timeout=30,
                                 files={"image": ("photo", data, "application/octet-stream")})
        assert response.status_code == 200, response.text
        answer = response.json()
        np.testing.assert_allclose(answer["probabilities"], p, atol=1e-5)
        assert answer["names"] == [CLASS_NAMES[int(p.argmax())]]
    response = requests.post(rgb_server.url + "/encode_png", headers=AUTH, timeout=30, files={
        "image": ("x.png", _encoded(np.zeros((10, 12, 3)), "RGB", "PNG"), "image/png")})
    assert response.status_code == 422
    assert ("the PNG is 12x10 pixels: expected one 8-bit PNG or JPEG image of 10x12 pixels "
            "(RGB") in response.json()["error"]


def test_api_keys_on_the_real_server(rgb_server):
    url = rgb_server.url
    body = {"images": [np.zeros(RGB_SHAPE).tolist()]}
    missing = requests.post(url + "/encode", json=body, timeout=30)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "missing API key" in missing.json()["error"]
    assert "'Authorization: Bearer <key>'" in missing.json()["error"]
    wrong = requests.post(url + "/encode", json=body, timeout=30,
                          headers={"Authorization": "Bearer guessed-key-123"})
    assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]
    for key in KEYS:
        ok = requests.post(url + "/encode", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and len(ok.json()["latents"]) == 1
    png = requests.post(url + "/encode_png", timeout=30, files={
        "image": ("x.png", b"\x89PNG", "image/png")})
    assert png.status_code == 401  # refused before the body is looked at
    for path in ("/livez", "/readyz", "/healthz", "/docs.json", "/schema.json"):
        assert requests.get(url + path, timeout=10).status_code == 200, path
    assert requests.get(url + "/metrics", timeout=10).status_code == 401
    assert requests.get(url + "/metrics", headers=AUTH, timeout=10).status_code == 200
    assert requests.get(url + "/ui", timeout=10).status_code != 401  # the page asks for it
    assert requests.get(url + "/ui/", timeout=10).status_code == 200
    info = requests.get(url + "/ui/config.json", timeout=10).json()
    assert info["api_key_required"] is True and info["class_names"] == CLASS_NAMES
    assert (info["height"], info["width"], info["channels"]) == (12, 10, 3)
    assert requests.post(url + "/reconstruct", json=body, timeout=30).status_code == 401
    reconstructed = requests.post(url + "/reconstruct", json=body, headers=AUTH, timeout=30)
    assert reconstructed.status_code == 200, reconstructed.text
    assert np.asarray(reconstructed.json()["images"]).shape == (1,) + RGB_SHAPE
    for route, request in (("/codes", body), ("/decode", {"indices": [0]})):
        assert requests.post(url + route, json=request, timeout=30).status_code == 401
        response = requests.post(url + route, json=request, headers=AUTH, timeout=30)
        assert response.status_code == 404, response.text  # an ae run has no codes
        assert response.json()["error"] == (
            "no quantizer: this run's bottleneck (ae, IdentityBottleneck) has no discrete "
            "codes, so /codes and /decode are not available; they serve the quantizer runs "
            "(vq, softvq, fsq, lfq, rvq)")
    log = rgb_server.log(tail=10**7)
    assert "API keys: on, 2 key(s)" in log
    for secret in (*KEYS, "guessed-key-123"):
        assert secret not in log


def test_unusable_key_settings_stop_the_server_with_one_line(digits_run, tmp_path):
    empty = tmp_path / "keys"
    empty.write_text("\n")
    for env, message in [({"SOFTVQ_API_KEYS": ""}, "SOFTVQ_API_KEYS is set but empty"),
                         ({"SOFTVQ_API_KEYS_FILE": str(empty)}, "holds no key")]:
        proc = subprocess.run(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:SoftVQService",
             "--port", "1"],
            env={**os.environ, "SOFTVQ_RUN_DIR": str(digits_run),
                 "BENTOML_HOME": str(tmp_path / "home"), **env},
            capture_output=True, text=True, timeout=120,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("softvq: refusing to start: "), lines
        assert message in lines[0] and "Traceback" not in proc.stderr
