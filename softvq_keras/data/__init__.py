"""Image data for training and evaluation: the paper's datasets and a user's own images.

Two entry points:

- `load(name, data_dir=None)`: a built-in dataset (`mnist`, `svhn`,
  `cifar10`, `digits`) as in-memory float32 `Splits`, scaled as the paper says
  (a local `.npz` first, then tensorflow-datasets, never a hang offline);
- `open_source(dataset, ...)`: any DATASET argument of `training.fit` (a
  built-in name, a folder of images, an `.npz` file, `tfds:NAME`), validated
  with one-line `DataError`s, as an `ImageSource` read through `tf.data`.

The package, by layer (imports run downward only):

| module | what |
|---|---|
| `dispatch` | `open_source`: a DATASET argument to its kind's module |
| `builtin`, `folder`, `npz`, `tfds` | one module per source kind |
| `source` | the shared types: `SourceInfo`, `ImageSource`, `ArraySource` |
| `images` | image files and arrays to uint8 pixels (Pillow), `DataError` |
| `availability` | TensorFlow / tensorflow-datasets imports, offline errors |

Importing it imports neither TensorFlow nor tensorflow-datasets.
"""

from softvq_keras.data.availability import DataUnavailableError, import_tensorflow
from softvq_keras.data.builtin import Splits, load, load_raw, preprocess
from softvq_keras.data.dispatch import KINDS, open_source, source_kind
from softvq_keras.data.images import BadImageError, DataError
from softvq_keras.data.source import (
    VARIANCE_SAMPLE,
    ArraySource,
    ImageSource,
    SourceInfo,
    epoch_order,
)

__all__ = [
    "KINDS",
    "VARIANCE_SAMPLE",
    "ArraySource",
    "BadImageError",
    "DataError",
    "DataUnavailableError",
    "ImageSource",
    "SourceInfo",
    "Splits",
    "epoch_order",
    "import_tensorflow",
    "load",
    "load_raw",
    "open_source",
    "preprocess",
    "source_kind",
]
