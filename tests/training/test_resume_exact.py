"""`--resume` after `kill -9` continues exactly (training.checkpoint, per-epoch data order).

A `digits vae` run (noise drawn from the layer's SeedGenerator at every step)
is killed with SIGKILL in the middle of its second epoch, once the first
epoch's checkpoint exists; `--resume` then finishes it, and its weights must
equal, bit for bit, those of an uninterrupted run with the same seed trained
beside it. Once under JAX and once under TensorFlow (child processes: the
backend is fixed per process).

The killed child is `training.fit`'s `main` with one extra callback that prints
each batch and sleeps 50 ms after it (`killing.PACED`), so that the kill lands
mid-epoch; the pause changes no number.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from killing import PACED, kill_mid_epoch

from training import artifacts, checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ["digits", "vae", "--epochs", "3", "--kmeans-init", "2", "--probe-epochs", "2",
           "--skip-raw", "--verbose", "2"]


def child_env(backend):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KERAS_DISTRIBUTION_") and k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(REPO_ROOT), KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONUNBUFFERED="1")
    return env


def saved_weights(run_dir):
    import softvq_keras  # noqa: F401 (registers the layers)

    model = keras.saving.load_model(run_dir / artifacts.AUTOENCODER)
    return [np.asarray(keras.ops.convert_to_numpy(w.value)) for w in model.weights]


def epoch_losses(run_dir):
    return [e["logs"]["loss"] for e in artifacts.read_json(run_dir / artifacts.HISTORY)["epochs"]]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, backend):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    env = child_env(backend)
    fit = [sys.executable, "-m", "training.fit", *OPTIONS, "--backend", backend]
    uninterrupted = subprocess.Popen(
        [*fit, "--out", str(whole)], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", PACED, *OPTIONS, "--backend", backend, "--out", str(killed)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        log, _ = kill_mid_epoch(victim, killed / artifacts.CHECKPOINT, epoch=2)
        victim.wait(timeout=60)
        assert victim.returncode == -signal.SIGKILL, log[-2000:]
        # Killed in epoch 2: one finished epoch in the checkpoint and the history.
        assert checkpoint.finished_epochs(killed / artifacts.CHECKPOINT) == 1
        assert [e["epoch"] for e in artifacts.read_json(killed / artifacts.HISTORY)["epochs"]] == [1]
        assert not (killed / artifacts.AUTOENCODER).exists()

        resumed = subprocess.run([*fit, "--out", str(killed), "--resume"], cwd=REPO_ROOT,
                                 env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
        assert f"Resuming {killed} after epoch 1 of 3." in resumed.stdout
        out, _ = uninterrupted.communicate(timeout=600)
        assert uninterrupted.returncode == 0, out[-3000:]
    finally:
        for proc in (uninterrupted, victim):
            proc.kill()
            proc.communicate()

    # Bit-identical: every weight, every epoch's loss, the evaluation.
    assert epoch_losses(killed) == epoch_losses(whole) and len(epoch_losses(whole)) == 3
    for a, b in zip(saved_weights(killed), saved_weights(whole), strict=True):
        np.testing.assert_array_equal(a, b)
    first, second = (artifacts.read_json(d / artifacts.METRICS) for d in (whole, killed))
    for key in ("clustering_accuracy", "nmi", "classification_accuracy", "reconstruction_error",
                "kmeans_inertia"):
        assert second[key] == first[key], key
    assert not (killed / artifacts.CHECKPOINT).exists()
