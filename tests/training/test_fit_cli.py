"""The command line: bad input fails at once with one line and exit code 2."""

import json
import os
import subprocess
import sys

from pathlib import Path

import pytest

from training import fit
from training.artifacts import CONFIG, METRICS

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv):
    """`training.fit.main(argv)` in process; returns (exit code, stdout, stderr)."""
    try:
        code = fit.main(list(argv))
    except SystemExit as e:  # argparse's own errors and --help
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["foo", "softvq"], "unknown dataset 'foo': expected a built-in name (mnist"),
        (["digits", "softvqq"], "unknown model 'softvqq'; choose one of ae, vae"),
        (["digits", "ae", "--epochs", "-3"], "--epochs must be a positive integer; got -3"),
        (["digits", "ae", "--epochs", "0"], "--epochs must be a positive integer; got 0"),
        (["digits", "ae", "--steps", "-1"], "--steps must be a positive integer; got -1"),
        (["digits", "ae", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["digits", "ae", "--learning-rate", "0"], "--learning-rate must be a positive number"),
        (["digits", "ae", "--learning-rate", "nan"], "--learning-rate must be a positive number"),
        (["digits", "vq", "--codebook-size", "1"], "--codebook-size (K) must be at least 2; got 1"),
        (["digits", "ae", "--codebook-size", "8"], "--codebook-size applies to vq, softvq, lfq, rvq only"),
        (["digits", "fsq", "--codebook-size", "8"], "--codebook-size applies to vq, softvq, lfq, rvq only, not fsq (use --levels)"),
        (["digits", "lfq", "--codebook-size", "100"], "--codebook-size must be a power of two for lfq; got 100"),
        (["digits", "fsq", "--levels", "8,1,4"], "--levels must be integers >= 2 separated by commas"),
        (["digits", "fsq", "--levels", "8,x"], "--levels must be integers >= 2 separated by commas, e.g. 8,4,4; got '8,x'"),
        (["digits", "vq", "--levels", "8,4"], "--levels applies to fsq only, not vq"),
        (["digits", "rvq", "--num-quantizers", "0"], "--num-quantizers must be a positive integer; got 0"),
        (["digits", "vq", "--num-quantizers", "2"], "--num-quantizers applies to rvq only, not vq"),
        (["digits", "vq", "--quantizer-dropout"], "--quantizer-dropout applies to rvq only, not vq"),
        (["digits", "softvq", "--rotation-trick"], "--rotation-trick applies to vq and rvq only, not softvq"),
        (["digits", "vq", "--latent-norm", "batch"], "--latent-norm applies to fsq and lfq only, not vq"),
        (["digits", "fsq", "--latent-norm", "layer"], "argument --latent-norm: invalid choice"),
        (["digits", "vq", "--dead-code-threshold", "0.1"], "--dead-code-threshold needs --codebook-update ema"),
        (["digits", "fsq", "--codebook-update", "ema"], "--codebook-update applies to vq, softvq, rvq only, not fsq"),
        (["digits", "softvq", "--beta", "2"], "--beta applies to vae, betavae, infodropout only"),
        (["digits", "ae", "--codebook-init", "kmeans"], "--codebook-init applies to vq, softvq, rvq only, not ae"),
        (["digits", "vq", "--variance", "per_code"], "--variance applies to softvq only, not vq"),
        (["digits", "softvq", "--variance", "per_pixel"], "argument --variance: invalid choice"),
        (["digits", "vae", "--dead-code-restarts"], "--dead-code-restarts applies to vq and softvq only, not vae"),
        (["digits", "vq", "--codebook-init", "pca"], "argument --codebook-init: invalid choice: 'pca'"),
        (["digits", "vae", "--beta", "-1"], "--beta must be a non-negative number"),
        (["digits", "ae", "--codebook-update", "ema"], "--codebook-update applies to vq, softvq, rvq only, not ae"),
        (["digits", "vq", "--codebook-update", "kmeans"], "argument --codebook-update: invalid choice"),
        (["digits", "vq", "--softvq-weighting", "svhn_code"],
         "--softvq-weighting applies to softvq only, not vq"),
        (["digits", "softvq", "--softvq-weighting", "svhn"],
         "argument --softvq-weighting: invalid choice"),
        (["digits", "vae", "--infodropout-weighting", "notebook"],
         "--infodropout-weighting applies to infodropout only, not vae"),
        (["digits", "ae", "--adam-epsilon", "0"], "--adam-epsilon must be a positive number; got 0.0"),
        (["digits", "ae", "--adam-epsilon", "nan"], "--adam-epsilon must be a positive number"),
        (["digits", "ae", "--kmeans-init", "0"], "--kmeans-init must be a positive integer"),
        (["digits", "ae", "--data-dir", "/no/such/folder"], "--data-dir '/no/such/folder' is not a directory"),
        (["digits", "ae", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["digits", "ae", "--backend", "numpy"], "argument --backend: invalid choice: 'numpy'"),
        (["digits", "ae", "--resume", "--overwrite"], "not allowed with argument"),
        (["digits"], "the following arguments are required: MODEL"),
    ],
)
def test_bad_arguments_fail_with_one_line_and_exit_code_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_errors_come_before_keras_is_imported():
    """A bad value is rejected by a fresh process that never imports Keras."""
    code = (
        "import sys; from training.fit import main; "
        "rc = main(['digits', 'vq', '--codebook-size', '1']); "
        "print(rc, *(m in sys.modules for m in ('keras', 'tensorflow', 'jax', 'torch')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.split() == ["2", "False", "False", "False", "False"], proc.stderr
    assert "must be at least 2" in proc.stderr


@pytest.mark.parametrize("dataset, expected", [("digits", "jax"), ("cifar10", "tensorflow")])
def test_default_backend_follows_the_architecture(dataset, expected):
    code = (
        "import os, sys; from training.fit import FitSettings, choose_backend, load_presets; "
        f"print(choose_backend(FitSettings({dataset!r}, 'ae'), load_presets()), "
        "os.environ['KERAS_BACKEND'], 'keras' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items()
           if k != "KERAS_BACKEND" and not k.startswith("KERAS_DISTRIBUTION_")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU defaults, whatever this machine has
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=60,
    )
    assert proc.stdout.split() == [expected, expected, "False"], proc.stderr
    # Several processes (Keras' variables): JAX, the backend that trains on several devices.
    env["KERAS_DISTRIBUTION_NUM_PROCESSES"] = "2"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=60,
    )
    assert proc.stdout.split() == ["jax", "jax", "False"], proc.stderr


def test_an_explicit_backend_wins_over_the_default():
    code = (
        "from training.fit import FitSettings, choose_backend, load_presets; "
        "print(choose_backend(FitSettings('digits', 'ae', backend='torch'), load_presets()))"
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=60,
    )
    assert proc.stdout.strip() == "torch", proc.stderr


def test_help_lists_every_option_and_each_datasets_defaults(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for flag in (
        "--epochs", "--steps", "--batch-size", "--learning-rate", "--latent-dim",
        "--codebook-size", "--beta", "--seed", "--data-dir", "--out", "--backend",
        "--resume", "--overwrite", "--kmeans-init", "--probe-epochs", "--levels",
        "--num-quantizers", "--quantizer-dropout", "--rotation-trick", "--dead-code-threshold",
    ):
        assert flag in out
    # Soft VQ keeps its codebook term under EMA (tests/core/test_ema.py pins the loss).
    flat = " ".join(out.split())
    assert "softvq keeps it since it also trains the encoder and the variance head" in flat
    assert "no codebook loss term; soft VQ" not in flat
    # Bits per image of every quantizer, per dataset (mnist: the paper's 7 bits).
    assert "  - mnist: vq 7, softvq 7, fsq 7, lfq 7, rvq 28" in out
    presets = fit.load_presets()
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    for name, p in presets.PRESETS.items():
        row = rows[name]
        assert str(p["steps"]) in row and str(p["latent_dim"]) in row
        assert f"{p['softvq_codes']}/{p['vq_codes']}" in row
        assert ",".join(map(str, p["fsq_levels"])) in row and str(p["lfq_codes"]) in row


def test_options_map_onto_the_settings():
    args = fit.build_parser().parse_args(
        ["mnist", "vq", "--codebook-size", "64", "--skip-raw", "--steps", "100", "--resume"]
    )
    settings = fit.FitSettings(**{k: v for k, v in vars(args).items()})
    assert (settings.codebook_size, settings.steps, settings.resume) == (64, 100, True)
    assert settings.raw_baseline is False and settings.epochs is None
    assert settings.run_dir.as_posix() == "runs/mnist-vq"


def test_epochs_for_steps_rounds_up_to_whole_epochs():
    # The paper: 40,000 updates of batch 64 on MNIST's 60,000 images = 43 epochs.
    assert fit.epochs_for_steps(40_000, 60_000, 64) == 43
    assert fit.epochs_for_steps(938, 60_000, 64) == 1
    assert fit.epochs_for_steps(939, 60_000, 64) == 2


def test_model_names_match_the_registry():
    import softvq_keras

    assert set(fit.MODELS) == set(softvq_keras.BOTTLENECKS)


def test_a_non_empty_run_folder_is_refused(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "digits", "ae", "--out", str(tmp_path))
    assert code == 2
    assert "is not empty (holds notes.txt)" in err and "--overwrite" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_out_path_that_is_a_file_is_refused(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    code, _, err = run_cli(capsys, "digits", "ae", "--out", str(target))
    assert code == 2 and "is a file, not a folder" in err


def test_resume_refuses_a_finished_run_and_a_foreign_folder(capsys, tmp_path):
    finished = tmp_path / "finished"
    finished.mkdir()
    for name in (CONFIG, METRICS):
        (finished / name).write_text(json.dumps({}))
    code, _, err = run_cli(capsys, "digits", "ae", "--out", str(finished), "--resume")
    assert code == 2 and "the run finished; pass --overwrite" in err

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2")
    code, _, err = run_cli(capsys, "digits", "ae", "--out", str(foreign), "--resume")
    assert code == 2 and "nothing to resume" in err and "has no config.json" in err


def test_unavailable_data_is_a_usage_error(capsys, tmp_path, monkeypatch):
    """mnist with an empty --data-dir and downloads forbidden: one line, exit 2."""
    data_dir = tmp_path / "empty"
    data_dir.mkdir()
    monkeypatch.setenv("SOFTVQ_OFFLINE", "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))  # no prepared tfds copy either
    code, _, err = run_cli(
        capsys, "mnist", "ae", "--data-dir", str(data_dir), "--out", str(tmp_path / "run")
    )
    assert code == 2
    assert "Dataset 'mnist' is not available" in err and "mnist.npz" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


class _Stream:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize(
    "verbose, tty, expected",
    [(None, True, 1), (None, False, 2), (0, False, 0), (1, False, 1), (2, True, 2)],
)
def test_fit_prints_one_line_per_epoch_unless_on_a_terminal(verbose, tty, expected):
    assert fit.fit_verbosity(verbose, _Stream(tty)) == expected
    assert fit.build_parser().parse_args(["digits", "ae"]).verbose is None


def test_piped_training_output_has_no_progress_bar_control_characters(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "training.fit", "digits", "ae", "--epochs", "2",
         "--out", str(out), "--kmeans-init", "2", "--probe-epochs", "2", "--skip-raw"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stdout and "\x08" not in proc.stdout
    epoch_lines = [line for line in proc.stdout.splitlines() if " - loss: " in line]
    assert len(epoch_lines) == 2, proc.stdout[-2000:]  # one line per epoch
    assert all(line.startswith("24/24 - ") for line in epoch_lines)  # digits: 1,500 / 64


RETRACE = r"""
import sys
import tensorflow as tf
from training.evaluate import quiet_retracing_warnings

def retrace(tag):
    @tf.function
    def f(x):
        return x * 2
    print(f"-- {tag}", file=sys.stderr, flush=True)
    for n in range(1, 9):  # a new shape per call: TensorFlow warns after 5 traces
        f(tf.zeros((n,)))
    tf.get_logger().warning("an unrelated TensorFlow warning (%s)", tag)

retrace("before")
quiet_retracing_warnings()
retrace("after")
"""


def test_tensorflow_retracing_warnings_stay_out_of_the_progress(python_subprocess):
    """TensorFlow's own retracing warning is dropped once the CLI starts; others show."""
    proc = python_subprocess(RETRACE, env={"TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    before, after = proc.stderr.split("-- after")
    assert "triggered tf.function retracing" in before  # the check can fail
    assert "triggered tf.function retracing" not in after
    assert "an unrelated TensorFlow warning (after)" in after
