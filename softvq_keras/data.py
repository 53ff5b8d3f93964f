"""Dataset loading: a local copy first, then tensorflow-datasets, never a hang.

`load(name)` returns a `Splits` of float32 arrays scaled as the paper says
(MNIST and digits in [0, 1], flattened; SVHN and CIFAR-10 in [-0.5, 0.5],
32x32x3) and integer labels 0-9. Where the raw pixels come from, in order:

1. `<data_dir>/<name>.npz` with `x_train, y_train, x_test, y_test` (uint8),
   where `data_dir` is the argument or else `$SOFTVQ_DATA_DIR`; for SVHN also
   the canonical `train_32x32.mat` / `test_32x32.mat` there (label 10 is 0).
2. `digits`: scikit-learn's bundled 8x8 digits (nothing to download), kept at
   8x8, values 0-16, split 1,500 train / 297 test, stratified, seed 0.
3. tensorflow-datasets: the prepared copy if there is one, else a download.
   With `SOFTVQ_OFFLINE=1`, or when the download server cannot be reached in a
   few seconds, the loader stops with `DataUnavailableError` saying how to
   provide the `.npz` instead of retrying for minutes.
"""

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softvq_keras.presets import dataset_info

DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class DataUnavailableError(RuntimeError):
    """The dataset has no local copy and cannot be downloaded right now."""


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""

    @property
    def pixel_variance(self):
        """Variance of the training pixels (the reconstruction-loss scale)."""
        return float(np.var(self.x_train, dtype=np.float64))


def preprocess(name, raw):
    """Scale raw pixels of dataset `name` (`(N,) + image_shape` or flat) to inputs.

    `raw / pixel_max + offset`, float32, reshaped to `(N,) + input_shape`.
    """
    info = dataset_info(name)
    x = np.asarray(raw, dtype=np.float32)
    x = x.reshape((x.shape[0],) + tuple(info.input_shape))
    return x / np.float32(info.pixel_max) + np.float32(info.offset)


def _offline_message(name, data_dir, reason):
    where = (
        f"There is no local copy in {str(data_dir)!r}."
        if data_dir
        else "There is no local copy: neither --data-dir nor SOFTVQ_DATA_DIR names a folder."
    )
    if str(name).startswith("tfds:"):
        return (
            f"Dataset {name!r} is not available: {reason}. {where} Run once with internet "
            "access so tensorflow-datasets can download and prepare it (or pass --data-dir "
            "FOLDER naming a tensorflow-datasets folder that holds it); a folder of images "
            "or an .npz file works offline."
        )
    extra = (
        " For SVHN the canonical train_32x32.mat and test_32x32.mat files in "
        "that folder work too."
        if name == "svhn"
        else ""
    )
    return (
        f"Dataset {name!r} is not available: {reason}. {where} To use it offline, put "
        f"{name}.npz (np.savez with uint8 arrays x_train, y_train, x_test, y_test and "
        "labels 0-9) in a folder and pass --data-dir FOLDER or set SOFTVQ_DATA_DIR=FOLDER; "
        "or run once with internet access so tensorflow-datasets can download and prepare "
        f"it.{extra} The 'digits' dataset needs nothing downloaded."
    )


def _read_npz(path):
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)}.")
        return tuple(f[k] for k in ("x_train", "y_train", "x_test", "y_test"))


def _read_svhn_mat(folder):
    from scipy.io import loadmat

    def one(split):
        m = loadmat(str(Path(folder) / f"{split}_32x32.mat"))
        x = np.transpose(m["X"], (3, 0, 1, 2))  # (32, 32, 3, N) -> (N, 32, 32, 3)
        y = m["y"].reshape(-1).astype(np.int64) % 10  # label 10 is digit 0
        return x, y

    return one("train") + one("test")


def _local_copy(name, data_dir):
    if not data_dir:
        return None
    folder = Path(data_dir)
    if (folder / f"{name}.npz").is_file():
        return _read_npz(folder / f"{name}.npz"), str(folder / f"{name}.npz")
    if name == "svhn" and all(
        (folder / f"{s}_32x32.mat").is_file() for s in ("train", "test")
    ):
        return _read_svhn_mat(folder), str(folder / "*_32x32.mat")
    return None


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, d.target, train_size=1500, stratify=d.target, random_state=0
    )
    return (x_tr, y_tr, x_te, y_te), "sklearn.datasets.load_digits"


def _reachable(host=DOWNLOAD_HOST, timeout=3.0):
    try:
        socket.create_connection(host, timeout=timeout).close()
        return True
    except OSError:
        return False


def _tfds(name, data_dir):
    try:
        from softvq_keras.optional import import_optional
        from softvq_keras.sources import import_tensorflow

        import_tensorflow()
        tfds = import_optional("tensorflow_datasets", "train", "a tensorflow-datasets dataset")
    except ImportError as e:
        raise DataUnavailableError(
            _offline_message(name, data_dir, str(e).rstrip("."))
        ) from None
    tfds_name = dataset_info(name).tfds_name

    def as_arrays(download):
        from softvq_keras.tfds_source import quiet_absl

        with quiet_absl():
            train, test = tfds.load(
                tfds_name, split=["train", "test"], batch_size=-1, as_supervised=True,
                download=download,
            )
        train, test = tfds.as_numpy(train), tfds.as_numpy(test)
        return (train[0], train[1], test[0], test[1])

    try:
        return as_arrays(download=False), f"tensorflow-datasets:{tfds_name}"
    except Exception:  # not prepared locally: try to download
        pass
    if os.environ.get("SOFTVQ_OFFLINE") == "1":
        raise DataUnavailableError(
            _offline_message(name, data_dir, "SOFTVQ_OFFLINE=1 forbids downloads")
        )
    if not _reachable():
        raise DataUnavailableError(
            _offline_message(name, data_dir, "the download server is unreachable")
        )
    try:
        return as_arrays(download=True), f"tensorflow-datasets:{tfds_name}"
    except Exception as e:
        raise DataUnavailableError(
            _offline_message(name, data_dir, f"the download failed ({e})")
        ) from e


def load_raw(name, data_dir=None):
    """Raw `(x_train, y_train, x_test, y_test)` as stored, and their source."""
    info = dataset_info(name)
    data_dir = data_dir or os.environ.get("SOFTVQ_DATA_DIR") or None
    if data_dir and not Path(data_dir).is_dir():
        raise FileNotFoundError(f"Data directory {data_dir!r} does not exist.")
    found = _local_copy(name, data_dir)
    if found is None:
        found = _digits() if name == "digits" else _tfds(name, data_dir)
    arrays, source = found
    x_tr, y_tr, x_te, y_te = arrays
    for split, x in (("train", x_tr), ("test", x_te)):
        if int(np.prod(x.shape[1:])) != int(np.prod(info.image_shape)):
            raise ValueError(
                f"{source}: {split} images have shape {x.shape[1:]}; expected "
                f"{info.image_shape} for {name}."
            )
    return (x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)), source


def load(name, data_dir=None):
    """Load dataset `name` scaled for training; see the module docstring."""
    (x_tr, y_tr, x_te, y_te), source = load_raw(name, data_dir)
    return Splits(
        preprocess(name, x_tr),
        y_tr.reshape(-1),
        preprocess(name, x_te),
        y_te.reshape(-1),
        source,
    )
