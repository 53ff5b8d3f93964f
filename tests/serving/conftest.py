"""Fixtures of the serving tests: a tiny real run on `digits` and the real server.

`digits_run` trains with the training CLI in a subprocess
(`python -m training.fit digits softvq --epochs 1`, small K-means and probe),
exactly as an operator would; `server` starts `bentoml serve` on it once per
session (127.0.0.1, a free port, `BENTOML_HOME` in a temporary folder) with
small limits so that the limit tests send small bodies. `reference` computes
every answer in process from the same files, independently of `serving/`.
`rgb_server` serves a fabricated 12x10 RGB run with API keys on (`KEYS`).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving_helpers import CLASS_NAMES, KEYS, RGB_SHAPE, TEST_MAX_BATCH, TEST_MAX_BODY_BYTES

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A finished `digits softvq` run folder made by the training CLI."""
    out = tmp_path_factory.mktemp("serving-run") / "digits-softvq"
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "training.fit", "digits", "softvq", "--epochs", "1",
         "--kmeans-init", "2", "--probe-epochs", "5", "--skip-raw", "--verbose", "0",
         "--out", str(out)],
        cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"python -m training.fit failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return out


@pytest.fixture(scope="session")
def digits_images():
    """40 raw digits images (8x8, values 0-16) as float64, with their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images[:40].astype(np.float64), d.target[:40]


class Reference:
    """The run's answers computed in process with plain Keras and NumPy."""

    def __init__(self, run_dir):
        import keras

        from softvq_keras.data import preprocess

        self.config = json.loads((run_dir / "config.json").read_text())
        self.encoder = keras.saving.load_model(run_dir / "encoder.keras", safe_mode=True)
        self.classifier = keras.saving.load_model(run_dir / "classifier.keras", safe_mode=True)
        with np.load(run_dir / "kmeans.npz") as f:
            self.centroids = f["centroids"].astype(np.float64)
            self.cluster_to_label = f["cluster_to_label"]
        self._preprocess = lambda raw: preprocess(self.config["dataset"], raw)

    def latents(self, raw):
        return self.encoder.predict(self._preprocess(raw), verbose=0)

    def clusters(self, raw):
        z = self.latents(raw).astype(np.float64)
        distances = np.linalg.norm(z[:, None, :] - self.centroids[None], axis=-1)
        ids = distances.argmin(axis=1)
        return ids, self.cluster_to_label[ids], distances.min(axis=1)

    def probabilities(self, raw):
        return self.classifier.predict(self.latents(raw), verbose=0)


@pytest.fixture(scope="session")
def reference(digits_run):
    return Reference(digits_run)


@pytest.fixture(scope="session")
def server(digits_run):
    """The real `bentoml serve` on the digits run, shared by the session."""
    from serving.launch import BentoServer

    with BentoServer(digits_run, env={
        "SOFTVQ_MAX_BATCH": str(TEST_MAX_BATCH),
        "SOFTVQ_MAX_BODY_BYTES": str(TEST_MAX_BODY_BYTES),
        "KERAS_BACKEND": "jax",
    }) as running:
        yield running


@pytest.fixture
def post(server):
    """`post(route, **requests_kwargs)` -> `requests.Response`; JSON bodies by default."""
    import requests

    def _post(route, **kwargs):
        return requests.post(server.url + route, timeout=30, **kwargs)

    return _post


@pytest.fixture(scope="session")
def rgb_run(tmp_path_factory):
    """A fabricated labelled `ae` run on 12x10 RGB images (untrained, MLP autoencoder).

    Written like a run from before kmeans.npz held the training split's counts;
    its `ae` bottleneck has no discrete codes (`/codes` and `/decode` answer 404).
    """
    import keras

    from softvq_keras import build_autoencoder, make_bottleneck

    run = tmp_path_factory.mktemp("rgb") / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)
    autoencoder, _ = build_autoencoder(make_bottleneck("ae"), RGB_SHAPE, 8)
    autoencoder.save(run / "autoencoder.keras")
    encoder = keras.Sequential([keras.Input(RGB_SHAPE), keras.layers.Flatten(),
                                keras.layers.Dense(8, activation="tanh")])
    classifier = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    encoder.save(run / "encoder.keras")
    classifier.save(run / "classifier.keras")
    rng = np.random.default_rng(0)
    np.savez(run / "kmeans.npz", centroids=rng.normal(size=(4, 8)).astype(np.float32),
             cluster_to_label=np.array([2, 0, 1, 0]))
    config = {"dataset": "my_photos/", "dataset_kind": "folder", "model": "ae",
              "image_shape": list(RGB_SHAPE), "input_shape": list(RGB_SHAPE), "channels": 3,
              "pixel_max": 255, "offset": -0.5, "latent_dim": 8, "labelled": True,
              "num_classes": 3, "class_names": CLASS_NAMES, "clusters": 4}
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.fixture(scope="session")
def rgb_server(rgb_run, tmp_path_factory):
    """The real server on `rgb_run` with API keys on (a key file holding `KEYS`)."""
    from serving.launch import BentoServer

    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text("# keys of the test clients\n" + "\n".join(KEYS) + "\n")
    with BentoServer(rgb_run, env={"KERAS_BACKEND": "jax",
                                   "SOFTVQ_API_KEYS_FILE": str(keys)}) as running:
        yield running
