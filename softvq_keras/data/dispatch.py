"""`open_source(dataset)`: any DATASET argument to its source kind's `ImageSource`.

A built-in name (`mnist`, `svhn`, `cifar10`, `digits`: `builtin`), a folder of
images (`folder`), an `.npz` file (`npz`) or `tfds:NAME` (`tfds`). This module
only dispatches: each kind lives in its own module and depends on the shared
pieces (`images`, `availability`, `source`), never on this one.
"""

import os
from pathlib import Path

from softvq_keras.data import images
from softvq_keras.data.builtin import open_builtin
from softvq_keras.data.folder import open_folder
from softvq_keras.data.images import DataError
from softvq_keras.data.npz import open_npz
from softvq_keras.data.tfds import open_tfds
from softvq_keras.presets import DATASETS

KINDS = ("builtin", "folder", "npz", "tfds")


def source_kind(dataset):
    """`"builtin" | "tfds" | "npz" | "folder"` for a DATASET argument; DataError otherwise."""
    if dataset in DATASETS:
        return "builtin"
    if str(dataset).startswith("tfds:"):
        return "tfds"
    path = Path(dataset)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise DataError(f"no such .npz file: {str(path)!r}")
        return "npz"
    if path.is_dir():
        return "folder"
    raise DataError(
        f"unknown dataset {str(dataset)!r}: expected a built-in name "
        f"({', '.join(DATASETS)}), a folder of images, an .npz file or tfds:NAME"
    )


def open_source(dataset, data_dir=None, *, image_size=None, channels=None,
                architecture=None, test_fraction=0.2, seed=0, skip_bad=False,
                progress=None):
    """Validate `dataset` and return its `ImageSource`; see the module docstring.

    Args:
        dataset: a built-in name, a folder, an `.npz` path or `tfds:NAME`.
        data_dir: built-ins: the folder holding `NAME.npz`; `tfds:`: the
            tensorflow-datasets data folder.
        image_size: `(H, W)` or `"HxW"` every image is resized to (default:
            the first training image's size).
        channels: 1 or 3 (default: 1 when every image is grayscale).
        architecture: `"mlp"` or `"cnn"` (default: the MLP for one-channel
            images up to 28x28, the CNN otherwise).
        test_fraction: the seeded test split of data without one.
        seed: the seed of that split and of samples.
        skip_bad: skip (and count in `info.skipped`) unreadable image files
            instead of stopping at the first.
        progress: `callable(str)` told what long checks are about to start.

    Raises:
        DataError: bad data or arguments (a one-line message).
        softvq_keras.data.DataUnavailableError: no copy and no download.
    """
    if isinstance(image_size, str):
        image_size = images.parse_size(image_size)
    options = dict(
        image_size=tuple(image_size) if image_size else None, channels=channels,
        architecture=architecture, test_fraction=test_fraction, seed=seed, skip_bad=skip_bad,
    )
    kind = source_kind(dataset)
    if kind == "builtin":
        return open_builtin(dataset, data_dir or os.environ.get("SOFTVQ_DATA_DIR"), options)
    if kind == "npz":
        return open_npz(Path(dataset), options)
    if kind == "folder":
        return open_folder(Path(dataset), options, progress)
    return open_tfds(dataset[len("tfds:"):], data_dir, options, progress)
