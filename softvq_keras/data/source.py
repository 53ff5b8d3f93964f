"""The types every source kind shares: `SourceInfo`, `ImageSource`, `ArraySource`.

A source kind (`builtin`, `folder`, `npz`, `tfds`: one module each in this
package) validates its data and returns an `ImageSource` whose splits are read
as `tf.data` pipelines (decode, convert, resize, scale, shuffle, batch,
prefetch). `SourceInfo` is what a run records about its data; `decide_shape`
and `custom_info` decide one image size, channel count, architecture and
scaling for a user's data.

Bounded samples (`ImageSource.sample`) serve what needs pixels in memory: the
pixel variance (`VARIANCE_SAMPLE` images of a streamed source), the raw-pixel
baseline and the codebook callbacks. TensorFlow is imported only when a
pipeline is built, never by `import softvq_keras`.
"""

import hashlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from softvq_keras.data.availability import import_tensorflow
from softvq_keras.data.images import DataError
from softvq_keras.presets import CUSTOM_PRESETS

#: Images a streamed source's pixel variance is estimated from.
VARIANCE_SAMPLE = 10_000
#: Largest side (pixels) of single-channel images the MLP is the default for.
MLP_MAX_SIDE = 28


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


def epoch_order(count, seed, epoch):
    """int64 tensor: a permutation of `range(count)` that depends only on
    `seed` and `epoch` (ints or scalar tensors): a stateless shuffle."""
    tf = import_tensorflow()

    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=key)


class ImageSource:
    """One dataset's splits; see the module docstring. Build with `open_source`."""

    def __init__(self, info):
        self.info = info

    # Subclasses: _count, _labels, _raw(split, indices) -> uint8 array,
    # _reader(split, shuffle, seed) -> (epoch -> tf.data.Dataset of images)
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

    def dataset(self, split, batch_size, shuffle=False, seed=0, epoch=0):
        """`tf.data.Dataset` of scaled float32 batches of `split` (labels: `labels`).

        Unshuffled, the order is that of `labels(split)`; shuffled, one pass in
        the order of epoch `epoch` (see `epochs`).
        """
        tf = import_tensorflow()

        ds = self._reader(split, shuffle, seed)(epoch)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def epochs(self, split, batch_size, seed, first, last, per_epoch=None):
        """One shuffled pass of `split` per epoch `first..last-1`, as one
        `tf.data.Dataset` of batches (no batch spans two epochs).

        The order of epoch `e` depends only on `seed` and `e`, so epoch `e` of
        a run resumed at `e` reads what epoch `e` of an uninterrupted run read.
        `per_epoch`: a function applied to each epoch's batches (e.g. a shard).
        """
        tf = import_tensorflow()

        read = self._reader(split, True, seed)

        def one(epoch):
            ds = read(epoch).batch(batch_size)
            return per_epoch(ds) if per_epoch is not None else ds

        return tf.data.Dataset.range(first, last).flat_map(one).prefetch(tf.data.AUTOTUNE)


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

    def _reader(self, split, shuffle, seed):
        tf = import_tensorflow()

        raw = tf.constant(self.arrays[split][0])
        scale = lambda x: tf.reshape(  # noqa: E731
            tf.cast(x, tf.float32) / self.info.pixel_max + self.info.offset,
            self.info.input_shape,
        )
        count = self._count(split)

        def read(epoch):
            ds = (tf.data.Dataset.from_tensor_slices(epoch_order(count, seed, epoch)) if shuffle
                  else tf.data.Dataset.range(count))
            return ds.map(lambda i: scale(tf.gather(raw, i)), num_parallel_calls=tf.data.AUTOTUNE)

        return read


def preprocessing_record(sizes, target, converted):
    """What config.json records of the conversion: resized?, the commonest sizes, converted?"""
    common = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {
        "resized": any(tuple(s) != tuple(target) for s in sizes),
        "source_sizes": [list(s) for s, _ in common],
        "channels_converted": bool(converted),
    }


def custom_info(dataset, kind, size, all_gray, options, **rest):
    """The `SourceInfo` of a user's data (folder, `.npz`, tfds) from its first image's size."""
    image_shape, input_shape, channels, architecture = decide_shape(
        size, all_gray, options.get("image_size"), options.get("channels"),
        options.get("architecture"),
    )
    return SourceInfo(
        dataset=str(dataset), kind=kind, image_shape=image_shape, input_shape=input_shape,
        channels=channels, pixel_max=255.0, offset=0.0 if architecture == "mlp" else -0.5,
        architecture=architecture, preset=CUSTOM_PRESETS[architecture], **rest,
    )


