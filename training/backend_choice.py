"""Which Keras backend a run uses, chosen before Keras is imported.

`choose_backend` honours `--backend`, then `KERAS_BACKEND`, then the default
per architecture (`default_backend`: the fastest measured on a CPU, JAX with a
GPU or several processes), and sets `KERAS_BACKEND`. Nothing here imports Keras
unless it is already imported.
"""

import os
import sys
from pathlib import Path

from training.settings import BACKENDS, DEFAULT_BACKEND, require


def gpu_visible():
    """Whether an NVIDIA GPU is visible to this process (read without importing a backend)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def default_backend(architecture):
    """The backend when neither --backend nor KERAS_BACKEND is set.

    On a CPU, the fastest measured here for the architecture (DEFAULT_BACKEND:
    JAX for the MLP, TensorFlow for the CNN). With a GPU visible, or several
    processes (KERAS_DISTRIBUTION_NUM_PROCESSES), JAX: the backend that trains on
    several devices (training.distribution); the CPU figures say nothing of GPUs.
    """
    if gpu_visible() or os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
        return "jax"
    return DEFAULT_BACKEND[architecture]


def choose_backend(s, presets, architecture=None):
    """Set `KERAS_BACKEND` (before Keras is imported) and return its name.

    `architecture` is the data's (`SourceInfo.architecture`); default: the
    built-in dataset's.
    """
    requested = s.backend or os.environ.get("KERAS_BACKEND")
    if "keras" in sys.modules:
        import keras

        current = keras.backend.backend()
        require(s.backend is None or s.backend == current,
                 f"Keras is already imported with the {current} backend in this process; "
                 f"cannot switch to {s.backend}")
        return current
    architecture = architecture or presets.DATASETS[s.dataset].architecture
    backend = requested or default_backend(architecture)
    require(backend in BACKENDS, f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    os.environ["KERAS_BACKEND"] = backend
    return backend
