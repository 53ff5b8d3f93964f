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
