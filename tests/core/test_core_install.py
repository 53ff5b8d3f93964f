"""The core install plus ONE backend, as a user installs it: `pip install 'softvq-keras[jax]'`.

Builds a fresh virtual environment (once per test session, under pytest's tmp
folder), installs a copy of this checkout's package with the `jax` extra only
(from the package index: it needs network access or a warm pip cache), checks
that TensorFlow, PyTorch, BentoML and tensorflow-datasets are NOT installed,
then, in that environment, builds a soft VQ autoencoder, fits it one epoch on
NumPy arrays, saves it as `.keras`, reloads it and compares the predictions.

The test is backend-independent (the child always runs JAX), so it runs in the
JAX pass of `.ci/run` only.
"""

import json
import math
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
#: What a wheel of the project is built from (copied, so that the build leaves
#: nothing in the checkout).
PACKAGE_FILES = ("pyproject.toml", "README.md", "softvq_keras", "training", "serving")
ABSENT = ("tensorflow", "torch", "bentoml", "tensorflow_datasets")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("KERAS_BACKEND", "tensorflow") != "jax",
        reason="backend-independent (the child uses JAX): runs in the KERAS_BACKEND=jax pass",
    ),
]

USER_CODE = r"""
import importlib.util, json, os, sys, tempfile
import numpy as np
absent = {m: importlib.util.find_spec(m) is None for m in %(absent)r}
import keras
import softvq_keras
from softvq_keras import build_autoencoder, make_bottleneck
from softvq_keras.data import load

data = load("digits")
x = data.x_train[:256]
keras.utils.set_random_seed(0)
bottleneck = make_bottleneck("softvq", "digits", seed=0)
model, encoder = build_autoencoder(bottleneck, (64,), 8, pixel_variance=data.pixel_variance)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
history = model.fit(x, epochs=1, batch_size=64, verbose=0)
path = os.path.join(tempfile.mkdtemp(), "autoencoder.keras")
model.save(path)
reloaded = keras.saving.load_model(path)
before, after = model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
print(json.dumps({
    "absent": absent,
    "backend": keras.backend.backend(),
    "module": softvq_keras.__file__,
    "loaded": [m for m in %(absent)r if m in sys.modules],
    "loss": [float(v) for v in history.history["loss"]],
    "max_diff": {k: float(np.abs(np.asarray(before[k], "float64") - np.asarray(after[k], "float64")).max())
                 for k in ("latent", "reconstruction", "code_probs")},
    "code_probs_sum": float(np.asarray(after["code_probs"]).sum()),
    "rows": len(after["latent"]),
}))
"""


@pytest.fixture(scope="session")
def core_jax_python(tmp_path_factory):
    """The python of a fresh venv holding `softvq-keras[jax]` (this checkout) and nothing else."""
    root = tmp_path_factory.mktemp("core-jax")
    source = root / "src"
    source.mkdir()
    for name in PACKAGE_FILES:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, source / name)
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{source}[jax]"],
        capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, f"pip install '.[jax]' failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return python


def test_core_install_with_the_jax_extra_only_trains_saves_and_reloads(core_jax_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(KERAS_BACKEND="jax", PYTHONNOUSERSITE="1")
    proc = subprocess.run(
        [str(core_jax_python), "-c", USER_CODE % {"absent": ABSENT}],
        cwd=tmp_path,  # not the checkout: the installed package is imported
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["absent"] == {m: True for m in ABSENT}, found["absent"]
    assert found["loaded"] == []
    assert found["backend"] == "jax"
    assert Path(found["module"]).is_relative_to(core_jax_python.parents[1])  # the venv's copy
    assert len(found["loss"]) == 1 and math.isfinite(found["loss"][0])  # one epoch
    assert found["rows"] == 256
    assert abs(found["code_probs_sum"] - 256) < 1e-2  # one posterior per input
    assert found["max_diff"] == {"latent": 0.0, "reconstruction": 0.0, "code_probs": 0.0}, found


def test_core_install_has_no_backend_without_an_extra():
    """The core requirements name Keras and the numerics only (read from pyproject.toml)."""
    tomllib = pytest.importorskip("tomllib")

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = [dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
             for dep in project["dependencies"]]
    assert names == ["keras", "numpy", "scipy", "scikit-learn", "threadpoolctl"]
    extras = project["optional-dependencies"]
    assert {"jax", "tensorflow", "torch", "train", "serve", "export", "cuda", "all",
            "test"} <= set(extras)
    assert extras["all"] == ["softvq-keras[jax,tensorflow,torch,train,serve,export]"]
    assert "softvq-keras[all]" in extras["test"]
