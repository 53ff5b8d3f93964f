"""`/codes` and `/decode` on the real server, over HTTP and through BentoML's client.

- the session's digits soft VQ run (`server`): `/codes` answers the most
  probable code of each image, `/decode` the decoder's image of that codeword
  (not `/reconstruct`'s: soft VQ's autoencoder decodes the posterior mean);
- a tiny residual VQ run made by the training CLI (`hard_run`): the round trip
  `/codes` then `/decode` equals `/reconstruct`, and per-stage indices.

Runs without a quantizer (404) are served in test_http_run_kinds.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from serving_helpers import TEST_MAX_BATCH

pytestmark = pytest.mark.slow

#: The hard quantizer run: one epoch (24 steps) of `digits rvq`, 2 stages of 8 codes;
#: EMA codebooks with dead-code replacement, so that the codes differ between images.
HARD_MODEL = ["rvq", "--num-quantizers", "2", "--codebook-size", "8", "--codebook-update",
              "ema", "--dead-code-threshold", "1"]
DECODER_LAYERS = ("decoder_dense_0", "decoder_dense_1", "decoder_dense_2", "decoder_output")


def _autoencoder(run):
    import keras

    import softvq_keras  # noqa: F401 - registers the layers

    return keras.saving.load_model(run / "autoencoder.keras", safe_mode=True)


def _scaled(run, raw):
    config = json.loads((run / "config.json").read_text())
    flat = np.asarray(raw, np.float32).reshape(len(raw), -1)
    return flat / np.float32(config["pixel_max"]) + np.float32(config["offset"]), config


@pytest.fixture(scope="module")
def hard_run(tmp_path_factory):
    """A finished `digits rvq` run folder made by the training CLI (one epoch)."""
    out = tmp_path_factory.mktemp("codes-run") / "digits-rvq"
    proc = subprocess.run(
        [sys.executable, "-m", "training.fit", "digits", *HARD_MODEL, "--epochs", "1",
         "--kmeans-init", "1", "--probe-epochs", "1", "--skip-raw", "--verbose", "0",
         "--out", str(out)],
        cwd=str(Path(__file__).resolve().parents[2]), capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if proc.returncode != 0:
        pytest.fail(f"python -m training.fit failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return out


@pytest.fixture(scope="module")
def hard_server(hard_run):
    from serving.launch import BentoServer

    with BentoServer(hard_run, env={"KERAS_BACKEND": "jax",
                                    "SOFTVQ_MAX_BATCH": str(TEST_MAX_BATCH)}) as running:
        yield running


def _json(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def test_softvq_codes_are_its_most_probable_codes(post, digits_run, digits_images):
    raw, _ = digits_images
    x, config = _scaled(digits_run, raw)
    out = _autoencoder(digits_run)(x, training=False)
    expected = np.argmax(np.asarray(out["code_probs"]), axis=1)
    for images in (raw, raw.reshape(len(raw), 64)):  # both layouts, as /encode
        answer = _json(post("/codes", json={"images": images.tolist()}))
        assert answer["indices"] == expected.tolist()
        assert answer["codes_per_stage"] == [config["bottleneck"]["num_codes"]] == [32]


def test_softvq_decode_gives_the_decoder_image_of_the_codewords(post, digits_run,
                                                                digits_images):
    raw, _ = digits_images
    indices = _json(post("/codes", json={"images": raw.tolist()}))["indices"]
    model = _autoencoder(digits_run)
    _, config = _scaled(digits_run, raw[:1])
    h = np.asarray(model.get_layer("bottleneck").codebook)[indices]  # e_k, not the posterior mean
    for name in DECODER_LAYERS:
        h = model.get_layer(name)(h)
    expected = np.clip((np.asarray(h) - config["offset"]) * config["pixel_max"], 0, 16)
    images = np.asarray(_json(post("/decode", json={"indices": indices}))["images"])
    assert images.shape == (40, 8, 8)  # one stored example's shape
    np.testing.assert_allclose(images, expected.reshape(40, 8, 8), atol=1e-4)


@pytest.mark.parametrize("body, status, message", [
    ({"indices": [0, 32]}, 422, "indices[1] is 32: this run's softvq has 32 codes, so its "
                                "indices go from 0 to 31"),
    ({"indices": [-1]}, 422, "indices[0] is -1"),
    ({"indices": [[1, 2]]}, 422, "wrong indices shape: got array [1, 2], this run's softvq "
                                 "takes [N]"),
    ({"indices": [2.5]}, 422, "indices[0] is 2.5, not an integer"),
    ({"indices": ["3"]}, 422, "indices[0] is a string"),
    ({"indices": []}, 422, '"indices" is empty'),
    ({"indices": [0] * (TEST_MAX_BATCH + 1)}, 422, f"the limit is {TEST_MAX_BATCH}"),
    ({"codes": [0]}, 400, "malformed JSON request body (indices: Field required)"),
])
def test_decode_refuses_bad_indices_with_the_allowed_range(post, body, status, message):
    error = _json(post("/decode", json=body), status)["error"]
    assert message in error
    assert error.endswith("holding the code indices of 1 to 64 images, one integer from 0 to "
                          "31 per image, as /codes answers")


def test_codes_refuses_bad_images_like_encode(post):
    for body, message in [({"images": [[1, 2]]}, "wrong image shape"),
                          ({"images": [[[17] * 8] * 8]}, "0 to 16")]:
        error = _json(post("/codes", json=body), 422)["error"]
        assert message in error and error == _json(post("/encode", json=body), 422)["error"]


def test_bentoml_client_calls_codes_and_decode(server, post, digits_images):
    import bentoml
    from bentoml.exceptions import BentoMLException

    raw, _ = digits_images
    by_http = _json(post("/codes", json={"images": raw[:5].tolist()}))
    with bentoml.SyncHTTPClient(server.url) as client:
        for images in (raw[:5].tolist(), raw[:5].reshape(5, 64).tolist()):
            assert client.codes(images=images) == by_http
            latents = client.encode(images=images)["latents"]  # every layout, as the route
            assert np.asarray(latents).shape == (5, 16)
        decoded = client.decode(indices=by_http["indices"])
        np.testing.assert_allclose(decoded["images"], _json(post("/decode", json={
            "indices": by_http["indices"]}))["images"], atol=0)
        with pytest.raises(BentoMLException) as caught:
            client.decode(indices=[99])
    assert caught.value.error_code == 422
    assert "indices[0] is 99: this run's softvq has 32 codes" in str(caught.value)
    schema = requests.get(server.url + "/schema.json", timeout=10).json()
    routes = {r["route"]: r["input"]["properties"] for r in schema["routes"]}
    assert routes["/decode"]["indices"]["items"] == {"type": "integer", "minimum": 0,
                                                     "maximum": 31}
    spec = requests.get(server.url + "/docs.json", timeout=10).json()
    assert {"/codes", "/decode"} <= set(spec["paths"])


def test_hard_quantizer_round_trip_equals_reconstruct(hard_server, hard_run, digits_images):
    raw, _ = digits_images
    url = hard_server.url
    answer = _json(requests.post(url + "/codes", json={"images": raw.tolist()}, timeout=30))
    indices = np.asarray(answer["indices"])
    assert answer["codes_per_stage"] == [8, 8]
    assert indices.shape == (40, 2) and indices.min() >= 0 and indices.max() < 8
    x, _ = _scaled(hard_run, raw)
    expected = np.asarray(_autoencoder(hard_run)(x, training=False)["indices"])
    np.testing.assert_array_equal(indices, expected)
    assert len({tuple(row) for row in indices.tolist()}) > 1  # several codes: a real check
    decoded = _json(requests.post(url + "/decode", json={"indices": indices.tolist()},
                                  timeout=30))["images"]
    reconstructed = _json(requests.post(url + "/reconstruct", json={"images": raw.tolist()},
                                        timeout=30))["images"]
    np.testing.assert_allclose(decoded, reconstructed, atol=1e-4)
    bad = _json(requests.post(url + "/decode", json={"indices": [[0, 8]]}, timeout=30), 422)
    assert bad["error"].startswith("indices[0][1] is 8: stage 2 of this run's rvq has 8 codes, "
                                   "so its indices go from 0 to 7")
    bad = _json(requests.post(url + "/decode", json={"indices": [3]}, timeout=30), 422)
    assert "wrong indices shape: got array [1], this run's rvq takes [N, 2]" in bad["error"]

    import bentoml

    with bentoml.SyncHTTPClient(url) as client:
        assert client.codes(images=raw[:3].tolist())["indices"] == indices[:3].tolist()
        np.testing.assert_allclose(client.decode(indices=indices[:3].tolist())["images"],
                                   np.asarray(decoded)[:3], atol=1e-4)  # other batch size
