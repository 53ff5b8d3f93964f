"""End-to-end runs on `digits`: artifacts, reload, evaluation, determinism, resume, NaN."""

import json
import math
import shutil

import keras
import numpy as np
import pytest

from training import artifacts, checkpoint
from training.evaluate import main as evaluate_main
from training.fit import TrainingDiverged, UsageError, main as fit_main, run

#: metrics.json values that must not depend on when or how often they are computed.
SCORES = (
    "clustering_accuracy", "nmi", "clustering_accuracy_train_centroids",
    "nmi_train_centroids", "classification_accuracy", "codebook_usage", "perplexity",
)


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


def assert_same_scores(actual, expected, tol):
    for key in SCORES:
        assert actual[key] == pytest.approx(expected[key], abs=tol), key
    for key, value in expected["raw"].items():
        assert actual["raw"][key] == pytest.approx(value, abs=tol), f"raw.{key}"


def test_a_run_writes_every_artifact(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    expected = set(artifacts.FINISHED_RUN_FILES)
    if keras.backend.backend() == "tensorflow":
        expected.add(artifacts.SAVED_MODEL)
    assert names == expected  # no checkpoint/, no temporary files left


def test_config_records_the_settings_used(finished_run):
    from softvq_keras.presets import DATASETS, preset

    config = read(finished_run, artifacts.CONFIG)
    info, p = DATASETS["digits"], preset("digits")
    assert config["dataset"] == "digits" and config["model"] == "softvq"
    assert config["backend"] == keras.backend.backend()
    assert config["image_shape"] == list(info.image_shape)
    assert config["input_shape"] == list(info.input_shape)
    assert (config["pixel_max"], config["offset"]) == (info.pixel_max, info.offset)
    assert config["latent_dim"] == p["latent_dim"]
    assert config["num_classes"] == 10 and len(config["class_names"]) == 10
    assert config["bottleneck"]["num_codes"] == p["softvq_codes"]
    assert config["epochs"] == 2
    steps_per_epoch = math.ceil(config["num_train"] / p["batch_size"])
    assert config["steps"] == 2 * steps_per_epoch
    assert config["batch_size"] == p["batch_size"]
    assert config["learning_rate"] == p["learning_rate"]
    assert config["seed"] == 0
    assert config["versions"]["keras"] == keras.__version__
    assert config["data_source"] == "sklearn.datasets.load_digits"


def test_history_and_metrics_are_consistent(finished_run):
    history = read(finished_run, artifacts.HISTORY)["epochs"]
    metrics = read(finished_run, artifacts.METRICS)
    assert [e["epoch"] for e in history] == [1, 2]
    assert metrics["epochs_trained"] == 2
    assert metrics["final_losses"] == history[-1]["logs"]
    assert metrics["timings_s"]["seconds_per_epoch"] == [e["seconds"] for e in history]
    for phase in ("load", "train", "encode", "kmeans", "probe", "raw", "total"):
        assert metrics["timings_s"][phase] > 0, phase
    assert metrics["timings_s"]["total"] >= metrics["timings_s"]["train"]
    for key in SCORES[:5] + ("codebook_usage",):
        assert 0.0 < metrics[key] <= 1.0, key
    k = read(finished_run, artifacts.CONFIG)["bottleneck"]["num_codes"]
    assert 1.0 <= metrics["perplexity"] <= k
    # Digits' raw pixels cluster and classify far above chance (10 %).
    assert metrics["raw"]["classification_accuracy"] > 0.5
    assert metrics["raw"]["clustering_accuracy"] > 0.4


def test_kmeans_and_classifier_artifacts(finished_run):
    latent_dim = read(finished_run, artifacts.CONFIG)["latent_dim"]
    with np.load(finished_run / artifacts.KMEANS, allow_pickle=False) as f:
        assert f["centroids"].dtype == np.float32
        assert f["centroids"].shape == (10, latent_dim)
        assert f["cluster_to_label"].dtype == np.int64
        assert sorted(f["cluster_to_label"]) == list(range(10))  # one-to-one
    classifier = keras.saving.load_model(finished_run / artifacts.CLASSIFIER, safe_mode=True)
    probs = classifier.predict(np.random.default_rng(0).normal(size=(5, latent_dim)), verbose=0)
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_the_encoder_reloads_in_a_fresh_process_without_softvq(
    finished_run, tmp_path, python_subprocess
):
    """Plain keras in a new interpreter gives the latents of the full autoencoder."""
    from softvq_keras.data import load

    x_test = load("digits").x_test[:50]
    np.save(tmp_path / "x.npy", x_test)
    code = (
        "import sys, keras, numpy as np\n"
        f"m = keras.saving.load_model({str(finished_run / artifacts.ENCODER)!r}, safe_mode=True)\n"
        f"np.save({str(tmp_path / 'z.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))\n"
        "print('softvq_keras' in sys.modules)\n"
    )
    proc = python_subprocess(code)
    assert proc.stdout.strip() == "False"
    z_reloaded = np.load(tmp_path / "z.npy")

    from softvq_keras import Autoencoder  # noqa: F401  registers the custom layers

    autoencoder = keras.saving.load_model(finished_run / artifacts.AUTOENCODER)
    z_autoencoder = autoencoder.predict(x_test, verbose=0)["latent"]
    assert z_reloaded.shape == (50, read(finished_run, artifacts.CONFIG)["latent_dim"])
    np.testing.assert_allclose(z_reloaded, z_autoencoder, atol=1e-5)
    assert np.std(z_reloaded) > 1e-3  # not a constant output


def test_evaluate_reproduces_metrics_json(finished_run, tmp_path, capsys):
    copy = shutil.copytree(finished_run, tmp_path / "run")
    before = read(copy, artifacts.METRICS)
    assert evaluate_main([str(copy)]) == 0
    after = read(copy, artifacts.METRICS)
    assert_same_scores(after, before, tol=1e-6)
    assert after["final_losses"] == before["final_losses"]
    assert after["timings_s"]["train"] == before["timings_s"]["train"]
    assert "clustering accuracy" in capsys.readouterr().out


def test_evaluate_rejects_an_unfinished_folder(tmp_path, capsys):
    (tmp_path / artifacts.CONFIG).write_text("{}")
    assert evaluate_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a finished run: missing history.json, encoder.keras" in err


def test_the_same_seed_gives_the_same_metrics_after_overwrite(finished_run, tmp_path, small_run):
    """Retraining into a copy with overwrite=True reproduces the run."""
    copy = shutil.copytree(finished_run, tmp_path / "run")
    (copy / artifacts.METRICS).write_text("{}")  # must be replaced
    run("digits", "softvq", out=copy, overwrite=True, **small_run)
    first, second = read(finished_run, artifacts.METRICS), read(copy, artifacts.METRICS)
    assert_same_scores(second, first, tol=1e-6)
    for key, value in first["final_losses"].items():
        assert second["final_losses"][key] == pytest.approx(value, rel=1e-3), key


class Crash(Exception):
    pass


class Interrupt(keras.callbacks.Callback):
    """Stands for a crash right after the first epoch's checkpoint."""

    def on_epoch_end(self, epoch, logs=None):
        raise Crash(f"after epoch {epoch + 1}")


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_an_interrupted_run_resumes_after_its_last_epoch(tmp_path, small_run):
    # 30 updates of 64 on digits' 1,500 training images (24 per epoch) = 2 epochs.
    small_run = {**small_run, "epochs": None, "steps": 30}
    out = tmp_path / "run"
    with pytest.raises(Crash):
        run("digits", "ae", out=out, callbacks=[Interrupt()], **small_run)
    assert checkpoint.finished_epochs(out / artifacts.CHECKPOINT) == 1
    assert len(read(out, artifacts.HISTORY)["epochs"]) == 1
    assert not (out / artifacts.ENCODER).exists() and not (out / artifacts.METRICS).exists()

    with pytest.raises(UsageError, match="unfinished run: add --resume"):
        run("digits", "ae", out=out, **small_run)
    with pytest.raises(UsageError, match=r"cannot resume .*batch_size"):
        run("digits", "ae", out=out, resume=True, **{**small_run, "batch_size": 32})

    recorder = EpochRecorder()
    run("digits", "ae", out=out, resume=True, callbacks=[recorder], **small_run)
    assert recorder.epochs == [1]  # only the second epoch ran
    history = read(out, artifacts.HISTORY)["epochs"]
    assert [e["epoch"] for e in history] == [1, 2]
    # Restored weights: the second epoch goes on from the first one's loss level,
    # well below where a fresh start would be.
    assert history[1]["logs"]["loss"] < history[0]["logs"]["loss"]
    assert read(out, artifacts.METRICS)["epochs_trained"] == 2
    assert read(out, artifacts.CONFIG)["epochs"] == 2
    assert artifacts.missing_files(out) == []
    assert not (out / artifacts.CHECKPOINT).exists()


class CrashAtTrainEnd(keras.callbacks.Callback):
    """Stands for a crash after the last epoch, before anything is exported."""

    def on_train_end(self, logs=None):
        raise Crash("before export")


def test_a_run_interrupted_before_export_resumes_straight_to_export(tmp_path, small_run):
    small_run = {**small_run, "raw_baseline": False}
    out = tmp_path / "run"
    with pytest.raises(Crash):
        run("digits", "vq", out=out, callbacks=[CrashAtTrainEnd()], **small_run)
    assert sorted(p.name for p in out.iterdir()) == [
        artifacts.CHECKPOINT, artifacts.CONFIG, artifacts.HISTORY,
    ]
    recorder = EpochRecorder()
    run("digits", "vq", out=out, resume=True, callbacks=[recorder], **small_run)
    assert recorder.epochs == []  # both epochs were done: no training, only export
    assert artifacts.missing_files(out) == []
    metrics = read(out, artifacts.METRICS)
    assert metrics["epochs_trained"] == 2
    assert "raw" not in metrics and "raw" not in metrics["timings_s"]  # raw_baseline=False
    assert 0 < metrics["codebook_usage"] <= 1


def test_a_nan_loss_stops_the_run_without_export(tmp_path, capsys):
    out = tmp_path / "run"
    code = fit_main([
        "digits", "ae", "--epochs", "2", "--learning-rate", "1e30", "--out", str(out),
        "--verbose", "0", "--kmeans-init", "2", "--probe-epochs", "2",
    ])
    err = capsys.readouterr().err
    assert code == 3
    assert "training diverged: the loss became" in err and "nothing was exported" in err
    exported = {artifacts.ENCODER, artifacts.AUTOENCODER, artifacts.CLASSIFIER,
                artifacts.KMEANS, artifacts.METRICS, artifacts.SAVED_MODEL}
    assert exported.isdisjoint(p.name for p in out.iterdir())


def test_training_diverged_is_raised_to_library_callers(tmp_path, small_run):
    with pytest.raises(TrainingDiverged, match="the loss became"):
        run("digits", "ae", out=tmp_path / "run", learning_rate=1e30, **small_run)


def test_a_backend_other_than_the_imported_one_is_refused(tmp_path, small_run):
    other = "torch" if keras.backend.backend() != "torch" else "jax"
    with pytest.raises(UsageError, match=f"already imported with the {keras.backend.backend()}"):
        run("digits", "ae", out=tmp_path / "run", backend=other, **small_run)
    assert not (tmp_path / "run").exists()


def test_a_failed_write_keeps_the_previous_file_whole(tmp_path):
    target = tmp_path / artifacts.METRICS
    artifacts.write_json(target, {"nmi": 0.5})
    with pytest.raises(TypeError):
        artifacts.write_json(target, {"nmi": object()})  # fails half-way through
    assert json.loads(target.read_text()) == {"nmi": 0.5}
    artifacts.write_npz(tmp_path / artifacts.KMEANS, centroids=np.ones((2, 3), np.float32))
    with np.load(tmp_path / artifacts.KMEANS) as f:
        assert f["centroids"].shape == (2, 3)
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" not in p.name) == [
        artifacts.KMEANS, artifacts.METRICS,
    ]


class CodebookAt(keras.callbacks.Callback):
    """The codebook at the start of every epoch."""

    def __init__(self):
        super().__init__()
        self.codebooks = []

    def on_epoch_begin(self, epoch, logs=None):
        layer = self.model.get_layer("bottleneck")
        self.codebooks.append(keras.ops.convert_to_numpy(layer.codebook).copy())


def test_codebook_options_reach_training_and_config(tmp_path, small_run, capsys):
    # 3 epochs: K-means init before epoch 2, restart checks before epochs 2 and 3.
    seen = CodebookAt()
    out = run("digits", "vq", out=tmp_path / "run", codebook_init="kmeans",
              dead_code_restarts=True, callbacks=[seen], **{**small_run, "epochs": 3})
    config = read(out, artifacts.CONFIG)
    assert config["codebook_init"] == "kmeans" and config["dead_code_restarts"] is True
    printed = capsys.readouterr().out
    assert "CodebookKMeansInit: codebook set to K-means (K=32) of 1500 latents before epoch 2" in printed
    assert printed.count("DeadCodeRestart") <= 2
    first, second, _ = seen.codebooks
    # The uniform init lies in +-sqrt(3/d); K-means centroids of the latents do not.
    limit = (3.0 / config["latent_dim"]) ** 0.5
    assert np.abs(first).max() <= limit + 1e-6
    assert np.abs(second - first).max() > 0.1
    # The run folder is complete and resumes only with the same options.
    assert artifacts.missing_files(out) == []
    with pytest.raises(UsageError, match="nothing to resume"):
        run("digits", "vq", out=out, resume=True, **small_run)


def test_ema_codebook_and_adam_epsilon_reach_training_and_config(tmp_path, small_run):
    """--codebook-update ema moves the codebook without a codebook loss term;
    --adam-epsilon reaches the optimizer and config.json."""
    seen = CodebookAt()

    class Epsilon(keras.callbacks.Callback):  # autoencoder.keras carries no optimizer
        def on_train_begin(self, logs=None):
            self.value = float(self.model.optimizer.epsilon)

    epsilon = Epsilon()
    # Batches of 50 divide digits' 1,500 training images: no partial batch, so the
    # logged epoch means add up exactly (a partial batch is weighted differently).
    out = run("digits", "vq", out=tmp_path / "ema", codebook_update="ema", batch_size=50,
              adam_epsilon=1e-9, callbacks=[seen, epsilon], **{**small_run, "epochs": 2})
    config = read(out, artifacts.CONFIG)
    assert config["bottleneck"]["codebook_update"] == "ema"
    assert config["adam_epsilon"] == pytest.approx(1e-9)
    first, second = seen.codebooks
    assert np.abs(second - first).max() > 1e-4  # EMA assignments happened inside fit
    assert epsilon.value == pytest.approx(1e-9)
    autoencoder = keras.saving.load_model(out / artifacts.AUTOENCODER)
    stats = [w for w in autoencoder.get_layer("bottleneck").weights if "ema" in w.path]
    assert len(stats) == 2 and all(not w.trainable for w in stats)
    # The codebook term is still logged but no longer part of the loss:
    # loss = reconstruction + w * c * commitment (per-epoch means, so linear).
    logs = read(out, artifacts.HISTORY)["epochs"][-1]["logs"]
    w, c = config["bottleneck"]["loss_weight"], config["bottleneck"]["commitment_cost"]
    expected = logs["reconstruction_loss"] + w * c * logs["commitment_loss"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    with_codebook = expected + w * logs["codebook_loss"]
    assert abs(logs["loss"] - with_codebook) > 10 * abs(logs["loss"] - expected)


def test_softvq_weighting_reaches_the_layer_and_its_output(tmp_path, small_run):
    """--softvq-weighting svhn_code builds the SVHN notebook's posterior into the
    saved model: the decoder gets sum_k p_k sigma_k e_k, not sum_k p_k e_k."""
    out = run("digits", "softvq", out=tmp_path / "svhn-code", softvq_weighting="svhn_code",
              **small_run)
    assert read(out, artifacts.CONFIG)["bottleneck"]["weighting"] == "svhn_code"
    autoencoder = keras.saving.load_model(out / artifacts.AUTOENCODER)
    layer = autoencoder.get_layer("bottleneck")
    assert layer.weighting == "svhn_code"
    x = np.random.default_rng(0).uniform(0, 1, (16, 64)).astype("float32")
    probe = keras.Model(autoencoder.input, layer.input)
    z, h = (np.asarray(t) for t in probe.predict(x, verbose=0))
    outputs = layer([z, h])
    probs = np.asarray(outputs["code_probs"], np.float64)
    sigma = np.exp(np.asarray(layer.log_sigma_head(h), np.float64))
    codebook = np.asarray(layer.codebook, np.float64)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(outputs["output"]), (probs * sigma) @ codebook,
                               rtol=1e-4, atol=1e-5)
    assert np.abs((probs * sigma) @ codebook - probs @ codebook).max() > 1e-3
