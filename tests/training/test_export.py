"""`python -m training.export`: ONNX, LiteRT, OpenVINO and SavedModel exports, each
checked in its own runtime; `autoencoder.keras` without the optimizer state.

One export of every format, of a copy of the session's finished digits run, in a
subprocess (the TensorFlow backend), is shared by the module; the refusals run
without a conversion (bad folder, format, missing package) or with the
converters replaced by stand-ins (a mismatch), so they take seconds.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COPIED = ("config.json", "history.json", "encoder.keras", "autoencoder.keras",
          "classifier.keras", "kmeans.npz", "metrics.json")


def _export(args, code_prefix="", timeout=600):
    """`python -m training.export ARGS` (optionally after `code_prefix` patches)."""
    code = ("import sys; " + code_prefix
            + "from training.export import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT),
                                                     os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=str(REPO_ROOT),
                          env=env, capture_output=True, text=True, timeout=timeout)


def _copy_run(source, target):
    target.mkdir(parents=True)
    for name in COPIED:
        shutil.copy2(source / name, target / name)
    return target


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    """(run folder copy, finished export process, manifest) of `--format all`."""
    run = _copy_run(finished_run, tmp_path_factory.mktemp("export") / "digits-softvq")
    proc = _export([run, "--format", "all"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run, proc, json.loads((run / "export" / "manifest.json").read_text())


EXPECTED_FILES = {
    "encoder.onnx", "classifier.onnx", "autoencoder.onnx", "encoder.tflite",
    "classifier.tflite", "encoder.xml", "encoder.bin", "classifier.xml", "classifier.bin",
    "saved_model/",
}


def test_every_format_is_written_checked_and_described(exported):
    run, proc, manifest = exported
    export = run / "export"
    assert set(manifest["files"]) == EXPECTED_FILES
    assert {p.name + ("/" if p.is_dir() else "") for p in export.iterdir()} == (
        EXPECTED_FILES | {"manifest.json"})
    assert not list(run.glob("export.*"))  # no temporary folder left
    assert set(manifest["formats"]) == {"onnx", "litert", "openvino", "saved_model"}
    assert manifest["check"] == {"images": 256, "split": "test", "tolerance": 1e-4,
                                 "batches": [256, 1], "reference": manifest["check"]["reference"]}
    for name, entry in manifest["files"].items():
        path = export / name.rstrip("/")
        size = (sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                if path.is_dir() else path.stat().st_size)
        assert entry["bytes"] == size > 0, name
        measured = ([entry] if "max_abs_diff" in entry
                    else list(entry.get("differences", {}).values()))
        for found in measured:
            assert 0 <= found["max_abs_diff"] <= 1e-4, (name, found)
            if found["compared"] == "probabilities":
                assert found["same_classes"] == 256, name
    # every encoder/classifier of every format is measured, OpenVINO's .bin points at its .xml
    assert manifest["files"]["encoder.bin"]["weights_of"] == "encoder.xml"
    assert manifest["formats"]["openvino"]["compile_config"] == {
        "INFERENCE_PRECISION_HINT": "f32"}
    assert manifest["formats"]["onnx"]["models"] == {
        "encoder": "encoder.onnx", "classifier": "classifier.onnx",
        "autoencoder": "autoencoder.onnx"}
    for fmt in ("onnx", "litert", "openvino", "saved_model"):
        assert f"{fmt}: " in proc.stdout and "written and checked in" in proc.stdout


def test_the_manifest_is_enough_to_scale_cluster_and_name(exported):
    run, _, manifest = exported
    config = json.loads((run / "config.json").read_text())
    assert manifest["input"]["shape"] == [None, 64] and manifest["input"]["dtype"] == "float32"
    assert manifest["input"]["pixel_max"] == 16 and manifest["input"]["offset"] == 0
    assert manifest["input"]["image_shape"] == [8, 8] and manifest["input"]["channels"] == 1
    assert manifest["class_names"] == [str(i) for i in range(10)]
    assert manifest["latent_dim"] == config["latent_dim"] == 16
    with np.load(run / "kmeans.npz") as f:
        # exactly the stored float32 centroids (JSON floats round-trip them)
        np.testing.assert_array_equal(np.asarray(manifest["kmeans"]["centroids"], np.float32),
                                      f["centroids"])
        assert manifest["kmeans"]["cluster_to_label"] == f["cluster_to_label"].tolist()
    assert manifest["run"] == {"dataset": "digits", "model": "softvq", "backend": "jax",
                               "epochs": 2}
    assert {"tf2onnx", "onnxruntime", "ai-edge-litert", "openvino"} <= set(
        manifest["exported_with"])


def test_the_exports_agree_with_the_keras_models_run_here(exported, finished_run):
    """Independently of the export's own check: this process's backend (JAX in CI)."""
    import keras
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter
    from sklearn.datasets import load_digits

    run, _, _ = exported
    x = (load_digits().images[:50].reshape(50, 64) / 16.0).astype(np.float32)
    encoder = keras.saving.load_model(finished_run / "encoder.keras")
    classifier = keras.saving.load_model(finished_run / "classifier.keras")
    z = encoder.predict(x, verbose=0)
    p = classifier.predict(z, verbose=0)
    session = onnxruntime.InferenceSession(str(run / "export" / "encoder.onnx"),
                                           providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], z,
                               rtol=0, atol=1e-5)
    interpreter = Interpreter(model_path=str(run / "export" / "classifier.tflite"))
    entry = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(entry["index"], [50, 16])
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], z)
    interpreter.invoke()
    probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(probabilities, p, rtol=0, atol=1e-5)
    assert (probabilities.argmax(1) == p.argmax(1)).all()


@pytest.fixture
def stand_ins(monkeypatch):
    """Run the export in this process (whatever its backend) with stand-ins for the
    converters (7-byte files) and the runtimes (the `.keras` models themselves, `offset[0]`
    added to the encoder's latents): its own logic (check, manifest, atomic folder, exit
    codes) without a conversion. Returns the `offset` list to change."""
    from training import export

    offset, models, load = [0.0], {}, export.load_models

    def write(fmt, model, folder, name):
        files = export.files_of(fmt, name)
        for file in files:
            (Path(folder) / file).write_bytes(b"stand-in")
        return files

    def runner(fmt, path, endpoint=None):
        name = Path(path).name.split(".")[0]
        return lambda x: models[name].predict(x, verbose=0) + (
            offset[0] if name == "encoder" else 0)

    monkeypatch.setattr(export, "use_tensorflow", lambda: None)
    monkeypatch.setattr(export, "load_models", lambda *a: models.update(load(*a)) or models)
    monkeypatch.setattr(export, "write", write)
    monkeypatch.setattr(export, "runner", runner)
    return offset


def test_a_second_export_replaces_its_format_and_keeps_the_others(exported, stand_ins):
    from training.export import main

    run, _, before = exported
    assert main([str(run), "--format", "litert"]) == 0
    after = json.loads((run / "export" / "manifest.json").read_text())
    assert set(after["files"]) == set(before["files"])
    for name, entry in after["files"].items():
        if name.endswith(".tflite"):  # the stand-in's
            assert entry["bytes"] == 8 and entry["max_abs_diff"] < 1e-6, name
        else:
            assert entry == before["files"][name], name
    assert (run / "export" / "encoder.onnx").stat().st_size == before["files"][
        "encoder.onnx"]["bytes"]
    assert (run / "export" / "encoder.tflite").read_bytes() == b"stand-in"


def test_a_mismatching_export_stops_with_exit_3_and_leaves_export_alone(exported, stand_ins,
                                                                        capsys):
    from training.export import main

    run, _, _ = exported
    manifest_before = (run / "export" / "manifest.json").read_bytes()
    stand_ins[0] = 2e-3
    assert main([str(run), "--format", "onnx"]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("python -m training.export: error: onnx: encoder.onnx latents "
                               "differ from encoder.keras by up to 0.002 (> 0.0001)")
    assert "nothing was written to export/" in lines[0]
    assert (run / "export" / "manifest.json").read_bytes() == manifest_before
    assert (run / "export" / "encoder.onnx").stat().st_size > 1000  # not the stand-in
    assert not list(run.glob("export.*"))


def test_a_run_without_labels_exports_encoder_and_centroids(own_image_runs, stand_ins,
                                                             tmp_path):
    from training.export import main

    _, source, _ = own_image_runs["loose"]
    run = tmp_path / "loose"
    run.mkdir()
    for file in set(COPIED) - {"classifier.keras"}:
        shutil.copy2(source / file, run / file)
    assert main([str(run), "--format", "onnx,litert"]) == 0
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"encoder.onnx", "autoencoder.onnx", "encoder.tflite"}
    assert manifest["labelled"] is False and manifest["class_names"] is None
    assert manifest["kmeans"]["cluster_to_label"] is None
    assert len(manifest["kmeans"]["centroids"]) == 4  # --clusters 4
    assert manifest["formats"]["litert"]["models"] == {"encoder": "encoder.tflite"}


def test_refusals_exit_2_with_one_line(tmp_path, finished_run):
    unfinished = _copy_run(finished_run, tmp_path / "unfinished")
    (unfinished / "metrics.json").unlink()
    cases = [
        ([tmp_path / "nowhere"], "is not a run folder (no config.json)"),
        ([unfinished], "is not a finished run (missing metrics.json)"),
        ([finished_run, "--format", "coreml"],
         "--format: unknown export format 'coreml'; choose from onnx, litert, openvino, "
         "saved_model or all"),
        ([finished_run, "--data-dir", tmp_path / "none"], "is not a directory"),
    ]
    for args, message in cases:
        proc = _export(args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)
    assert not (finished_run / "export").exists()


def test_a_missing_package_stops_with_the_pip_command(finished_run):
    proc = _export([finished_run, "--format", "onnx,openvino"],
                   code_prefix="sys.modules['openvino'] = None; ")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        "python -m training.export: error: exporting onnx, openvino needs openvino, not "
        "installed: pip install 'softvq-keras[export]' (or: pip install openvino)")


def test_fit_refuses_an_export_it_could_not_make_before_training(tmp_path):
    from training.fit import main

    out = tmp_path / "never"
    assert main(["digits", "softvq", "--export", "onnx,tflite", "--out", str(out)]) == 2
    assert not out.exists()


def test_fit_reports_a_failed_export_after_the_run(finished_run, tmp_path, monkeypatch,
                                                   capsys):
    """The run is finished and summarised, then the export's error and exit code."""
    from training import cli
    from training.export import ExportFailed, export_in_subprocess

    unfinished = _copy_run(finished_run, tmp_path / "run")
    (unfinished / "metrics.json").unlink()
    with pytest.raises(ExportFailed) as failed:  # the real command, on a folder it refuses
        export_in_subprocess(unfinished, "onnx")
    assert failed.value.code == 2 and "is not a finished run" in str(failed.value)

    def train_and_export(settings):
        raise ExportFailed("the run in X is finished, but its export failed: onnx: ...", 3)

    monkeypatch.setattr(cli, "train_and_export", train_and_export)
    code = cli.main(["digits", "softvq", "--export", "onnx", "--out", str(finished_run)])
    out, err = capsys.readouterr()
    assert code == 3
    assert f"Wrote {finished_run}/" in out and "clustering accuracy" in out
    assert err.strip().splitlines() == [
        "python -m training.fit: error: the run in X is finished, but its export failed: "
        "onnx: ..."]


def test_autoencoder_keras_holds_no_optimizer_state(finished_run):
    """The finished run's autoencoder.keras: weights only (about a third of before)."""
    import h5py
    import keras

    from softvq_keras import Autoencoder  # noqa: F401 - registers the custom objects

    path = finished_run / "autoencoder.keras"
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        with archive.open("model.weights.h5") as f, h5py.File(f, "r") as weights:
            groups = set(weights.keys())
            stored = []
            weights.visititems(lambda name, obj: stored.append(obj.size * obj.dtype.itemsize)
                               if isinstance(obj, h5py.Dataset) else None)
    assert "optimizer" not in groups and not config.get("compile_config")
    model = keras.saving.load_model(path)
    parameters = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
    # the variables and nothing else: Adam's two moments would add 2x the trainable ones
    assert parameters <= sum(stored) <= parameters * 1.01
    assert path.stat().st_size < 1.05 * parameters
    encoder = keras.saving.load_model(finished_run / "encoder.keras")
    x = np.random.default_rng(0).random((4, 64)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0)["latent"],
                               encoder.predict(x, verbose=0), rtol=0, atol=1e-6)


def test_a_cnn_run_exports(own_image_runs, tmp_path):
    """The CNN (with its sub-pixel decoder) of an RGB folder run, checked on the folder's
    own test images."""
    _, source, _ = own_image_runs["rgb"]
    run = _copy_run(source, tmp_path / "rgb")
    proc = _export([run, "--format", "onnx"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    files = manifest["files"]
    assert files["encoder.onnx"]["max_abs_diff"] <= 1e-4
    assert files["autoencoder.onnx"]["max_abs_diff"] <= 1e-4
    assert files["classifier.onnx"]["same_classes"] == manifest["check"]["images"]
    assert manifest["input"]["shape"] == [None, 16, 16, 3]
    assert manifest["input"]["offset"] == -0.5 and manifest["input"]["channels"] == 3
