"""`tfds:NAME`: any tensorflow-datasets image-classification set, streamed.

The prepared local copy (in `data_dir`, else tensorflow-datasets' default
folder) is used when there is one; otherwise it is downloaded and prepared when
the machine is online, and the same clear `DataUnavailableError` as for the
built-in datasets is raised at once when it is not (`SOFTVQ_OFFLINE=1`, or the
server unreachable). Images are read with `builder.as_dataset` and converted
with the same Pillow code as folder images (`softvq_keras.data.images.convert`).
The `train` and `test` splits are used when the set has both; otherwise the
last `test_fraction` of `train` is the test split (tfds split slicing).
"""

import numpy as np

from softvq_keras.data import images
from softvq_keras.data.availability import (
    DataUnavailableError,
    download_refusal,
    import_tensorflow,
    import_tfds,
    offline_message,
    quiet_absl,
)
from softvq_keras.data.images import DataError
from softvq_keras.data.source import ImageSource, custom_info, preprocessing_record

#: Images looked at to decide the default size and channel count.
SHAPE_SAMPLE = 256


class TfdsSource(ImageSource):
    """A prepared tensorflow-datasets builder's splits; see the module docstring."""

    def __init__(self, info, builder, splits, counts):
        super().__init__(info)
        self.builder, self.splits, self.counts = builder, splits, counts
        self._label_cache = {}

    def _count(self, split):
        return self.counts[split]

    def _read(self, split, shuffle=False, seed=0, decode=True):
        import tensorflow_datasets as tfds

        kwargs = {}
        if not decode:
            kwargs["decoders"] = {self._image_key: tfds.decode.SkipDecoding()}
        with quiet_absl():
            return self.builder.as_dataset(
                split=self.splits[split], shuffle_files=shuffle,
                read_config=tfds.ReadConfig(shuffle_seed=seed), **kwargs,
            )

    @property
    def _image_key(self):
        return "image"

    def _labels(self, split):
        if split not in self._label_cache:
            ds = self._read(split, decode=False).map(lambda ex: ex["label"])
            self._label_cache[split] = np.fromiter(
                (int(y) for y in ds.as_numpy_iterator()), dtype=np.int64
            )
        return self._label_cache[split]

    def _raw(self, split, idx):
        wanted = set(int(i) for i in idx)
        out = []
        for i, example in enumerate(self._read(split).as_numpy_iterator()):
            if i in wanted:
                out.append(self._convert(example["image"]))
            if len(out) == len(wanted):
                break
        return np.stack(out)

    def _convert(self, array):
        return images.convert(array, self.info.channels, self.info.image_shape[:2])

    def _reader(self, split, shuffle, seed):
        tf = import_tensorflow()

        info = self.info

        def convert(image):
            raw = self._convert(image).astype(np.float32)
            return raw.reshape(info.input_shape) / info.pixel_max + info.offset

        def read(example):
            x = tf.numpy_function(convert, [example["image"]], tf.float32, stateful=False)
            x.set_shape(info.input_shape)
            return x

        # The files in their stored order, then a 10,000-example buffer shuffled
        # from (seed, epoch) alone: epoch e reads the same order however reached.
        stored = self._read(split)

        def read_epoch(epoch):  # a Python int (see `epochs`)
            ds = stored
            if shuffle:
                ds = ds.shuffle(10_000, seed=int(seed) * 1_000_003 + int(epoch),
                                reshuffle_each_iteration=False)
            return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)

        return read_epoch

    def epochs(self, split, batch_size, seed, first, last, per_epoch=None):
        """As `ImageSource.epochs`. A shuffle's seed cannot be a tensor here, so
        each epoch's pass is built with its own seed and the passes are
        concatenated pairwise (a tree of depth log2(epochs))."""
        tf = import_tensorflow()

        read = self._reader(split, True, seed)
        parts = []
        for epoch in range(first, last):
            ds = read(epoch).batch(batch_size)
            parts.append(per_epoch(ds) if per_epoch is not None else ds)
        if not parts:
            return tf.data.Dataset.range(0).batch(batch_size)
        while len(parts) > 1:
            parts = [a.concatenate(b) for a, b in zip(parts[::2], parts[1::2])] + (
                [parts[-1]] if len(parts) % 2 else [])
        return parts[0].prefetch(tf.data.AUTOTUNE)


def _builder(name, data_dir):
    """The prepared builder of `name`, downloading it when allowed; else raise."""
    spec = f"tfds:{name}"
    tfds = import_tfds(spec, data_dir)
    with quiet_absl():
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # unknown name
            raise DataError(f"{spec}: not a tensorflow-datasets name ({str(e).splitlines()[0]})") from None
        if builder.is_prepared():
            return builder
        reason = download_refusal()
        if reason is None:
            try:
                builder.download_and_prepare()
                return builder
            except Exception as e:
                reason = f"the download failed ({str(e).splitlines()[0]})"
    raise DataUnavailableError(offline_message(spec, data_dir, reason))


def open_tfds(name, data_dir, options, progress=None):
    """The `TfdsSource` of `tfds:NAME` (see `softvq_keras.data.open_source`)."""
    builder = _builder(name, data_dir)
    features = builder.info.features
    if "image" not in features:
        raise DataError(f"tfds:{name} has no 'image' feature; it is not an image dataset")
    labelled = "label" in features and hasattr(features["label"], "names")
    available = set(builder.info.splits.keys())
    if {"train", "test"} <= available:
        splits = {"train": "train", "test": "test"}
    else:
        if "train" not in available:
            raise DataError(f"tfds:{name} has no 'train' split (it has: {', '.join(sorted(available))})")
        pct = int(round(100 * (1 - options.get("test_fraction", 0.2))))
        splits = {"train": f"train[:{pct}%]", "test": f"train[{pct}%:]"}
    counts = {k: int(builder.info.splits[v].num_examples) for k, v in splits.items()}
    probe = TfdsSource(None, builder, splits, counts)
    sizes, grays, first = {}, [], None
    for example in probe._read("train").take(SHAPE_SAMPLE).as_numpy_iterator():
        image = np.asarray(example["image"])
        images.array_channels(image.shape)
        first = first or tuple(image.shape[:2])
        sizes[tuple(image.shape[:2])] = sizes.get(tuple(image.shape[:2]), 0) + 1
        grays.append(images.is_gray(images.to_pil(image)))
    if first is None:
        raise DataError(f"tfds:{name}: the training split is empty")
    names = list(features["label"].names) if labelled else None
    info = custom_info(
        f"tfds:{name}", "tfds", first, all(grays), options, labelled=labelled,
        class_names=names, num_train=counts["train"], num_test=counts["test"],
        source=f"tensorflow-datasets:{name}", split_given="test" in splits.values(),
    )
    stored = np.shape(example["image"])
    one = len(stored) == 2 or stored[-1] == 1
    info.preprocessing = preprocessing_record(sizes, info.image_shape[:2], one != (info.channels == 1))
    return TfdsSource(info, builder, splits, counts)
