"""Any image dataset as a stream: built-in names, folders, `.npz` files, `tfds:NAME`.

`open_source(dataset, ...)` validates the data (one-line `DataError`s, before
any model is built), decides one image size, channel count, architecture and
scaling (`SourceInfo`), and returns an `ImageSource` whose splits are read as
`tf.data` pipelines (decode, convert, resize, scale, shuffle, batch, prefetch):

- built-in names (`mnist`, `svhn`, `cifar10`, `digits`): `softvq_keras.data`,
  in memory as before, with their paper scaling;
- an `.npz` file (`x_train`, `x_test` uint8, optionally `y_train`, `y_test`):
  in memory (an `.npz` is read whole anyway);
- a folder (see `softvq_keras.images.folder_layout`) and `tfds:NAME`: streamed
  from disk, never loaded whole; every folder image is decoded once up front
  to validate it.

Bounded samples (`ImageSource.sample`) serve what needs pixels in memory: the
pixel variance (`VARIANCE_SAMPLE` images of a streamed source), the raw-pixel
baseline and the codebook callbacks. TensorFlow is imported only when a
pipeline is built, never by `import softvq_keras`.
"""

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from softvq_keras import images
from softvq_keras.images import DataError
from softvq_keras.presets import CUSTOM_PRESETS, DATASETS, class_names, dataset_info

#: Images a streamed source's pixel variance is estimated from.
VARIANCE_SAMPLE = 10_000
#: Largest side (pixels) of single-channel images the MLP is the default for.
MLP_MAX_SIDE = 28
KINDS = ("builtin", "folder", "npz", "tfds")


@dataclass
class SourceInfo:
    """What a run records about its data (config.json, docs/ARTIFACTS.md)."""

    dataset: str  # as given
    kind: str  # one of KINDS
    image_shape: tuple  # one raw image: (H, W) or (H, W, 3)
    input_shape: tuple  # what the model takes
    channels: int
    pixel_max: float
    offset: float
    architecture: str  # "mlp" or "cnn"
    preset: str  # the hyperparameter preset (softvq_keras.presets)
    labelled: bool
    class_names: list | None
    num_train: int
    num_test: int
    source: str
    preprocessing: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # unreadable files skipped
    split_given: bool = True  # False: the test split was drawn here (test_fraction, seed)

    @property
    def num_classes(self):
        return len(self.class_names) if self.labelled else None

    def to_config(self):
        d = asdict(self)
        d.pop("skipped")
        d["image_shape"], d["input_shape"] = list(self.image_shape), list(self.input_shape)
        d["num_classes"] = self.num_classes
        return d


def import_tensorflow():
    """`import tensorflow`, its C++ start-up chatter (oneDNN INFO lines) silenced.

    Those lines are written to the process's stderr by native code at import
    time, so stderr's file descriptor is pointed at /dev/null for the import
    only. Without TensorFlow it raises `MissingDependencyError` (an ImportError)
    naming the `train` extra.
    """
    import sys

    from softvq_keras.optional import import_optional

    if sys.modules.get("tensorflow") is not None:
        return sys.modules["tensorflow"]
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        tensorflow = import_optional("tensorflow", "train", "a tf.data input pipeline")
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
    return tensorflow


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


def decide_shape(size, all_gray, image_size=None, channels=None, architecture=None):
    """(image_shape, input_shape, channels, architecture) for a user's data."""
    if channels not in (None, 1, 3):
        raise DataError(f"--channels must be 1 or 3; got {channels}")
    if architecture not in (None, "mlp", "cnn"):
        raise DataError(f"--architecture must be mlp or cnn; got {architecture!r}")
    height, width = image_size or size
    channels = channels or (1 if all_gray else 3)
    architecture = architecture or (
        "mlp" if channels == 1 and max(height, width) <= MLP_MAX_SIDE else "cnn"
    )
    if architecture == "cnn" and (height % 16 or width % 16):
        near = "x".join(str(max(16, 16 * int(s / 16 + 0.5))) for s in (height, width))
        if image_size:
            raise DataError(
                f"--image-size {height}x{width}: the CNN needs sides that are multiples "
                f"of 16; the nearest valid size is {near}"
            )
        raise DataError(
            f"the images are {height}x{width}; the CNN needs sides that are multiples of "
            f"16: pass --image-size {near} to resize them (or --architecture mlp)"
        )
    image_shape = (height, width) if channels == 1 else (height, width, 3)
    input_shape = (
        (math.prod(image_shape),) if architecture == "mlp" else (height, width, channels)
    )
    return image_shape, input_shape, channels, architecture


def canonical_order(raw, labels=None):
    """Indices sorting images by their pixel bytes (and label): storage order drops out."""
    keys = [
        hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()
        + (f":{int(labels[i])}" if labels is not None else "")
        for i, x in enumerate(raw)
    ]
    return np.argsort(np.asarray(keys), kind="stable")


class ImageSource:
    """One dataset's splits; see the module docstring. Build with `open_source`."""

    def __init__(self, info):
        self.info = info

    # Subclasses: _count, _labels, _raw(split, indices) -> uint8 array, _pipeline
    def labels(self, split):
        """Labels of `split` ("train" / "test") as int64, in pipeline order; None unlabelled."""
        return self._labels(split) if self.info.labelled else None

    def scale(self, raw):
        """uint8 images `(N,) + image_shape` -> float32 `(N,) + input_shape`."""
        x = np.asarray(raw, dtype=np.float32).reshape((len(raw),) + tuple(self.info.input_shape))
        return x / np.float32(self.info.pixel_max) + np.float32(self.info.offset)

    def sample(self, split, n, seed=0):
        """At most `n` images of `split` (scaled) and their labels (None unlabelled).

        A seeded subset when the split is larger, always in `canonical_order`,
        so the same images give the same arrays whichever way they are stored.
        """
        count = self._count(split)
        idx = np.arange(count)
        if n < count:
            idx = np.sort(np.random.default_rng(seed).permutation(count)[:n])
        raw, y = self._raw(split, idx), self.labels(split)
        y = None if y is None else y[idx]
        order = canonical_order(raw, y)
        return self.scale(raw[order]), (None if y is None else y[order])

    def pixel_variance(self, seed=0):
        """Variance of the scaled training pixels (of a sample when streamed)."""
        x, _ = self.sample("train", VARIANCE_SAMPLE, seed)
        return float(np.var(x, dtype=np.float64))

    def dataset(self, split, batch_size, shuffle=False, seed=0):
        """`tf.data.Dataset` of scaled float32 batches of `split` (labels: `labels`).

        Unshuffled, the order is that of `labels(split)`; shuffled, every
        epoch is reshuffled from `seed`.
        """
        tf = import_tensorflow()

        ds = self._pipeline(split, shuffle, seed)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class ArraySource(ImageSource):
    """Images held as uint8 arrays (built-in datasets and `.npz` files)."""

    def __init__(self, info, arrays, variance_exact=True):
        super().__init__(info)
        self.arrays = arrays  # {"train": (x, y or None), "test": (x, y or None)}
        self._variance_exact = variance_exact

    def _count(self, split):
        return len(self.arrays[split][0])

    def _labels(self, split):
        return np.asarray(self.arrays[split][1], dtype=np.int64).reshape(-1)

    def _raw(self, split, idx):
        return self.arrays[split][0][idx]

    def pixel_variance(self, seed=0):
        if not self._variance_exact:
            return super().pixel_variance(seed)
        return float(np.var(self.scale(self.arrays["train"][0]), dtype=np.float64))

    def _pipeline(self, split, shuffle, seed):
        tf = import_tensorflow()

        raw = tf.constant(self.arrays[split][0])
        scale = lambda x: tf.reshape(  # noqa: E731
            tf.cast(x, tf.float32) / self.info.pixel_max + self.info.offset,
            self.info.input_shape,
        )
        ds = tf.data.Dataset.range(len(self.arrays[split][0]))
        if shuffle:
            ds = ds.shuffle(self._count(split), seed=seed, reshuffle_each_iteration=True)
        return ds.map(lambda i: scale(tf.gather(raw, i)), num_parallel_calls=tf.data.AUTOTUNE)


class FolderSource(ImageSource):
    """A folder of image files, decoded with Pillow inside a `tf.data` pipeline."""

    def __init__(self, info, files):
        super().__init__(info)
        self.files = files  # {"train": (paths, labels), "test": (paths, labels)}

    def _count(self, split):
        return len(self.files[split][0])

    def _labels(self, split):
        return np.asarray(self.files[split][1], dtype=np.int64)

    def load(self, path):
        """One file as uint8 pixels of the run's shape."""
        size = self.info.image_shape[:2]
        return images.convert(images.open_image(path), self.info.channels, size)

    def _raw(self, split, idx):
        paths = self.files[split][0]
        return np.stack([self.load(paths[i]) for i in idx])

    def _pipeline(self, split, shuffle, seed):
        tf = import_tensorflow()

        info = self.info
        paths = self.files[split][0]

        def decode(path):
            raw = self.load(path.decode() if isinstance(path, bytes) else str(path))
            return raw.astype(np.float32).reshape(info.input_shape) / info.pixel_max + info.offset

        def read(path):
            x = tf.numpy_function(decode, [path], tf.float32, stateful=False)
            x.set_shape(info.input_shape)
            return x

        ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths))
        if shuffle:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def _preprocessing(sizes, target, converted):
    common = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {
        "resized": any(tuple(s) != tuple(target) for s in sizes),
        "source_sizes": [list(s) for s, _ in common],
        "channels_converted": bool(converted),
    }


def _custom_info(dataset, kind, size, all_gray, options, **rest):
    image_shape, input_shape, channels, architecture = decide_shape(
        size, all_gray, options.get("image_size"), options.get("channels"),
        options.get("architecture"),
    )
    return SourceInfo(
        dataset=str(dataset), kind=kind, image_shape=image_shape, input_shape=input_shape,
        channels=channels, pixel_max=255.0, offset=0.0 if architecture == "mlp" else -0.5,
        architecture=architecture, preset=CUSTOM_PRESETS[architecture], **rest,
    )


def _open_builtin(dataset, data_dir, options):
    from softvq_keras import data

    for flag in ("image_size", "channels", "architecture"):
        if options.get(flag) is not None:
            raise DataError(
                f"--{flag.replace('_', '-')} applies to folders, .npz files and tfds: "
                f"datasets, not to the built-in {dataset!r} (its paper settings are fixed)"
            )
    d = dataset_info(dataset)
    (x_tr, y_tr, x_te, y_te), where = data.load_raw(dataset, data_dir)
    shape = tuple(d.image_shape)
    info = SourceInfo(
        dataset=dataset, kind="builtin", image_shape=shape, input_shape=tuple(d.input_shape),
        channels=shape[-1] if len(shape) == 3 else 1, pixel_max=d.pixel_max, offset=d.offset,
        architecture=d.architecture, preset=dataset, labelled=True,
        class_names=class_names(dataset), num_train=len(x_tr), num_test=len(x_te), source=where,
        preprocessing=_preprocessing({shape[:2]: 1}, shape[:2], False),
    )
    x_tr, x_te = x_tr.reshape((-1,) + shape), x_te.reshape((-1,) + shape)
    return ArraySource(info, {"train": (x_tr, y_tr), "test": (x_te, y_te)})


def _open_folder(root, options, progress):
    layout = images.folder_layout(root)
    split_given = layout.test is not None
    layout = images.seeded_split(
        layout, options.get("test_fraction", 0.2), options.get("seed", 0)
    )
    skip = options.get("skip_bad", False)
    checks = {}
    for split in ("train", "test"):
        part = getattr(layout, split)
        if progress:
            progress(f"Checking {len(part.paths):,} {split} image files (each decoded once)")
        checks[split] = images.check_images(part.paths, part.labels, skip_bad=skip)
        if not checks[split].paths:
            raise DataError(
                f"no readable {split} images in {str(root)!r} "
                f"({len(checks[split].skipped)} skipped as unreadable)"
            )
    sizes = {}
    for c in checks.values():
        for s, n in c.sizes.items():
            sizes[s] = sizes.get(s, 0) + n
    first = images.open_image(checks["train"].paths[0])
    info = _custom_info(
        root, "folder", (first.height, first.width),
        all(c.all_gray for c in checks.values()), options,
        labelled=layout.class_names is not None, class_names=layout.class_names,
        num_train=len(checks["train"].paths), num_test=len(checks["test"].paths),
        source=str(root), skipped=checks["train"].skipped + checks["test"].skipped,
        split_given=split_given,
    )
    total = sum(len(c.paths) for c in checks.values())
    one = sum(c.one_channel_files for c in checks.values())
    converted = one < total if info.channels == 1 else one > 0
    info.preprocessing = _preprocessing(sizes, info.image_shape[:2], converted)
    return FolderSource(
        info, {s: (checks[s].paths, checks[s].labels) for s in ("train", "test")}
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
        return _open_builtin(dataset, data_dir or os.environ.get("SOFTVQ_DATA_DIR"), options)
    if kind == "npz":
        from softvq_keras.npz_source import open_npz

        return open_npz(Path(dataset), options)
    if kind == "folder":
        return _open_folder(Path(dataset), options, progress)
    from softvq_keras.tfds_source import open_tfds

    return open_tfds(dataset[len("tfds:"):], data_dir, options, progress)
