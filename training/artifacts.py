"""The run folder (docs/ARTIFACTS.md): file names and atomic writers.

Every writer puts the data in a temporary name inside the run folder and then
`os.replace`s it onto the final name, so a file that exists is whole. Nothing
here imports Keras: a model is saved through its own `save` / `export`.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

CONFIG = "config.json"
HISTORY = "history.json"
ENCODER = "encoder.keras"
AUTOENCODER = "autoencoder.keras"
CLASSIFIER = "classifier.keras"
KMEANS = "kmeans.npz"
METRICS = "metrics.json"
SAVED_MODEL = "saved_model"
CHECKPOINT = "checkpoint"  # BackupAndRestore's folder while a run is unfinished
EXPORT = "export"  # `python -m training.export`: ONNX, LiteRT, OpenVINO, SavedModel

#: Files every finished run has (plus `saved_model/` under TensorFlow).
FINISHED_RUN_FILES = (CONFIG, HISTORY, ENCODER, AUTOENCODER, CLASSIFIER, KMEANS, METRICS)

#: Everything a run may write; `--overwrite` removes exactly these.
RUN_ENTRIES = (*FINISHED_RUN_FILES, SAVED_MODEL, CHECKPOINT, EXPORT)


def temporary_path(path):
    """`dir/name.tmp.ext` next to `path` (keeps the suffix Keras insists on)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.tmp{path.suffix}")


def to_builtin(value):
    """Numpy scalars and arrays, tuples and Paths as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_builtin(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path, data):
    """Write `data` as indented JSON, atomically."""
    path = Path(path)
    tmp = temporary_path(path)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(to_builtin(data), f, indent=2, sort_keys=True, allow_nan=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_npz(path, **arrays):
    """`np.savez` to `path`, atomically (no pickled objects)."""
    path = Path(path)
    tmp = temporary_path(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def save_keras_model(model, path, optimizer=True):
    """`model.save` to `*.tmp.keras`, then rename onto `path`.

    `optimizer=False` saves an uncompiled copy of a compiled model: its
    configuration and variables without the optimizer's state (Adam's two
    moments triple the file: 32 MB instead of 11 MB for the digits MLP) and
    without a compile configuration, for inference and export. The training
    state `--resume` needs lives in `checkpoint/`, not here.
    """
    path = Path(path)
    tmp = temporary_path(path)
    if not optimizer and getattr(model, "optimizer", None) is not None:
        model = inference_copy(model)
    model.save(tmp)
    os.replace(tmp, path)
    return path


def inference_copy(model):
    """An uncompiled model of `model`'s class and configuration with its variables."""
    copy = type(model).from_config(model.get_config())
    if len(copy.variables) != len(model.variables):
        raise ValueError(f"cannot copy {model.name!r}: {len(copy.variables)} variables "
                         f"rebuilt from its configuration, {len(model.variables)} in it")
    for target, source in zip(copy.variables, model.variables):
        target.assign(source.value)
    return copy


def export_saved_model(model, path):
    """`model.export` (TF SavedModel) to a temporary folder, then swap it in."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    old = path.with_name(f"{path.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    model.export(str(tmp), verbose=False)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def remove_run_entries(run_dir):
    """Delete what a previous run wrote (only the names a run writes)."""
    run_dir = Path(run_dir)
    for name in RUN_ENTRIES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for leftover in run_dir.glob("*.tmp*"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()


def missing_files(run_dir):
    """Names of `FINISHED_RUN_FILES` absent from `run_dir`."""
    return [name for name in FINISHED_RUN_FILES if not (Path(run_dir) / name).is_file()]


def remove_checkpoint(run_dir):
    """Delete `checkpoint/`: the run is finished (its metrics.json is written)."""
    shutil.rmtree(Path(run_dir) / CHECKPOINT, ignore_errors=True)


def file_sha256(path):
    """The SHA-256 hex digest of the file at `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
