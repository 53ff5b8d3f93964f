"""The built-in datasets (mnist, svhn, cifar10, digits): a local copy, then tensorflow-datasets.

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

`open_builtin` wraps the same arrays as an `ArraySource` for `open_source`.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softvq_keras.data.availability import (
    DataUnavailableError,
    download_refusal,
    import_tfds,
    offline_message,
    quiet_absl,
)
from softvq_keras.data.images import DataError
from softvq_keras.data.source import ArraySource, SourceInfo, preprocessing_record
from softvq_keras.presets import class_names, dataset_info


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


def _tfds(name, data_dir):
    tfds = import_tfds(name, data_dir)
    tfds_name = dataset_info(name).tfds_name

    def as_arrays(download):
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
    refusal = download_refusal()
    if refusal:
        raise DataUnavailableError(offline_message(name, data_dir, refusal))
    try:
        return as_arrays(download=True), f"tensorflow-datasets:{tfds_name}"
    except Exception as e:
        raise DataUnavailableError(
            offline_message(name, data_dir, f"the download failed ({e})")
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


def open_builtin(dataset, data_dir, options):
    """The `ArraySource` of a built-in dataset (see `softvq_keras.data.open_source`)."""
    for flag in ("image_size", "channels", "architecture"):
        if options.get(flag) is not None:
            raise DataError(
                f"--{flag.replace('_', '-')} applies to folders, .npz files and tfds: "
                f"datasets, not to the built-in {dataset!r} (its paper settings are fixed)"
            )
    d = dataset_info(dataset)
    (x_tr, y_tr, x_te, y_te), where = load_raw(dataset, data_dir)
    shape = tuple(d.image_shape)
    info = SourceInfo(
        dataset=dataset, kind="builtin", image_shape=shape, input_shape=tuple(d.input_shape),
        channels=shape[-1] if len(shape) == 3 else 1, pixel_max=d.pixel_max, offset=d.offset,
        architecture=d.architecture, preset=dataset, labelled=True,
        class_names=class_names(dataset), num_train=len(x_tr), num_test=len(x_te), source=where,
        preprocessing=preprocessing_record({shape[:2]: 1}, shape[:2], False),
    )
    x_tr, x_te = x_tr.reshape((-1,) + shape), x_te.reshape((-1,) + shape)
    return ArraySource(info, {"train": (x_tr, y_tr), "test": (x_te, y_te)})
