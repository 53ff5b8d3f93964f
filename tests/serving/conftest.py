"""Fixtures of the serving tests: a tiny real run on `digits` and the real server.

`digits_run` trains with the training CLI in a subprocess
(`python -m training.fit digits softvq --epochs 1`, small K-means and probe),
exactly as an operator would; `server` starts `bentoml serve` on it once per
session (127.0.0.1, a free port, `BENTOML_HOME` in a temporary folder) with
small limits so that the limit tests send small bodies. `reference` computes
every answer in process from the same files, independently of `serving/`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving_helpers import TEST_MAX_BATCH, TEST_MAX_BODY_BYTES

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
