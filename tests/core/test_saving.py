"""`.keras` round trips of every bottleneck's autoencoder, on this backend and
across the other two (each in a child process with its own KERAS_BACKEND)."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import keras

from softvq_keras import build_autoencoder, make_bottleneck

from softvq_keras.presets import MODEL_NAMES

from .conftest import to_numpy

NAMES = (*MODEL_NAMES, "softvq-per-code")
OTHER_BACKENDS = [b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend()]


def trained_like(name):
    """An MLP autoencoder on digits-shaped input with non-initial weights.

    The weights are perturbed so that a loader that silently re-initializes
    something (e.g. the codebook or a head) would give different outputs.
    """
    # Soft VQ with its optional latent noise: still deterministic at inference.
    extra = {"latent_noise_stddev": 0.01} if name == "softvq" else {}
    if name == "softvq-per-code":  # the free per-codeword variances
        name, extra = "softvq", {"variance": "per_code"}
    bottleneck = make_bottleneck(name, "digits", seed=0, **extra)
    model, _ = build_autoencoder(bottleneck, (64,), 8, "mlp", pixel_variance=0.123)
    rng = np.random.default_rng(1)
    model.set_weights(
        [w + rng.normal(scale=0.05, size=w.shape).astype(w.dtype) for w in model.get_weights()]
    )
    return model


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(2).uniform(size=(6, 64)).astype("float32")


@pytest.mark.parametrize("name", NAMES)
def test_keras_file_round_trip_gives_identical_outputs(name, inputs, tmp_path):
    model = trained_like(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.pixel_variance == pytest.approx(0.123)
    bottleneck = loaded.get_layer("bottleneck")
    assert type(bottleneck) is type(model.get_layer("bottleneck"))
    assert bottleneck.get_config() == model.get_layer("bottleneck").get_config()
    expected = to_numpy(model(inputs, training=False))
    got = to_numpy(loaded(inputs, training=False))
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # The reloaded model trains: compile + one step runs and logs the same terms.
    loaded.compile(optimizer="adam")
    logs = loaded.fit(inputs, batch_size=6, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    assert "reconstruction_loss" in logs


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, inputs):
    """Every bottleneck's model saved under this backend, with its outputs."""
    folder = tmp_path_factory.mktemp("cross_backend")
    np.save(folder / "inputs.npy", inputs)
    for name in NAMES:
        model = trained_like(name)
        model.save(folder / f"{name}.keras")
        np.savez(folder / f"{name}_outputs.npz", **to_numpy(model(inputs, training=False)))
    return folder


LOAD_AND_COMPARE = """
import json
import numpy as np, keras
import softvq_keras  # registers the custom layers

folder = {folder!r}
x = np.load(folder + "/inputs.npy")
report = {{"backend": keras.backend.backend()}}
for name in {names!r}:
    model = keras.saving.load_model(folder + f"/{{name}}.keras")
    got = {{k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}}
    expected = np.load(folder + f"/{{name}}_outputs.npz")
    report[name] = {{
        k: float(np.abs(got[k] - expected[k]).max()) if k in got else None
        for k in expected.files
    }}
print("REPORT " + json.dumps(report))
"""


@pytest.mark.parametrize("other", OTHER_BACKENDS)
def test_models_saved_here_load_under_the_other_backends(other, saved_models, python_subprocess):
    code = LOAD_AND_COMPARE.format(folder=str(saved_models), names=NAMES)
    proc = python_subprocess(code, backend=other)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    assert report.pop("backend") == other
    assert set(report) == set(NAMES)
    for name, diffs in report.items():
        for key, diff in diffs.items():
            assert diff is not None, f"{name}: output {key!r} missing after loading under {other}"
            assert diff <= 1e-5, f"{name}/{key}: max |diff| {diff} under {other}"


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_model_saved_before_the_package_layout_moved_still_loads():
    """`saved_before_layout.keras` was written by the code before issue 23 (JAX).

    Its config names the old modules (`softvq_keras.autoencoder`,
    `softvq_keras.subpixel`); the registered names find today's classes, on
    every backend, with the same outputs (see tests/fixtures/make_saved_before_layout.py).
    """
    config = json.loads(zipfile.ZipFile(FIXTURES / "saved_before_layout.keras").read("config.json"))
    assert config["module"] == "softvq_keras.autoencoder"  # really a pre-move file
    loaded = keras.saving.load_model(FIXTURES / "saved_before_layout.keras")
    expected = dict(np.load(FIXTURES / "saved_before_layout.npz"))
    inputs = expected.pop("inputs")
    assert type(loaded).__module__ == "softvq_keras.models.autoencoder"
    assert loaded.pixel_variance == pytest.approx(0.25)
    got = to_numpy(loaded(inputs, training=False))
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
