"""Training on several devices and processes (training.distribution), and --precision.

The end-to-end tests train `digits softvq` for 2 epochs in child processes:
one process with 2 CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`,
which must be set before JAX starts), and 2 processes on 127.0.0.1 joined by
Keras' `KERAS_DISTRIBUTION_*` variables (CPU collectives through gloo). They
compare with the single-device run of the `finished_run` fixture. A second
2-process run loses process 1 to `kill -9` mid-epoch: process 0 must stop with
a line naming it, and `--resume` on both must end with the weights of the
uninterrupted 2-process run (`two_process_run`).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest

from killing import PACED, kill_mid_epoch
from training import artifacts, checkpoint
from training.distribution import ENV_VARS, Plan, processes_from_env
from training.fit import UsageError, run

REPO_ROOT = Path(__file__).resolve().parents[2]
FIT = ["-m", "training.fit", "digits", "softvq", "--epochs", "2", "--kmeans-init", "2",
       "--probe-epochs", "2", "--verbose", "2"]
jax_only = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND") != "jax", reason="data parallelism is JAX-only"
)


def child_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(REPO_ROOT), KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONUNBUFFERED="1", **extra)
    return env


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


def weights_crc(path):
    """CRC-32 of a saved model's weights, as `Plan.check_replicas` computes it."""
    import softvq_keras  # noqa: F401 (registers the custom layers)

    crc = 0
    for w in keras.saving.load_model(path).weights:
        crc = zlib.crc32(np.ascontiguousarray(keras.ops.convert_to_numpy(w.value)).tobytes(), crc)
    return crc


def epoch_losses(log):
    return [float(m) for m in re.findall(r"^\d+/\d+ - .* - loss: ([0-9.]+)", log, re.M)]


# --------------------------------------------------------------------------
# Units


def test_multi_process_variables_are_checked():
    assert processes_from_env({}) == (1, 0)
    assert processes_from_env(dict(zip(ENV_VARS, ("10.0.0.1:1234", "4", "3")))) == (4, 3)
    with pytest.raises(UsageError, match="KERAS_DISTRIBUTION_PROCESS_ID is not set"):
        processes_from_env(dict(zip(ENV_VARS[:2], ("h:1", "2"))))
    with pytest.raises(UsageError, match="must be in 0..1; got 2"):
        processes_from_env(dict(zip(ENV_VARS, ("h:1", "2", "2"))))
    with pytest.raises(UsageError, match="must be integers"):
        processes_from_env(dict(zip(ENV_VARS, ("h:1", "two", "0"))))


def test_global_batch_steps_and_config_of_a_plan():
    plan = Plan("jax", ["cpu:0", "cpu:1"], "cpu", processes=2, process_id=1)
    assert plan.data_parallel and not plan.is_chief
    assert plan.config() == {
        "devices": ["cpu:0", "cpu:1"], "device_kind": "cpu",
        "distribution": {"processes": 2, "devices": 2},
    }
    # ceil(N / B) like one device, unless the last batch is cut to nothing.
    assert plan.steps_per_epoch(1500, 64) == 24
    assert plan.steps_per_epoch(1409, 64) == 22  # 22 * 64 + 1: the single example is dropped
    assert Plan("jax", ["cpu:0"], "cpu").steps_per_epoch(1409, 64) == 23
    plan.check_batch_size(64)
    with pytest.raises(UsageError, match="multiple of the 3 devices"):
        Plan("jax", ["gpu:0", "gpu:1", "gpu:2"], "H200").check_batch_size(64)
    assert "global batch 64, 32 per device" in plan.describe(64)


def test_each_process_gets_its_slice_of_every_global_batch():
    import tensorflow as tf

    ds = tf.data.Dataset.range(11).batch(4)  # batches of 4, 4, 3
    parts = {
        pid: [b.tolist() for b in Plan("jax", ["a", "b"], "cpu", 2, pid).shard(ds, 11, 4)
              .as_numpy_iterator()]
        for pid in (0, 1)
    }
    assert parts == {0: [[0, 1], [4, 5], [8]], 1: [[2, 3], [6, 7], [9]]}  # 10 cut: 3 -> 2
    one = Plan("jax", ["a", "b"], "cpu").shard(ds, 11, 4)
    assert [b.tolist() for b in one.as_numpy_iterator()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert int(one.cardinality()) == 3


@pytest.mark.parametrize("backend, message", [
    ("tensorflow", "--devices 2: the tensorflow backend trains on one device here"),
    ("torch", "--devices 2: the torch backend trains on one device; use --backend jax"),
])
def test_tensorflow_and_torch_refuse_several_devices(tmp_path, backend, message):
    proc = subprocess.run(
        [sys.executable, *FIT, "--backend", backend, "--devices", "2", "--out", str(tmp_path / "r")],
        cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()


def test_multi_process_training_refuses_torch(tmp_path):
    env = child_env(**dict(zip(ENV_VARS, ("127.0.0.1:1", "2", "0"))))
    proc = subprocess.run(
        [sys.executable, *FIT, "--backend", "torch", "--out", str(tmp_path / "r")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "multi-process training (KERAS_DISTRIBUTION_NUM_PROCESSES=2) needs the JAX backend" in proc.stderr


@jax_only
def test_more_devices_than_visible_is_refused(tmp_path):
    with pytest.raises(UsageError, match="--devices 2: this machine's cpu backend sees 1 device"):
        run("digits", "softvq", epochs=1, devices=2, out=tmp_path / "r")


# --------------------------------------------------------------------------
# Precision


@jax_only
def test_mixed_precision_run_records_its_policy_and_exports_float32(tmp_path, small_run):
    run_dir = run("digits", "softvq", precision="mixed_bfloat16", out=tmp_path / "bf16", **small_run)
    config = read(run_dir, artifacts.CONFIG)
    assert config["precision"] == "mixed_bfloat16"
    assert config["devices"] == ["cpu:0"]
    assert config["distribution"] == {"processes": 1, "devices": 1}
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    encoder = keras.saving.load_model(run_dir / artifacts.ENCODER)
    assert {layer.dtype_policy.name for layer in encoder.layers} == {"float32"}
    assert keras.backend.standardize_dtype(encoder(np.zeros((2, 64), "float32")).dtype) == "float32"
    assert not artifacts.missing_files(run_dir)


# --------------------------------------------------------------------------
# Several devices and processes (slow: child processes train)


@pytest.mark.slow
@jax_only
def test_one_process_two_devices_trains_like_one_device(tmp_path, finished_run):
    run_dir = tmp_path / "two-devices"
    proc = subprocess.run(
        [sys.executable, *FIT, "--out", str(run_dir), "--codebook-init", "kmeans",
         "--dead-code-restarts"],
        cwd=REPO_ROOT, env=child_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not artifacts.missing_files(run_dir) and not (run_dir / artifacts.CHECKPOINT).exists()
    config, single = read(run_dir, artifacts.CONFIG), read(finished_run, artifacts.CONFIG)
    assert config["devices"] == ["cpu:0", "cpu:1"]
    assert config["distribution"] == {"processes": 1, "devices": 2}
    assert single["distribution"] == {"processes": 1, "devices": 1}
    assert config["batch_size"] == single["batch_size"] == 64  # the global batch
    assert config["steps_per_epoch"] == single["steps_per_epoch"]
    steps = [e["steps"] for e in read(run_dir, artifacts.HISTORY)["epochs"]]
    assert steps == [e["steps"] for e in read(finished_run, artifacts.HISTORY)["epochs"]]
    assert steps == [single["steps_per_epoch"]] * 2
    assert "Training on 2 devices (cpu:0, cpu:1; cpu), data parallel: global batch 64, 32 per device." in proc.stdout
    # The first epoch (before any codebook callback) is the one-device epoch: same global batches.
    first = read(run_dir, artifacts.HISTORY)["epochs"][0]["logs"]["loss"]
    assert first == pytest.approx(read(finished_run, artifacts.HISTORY)["epochs"][0]["logs"]["loss"], rel=1e-3)
    assert "CodebookKMeansInit: codebook set" in proc.stdout
    crc = int(re.search(r"Weights agree on all 2 devices \(1 process\): CRC-32 ([0-9a-f]{8})", proc.stdout)[1], 16)
    assert crc == weights_crc(run_dir / artifacts.AUTOENCODER)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TWO_PROCESS_OPTIONS = ["--codebook-init", "kmeans", "--dead-code-restarts"]


def start_processes(run_dir, command=None, extra=(), stdout=subprocess.PIPE):
    """Both processes of a 2-process run on 127.0.0.1 (a fresh port)."""
    address = f"127.0.0.1:{free_port()}"
    return [
        subprocess.Popen(
            [*(command or [sys.executable, *FIT]), "--out", str(run_dir), *TWO_PROCESS_OPTIONS,
             *extra],
            cwd=REPO_ROOT, env=child_env(**dict(zip(ENV_VARS, (address, "2", str(pid))))),
            stdout=stdout, stderr=subprocess.PIPE, text=True,
        )
        for pid in (0, 1)
    ]


def finish(procs, timeout=600):
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """`(run_dir, [(stdout, stderr) of process 0, of process 1], [return codes])`
    of an uninterrupted 2-process run."""
    run_dir = tmp_path_factory.mktemp("dist") / "two-processes"
    procs = start_processes(run_dir)
    outputs = finish(procs)
    return run_dir, outputs, [p.returncode for p in procs]


@pytest.mark.slow
@jax_only
def test_two_processes_train_one_model_and_process_0_writes_the_folder(two_process_run, finished_run):
    run_dir, outputs, codes = two_process_run
    for pid, (code, (out, err)) in enumerate(zip(codes, outputs)):
        assert code == 0, f"process {pid}:\n{err[-3000:]}"
    (out0, _), (out1, _) = outputs
    # Written once, by process 0: its summary lists the files; process 1 only reports.
    assert f"Wrote {run_dir}/ (" in out0 and "Wrote " not in out1
    assert f"Trained; process 0 wrote {run_dir}/." in out1
    assert not artifacts.missing_files(run_dir) and not (run_dir / artifacts.CHECKPOINT).exists()
    config, single = read(run_dir, artifacts.CONFIG), read(finished_run, artifacts.CONFIG)
    assert config["distribution"] == {"processes": 2, "devices": 2}
    assert len(config["devices"]) == 2
    history = read(run_dir, artifacts.HISTORY)["epochs"]
    assert [e["epoch"] for e in history] == [1, 2]  # one writer: no repeated records
    assert [e["steps"] for e in history] == [single["steps_per_epoch"]] * 2
    # Every process logs the same global loss, and ends with the same weights, the saved ones.
    assert epoch_losses(out0) == epoch_losses(out1) and len(epoch_losses(out0)) == 2
    assert epoch_losses(out0)[0] == pytest.approx(
        read(finished_run, artifacts.HISTORY)["epochs"][0]["logs"]["loss"], rel=1e-3)
    crcs = [re.search(r"Weights agree on all 2 devices \(2 processes\): CRC-32 ([0-9a-f]{8})", out)[1]
            for out in (out0, out1)]
    assert crcs[0] == crcs[1]
    assert int(crcs[0], 16) == weights_crc(run_dir / artifacts.AUTOENCODER)
    assert out0.count("CodebookKMeansInit: codebook set") == out1.count("CodebookKMeansInit: codebook set") == 1


@pytest.mark.slow
@jax_only
def test_a_lost_process_stops_the_other_and_both_resume_to_the_same_weights(
        tmp_path, two_process_run):
    whole = two_process_run[0]
    run_dir = tmp_path / "killed"
    procs = start_processes(run_dir, command=[sys.executable, "-c", PACED, *FIT[2:]])
    try:
        # Process 1 is killed mid-epoch 2; process 0 must stop by itself, naming it.
        _, killed_at = kill_mid_epoch(procs[0], run_dir / artifacts.CHECKPOINT, epoch=2,
                                        victim=procs[1])
        _, err0 = procs[0].communicate(timeout=120)
        stopped_after = time.monotonic() - killed_at
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[1].returncode == -signal.SIGKILL
    assert procs[0].returncode == 1, err0[-3000:]
    last = err0.strip().splitlines()[-1]
    assert "process 1 of 2 was lost (" in last and "process 0 stops too" in last, err0[-3000:]
    assert "--resume" in last and "Traceback" not in err0
    print(f"process 0 stopped {stopped_after:.1f} s after process 1 was killed")
    assert checkpoint.finished_epochs(run_dir / artifacts.CHECKPOINT) == 1

    # --resume on both: from the checkpoint of epoch 1 to the uninterrupted run's weights.
    procs = start_processes(run_dir, extra=["--resume"])
    outputs = finish(procs)
    for pid, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {pid}:\n{err[-3000:]}"
    assert f"Resuming {run_dir} after epoch 1 of 2." in outputs[0][0]
    assert [e["epoch"] for e in read(run_dir, artifacts.HISTORY)["epochs"]] == [1, 2]
    assert read(run_dir, artifacts.HISTORY)["epochs"][1]["logs"] == \
        read(whole, artifacts.HISTORY)["epochs"][1]["logs"]
    assert weights_crc(run_dir / artifacts.AUTOENCODER) == weights_crc(whole / artifacts.AUTOENCODER)
