"""Settings and helpers shared by every test folder.

The Keras backend is never chosen here: it comes from `KERAS_BACKEND` in the
environment, and the suite is run once per backend (see `.ci/run`).
"""

import os
import subprocess
import sys
from pathlib import Path

# Quiet TensorFlow's C++ logging and keep BentoML from phoning home; set before
# any test module imports those frameworks. Explicit settings win.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
# Cached raw-pixel rows (training.raw_row) go to a folder of this session, never
# the user's cache: a test computes its own and may then reuse it.
if "SOFTVQ_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SOFTVQ_CACHE_DIR"] = tempfile.mkdtemp(prefix="softvq-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SOFTVQ_CACHE_DIR"], ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    """Run PyTorch single-threaded in tests (override: SOFTVQ_TEST_TORCH_THREADS).

    On a shared 2-core machine, torch's two OpenMP threads spin against other
    processes: a small MLP step measured 20x slower than with one thread. The
    tests' models are tiny, so one thread costs nothing where cores are free.
    """
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        torch.set_num_threads(int(os.environ.get("SOFTVQ_TEST_TORCH_THREADS", "1")))

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Real copies of the paper's datasets (read-only, never in the repository):
#: `$SOFTVQ_TEST_DATA_DIR`, else `../shared/data` next to the checkout.
SHARED_DATA_DIR = Path(
    os.environ.get("SOFTVQ_TEST_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def keras_backend():
    """Name of the Keras backend this run uses (from `KERAS_BACKEND`)."""
    import keras

    return keras.backend.backend()


@pytest.fixture(scope="session")
def shared_data_dir():
    """The folder of real dataset copies; skips the test when it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(
            f"no real dataset copies at {SHARED_DATA_DIR} (set SOFTVQ_TEST_DATA_DIR "
            "to a folder with mnist.npz to run this test)"
        )
    return SHARED_DATA_DIR


def run_python(code, *, backend=None, env=None, timeout=300, cwd=None):
    """Run `python -c code` in a fresh interpreter and return the CompletedProcess.

    `backend` sets `KERAS_BACKEND` for the child (default: inherit). `env` adds
    variables. Fails the calling test with the child's stderr if it exits non-zero.
    """
    child_env = dict(os.environ)
    if backend is not None:
        child_env["KERAS_BACKEND"] = backend
    child_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env,
        cwd=str(cwd or REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"subprocess (KERAS_BACKEND={child_env.get('KERAS_BACKEND')}) exited "
            f"{proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def python_subprocess():
    """`run_python` as a fixture: run Python code in a child interpreter."""
    return run_python


#: `python -m training.fit` options of the own-images runs: tiny and quick.
OWN_RUN_OPTIONS = ["--epochs", "1", "--kmeans-init", "2", "--probe-epochs", "2",
                   "--verbose", "2"]


@pytest.fixture(scope="session")
def own_image_runs(tmp_path_factory):
    """Finished runs of `python -m training.fit` (in process) on generated folders.

    - `gray`: `gray/<class>/*.png`, 3 classes of 12x10 grayscale PNGs (not a
      multiple of 16: the MLP), a seeded 0.2 test split, one truncated PNG
      skipped with `--skip-bad-images`;
    - `rgb`: `rgb/train|test/<class>/*.jpg`, 2 classes of 16x16 RGB JPEGs (the
      CNN) and one 20x18 JPEG that is resized;
    - `loose`: 30 8x8 PNGs without class sub-folders (no labels), `--clusters 4`.

    Returns `{name: (folder, run folder, stdout of the run)}`.
    """
    import contextlib
    import io

    import image_folders as f

    from training.fit import main

    root = tmp_path_factory.mktemp("own-images")
    gray = f.labelled_folder(root / "gray")
    f.truncated_png(gray / "bars" / "zz-truncated.png")
    rgb = f.split_folder(root / "rgb")
    rng = np.random.default_rng(9)
    f.save(f.pattern(0, (20, 18), rng, 3), rgb / "train" / "bars" / "zz-larger.jpg")
    loose = f.unlabelled_folder(root / "loose")
    runs = {}
    for name, folder, extra in [("gray", gray, ["--skip-bad-images"]), ("rgb", rgb, []),
                                ("loose", loose, ["--clusters", "4"])]:
        out = root / "runs" / name
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = main([str(folder), "softvq", "--out", str(out), *OWN_RUN_OPTIONS, *extra])
        assert code == 0, stdout.getvalue()[-2000:]
        runs[name] = (folder, out, stdout.getvalue())
    return runs
