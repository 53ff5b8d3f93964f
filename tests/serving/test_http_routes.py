"""Every route of the real server against the same computation in process."""

import numpy as np
import pytest

from serving_helpers import png_bytes

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("layout", ["image_shape", "flat"])
def test_encode_matches_in_process(post, reference, digits_images, layout):
    raw, _ = digits_images
    images = raw if layout == "image_shape" else raw.reshape(len(raw), -1)
    response = post("/encode", json={"images": images.tolist()})
    assert response.status_code == 200, response.text
    latents = np.asarray(response.json()["latents"])
    expected = reference.latents(raw)
    assert latents.shape == expected.shape == (40, reference.config["latent_dim"])
    np.testing.assert_allclose(latents, expected, atol=1e-5)


def test_cluster_matches_in_process(post, reference, digits_images):
    raw, _ = digits_images
    response = post("/cluster", json={"images": raw.tolist()})
    assert response.status_code == 200, response.text
    answer = response.json()
    ids, labels, distances = reference.clusters(raw)
    assert answer["clusters"] == ids.tolist()
    assert answer["labels"] == labels.tolist()
    np.testing.assert_allclose(answer["distances"], distances, atol=1e-5)
    assert len(set(answer["clusters"])) > 1  # the comparison is not vacuous


def test_classify_matches_in_process(post, reference, digits_images):
    raw, _ = digits_images
    response = post("/classify", json={"images": raw.tolist()})
    assert response.status_code == 200, response.text
    answer = response.json()
    probabilities = reference.probabilities(raw)
    assert answer["labels"] == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-5)
    np.testing.assert_allclose(np.sum(answer["probabilities"], axis=1), 1.0, atol=1e-5)
    assert answer["names"] == [reference.config["class_names"][i] for i in answer["labels"]]


def test_single_image_batch_and_max_batch(post, reference, digits_images):
    """A batch of one, and a batch exactly at the limit (64 in the test server)."""
    raw, _ = digits_images
    one = post("/encode", json={"images": raw[:1].tolist()})
    assert one.status_code == 200
    np.testing.assert_allclose(one.json()["latents"], reference.latents(raw[:1]), atol=1e-5)
    full = np.concatenate([raw, raw[:24]])
    assert len(full) == 64
    response = post("/classify", json={"images": full.tolist()})
    assert response.status_code == 200
    assert response.json()["labels"] == reference.probabilities(full).argmax(axis=1).tolist()


@pytest.mark.parametrize("route", ["/encode_png", "/cluster_png", "/classify_png"])
def test_png_routes_match_in_process(post, reference, digits_images, route):
    raw, _ = digits_images
    pixels = np.round(raw[3] * 255 / 16).astype(np.uint8)  # the PNG holds 0-255
    as_dataset = pixels[None].astype(np.float64) / 255 * 16  # what the service decodes
    response = post(route, files={"image": ("digit.png", png_bytes(pixels), "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    if route == "/encode_png":
        np.testing.assert_allclose(answer["latents"], reference.latents(as_dataset), atol=1e-5)
    elif route == "/cluster_png":
        ids, labels, distances = reference.clusters(as_dataset)
        assert (answer["clusters"], answer["labels"]) == (ids.tolist(), labels.tolist())
        np.testing.assert_allclose(answer["distances"], distances, atol=1e-5)
    else:
        probabilities = reference.probabilities(as_dataset)
        assert answer["labels"] == probabilities.argmax(axis=1).tolist()
        np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-5)


def test_health_readiness_and_openapi(server):
    import requests

    for path in ("/healthz", "/livez", "/readyz"):
        assert requests.get(server.url + path, timeout=10).status_code == 200
    index = requests.get(server.url + "/", timeout=10)
    assert index.status_code == 200 and "html" in index.headers["content-type"]
    spec = requests.get(server.url + "/docs.json", timeout=10).json()
    routes = {"/encode", "/cluster", "/classify", "/encode_png", "/cluster_png", "/classify_png"}
    assert routes <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/encode_png"]["post"]["requestBody"]["content"]
    assert "application/json" in spec["paths"]["/encode"]["post"]["requestBody"]["content"]
    # The example follows the served run (8x8 digits), and "Try it out" with it works.
    schema = spec["paths"]["/encode"]["post"]["requestBody"]["content"]["application/json"]
    images = schema["schema"]["properties"]["images"]
    assert np.asarray(images["example"]).shape == (1, 8, 8)
    tried = requests.post(server.url + "/encode", json={"images": images["example"]}, timeout=30)
    assert tried.status_code == 200 and len(tried.json()["latents"]) == 1
