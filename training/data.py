"""The data of one run: its `ImageSource`, and what training and evaluation read from it.

`open_data(dataset, data_dir, options)` opens any DATASET form
(`softvq_keras.data.open_source`: a built-in name, a folder, an `.npz` file,
`tfds:NAME`) and turns its one-line `DataError` (and an unavailable copy) into
the trainer's `UsageError`, before any model is built. `RunData` then gives:

- `train_epochs`: the shuffled, batched, prefetched `tf.data` pipeline of
  the training split for epochs `first..last-1`, the order of epoch `e` a
  function of the seed and `e` alone (a resumed run reads what the
  uninterrupted one read);
- `predict(model, split)`: a model's outputs on a whole split, in `labels`
  order; `batches(split)`: the split as NumPy batches, for statistics that
  accumulate (reconstruction error, codebook usage);
- `sample(split, n)`: at most `n` scaled images and their labels, for what
  needs pixels in memory (the raw-pixel baseline, the codebook callbacks).

Arrays (built-in datasets, `.npz` files) are held in memory, scaled, as before;
folders and `tfds:` sets are streamed from disk and never held whole: only the
latents of a split (`N x latent_dim`) and bounded samples are. Built-in
datasets keep their storage order everywhere (the paper's protocol and earlier
results are unchanged); the samples of the others are in the source's
canonical order, so the same images give the same arrays however they are
stored (an `.npz` file and a folder of the same PNGs give the same raw row).
"""

from pathlib import Path

import numpy as np

from training.settings import UsageError

#: Batch size of `predict` and `batches`.
PREDICT_BATCH = 1024
#: Images per split the raw-pixel baseline of a streamed source is computed on.
RAW_SAMPLE = 10_000


def data_kind(dataset):
    """`"builtin" | "folder" | "npz" | "tfds"` of a DATASET argument; `UsageError` otherwise."""
    from softvq_keras.data import DataError, source_kind

    try:
        return source_kind(dataset)
    except DataError as e:
        raise UsageError(str(e)) from None


def import_tensorflow():
    """`import tensorflow` with its C++ start-up lines silenced (`softvq_keras.data`)."""
    from softvq_keras.data import import_tensorflow as _import

    return _import()


def source_options(s):
    """`open_source` keyword arguments from `FitSettings` (or a config's data options)."""
    return dict(
        image_size=s.image_size, channels=s.channels, architecture=s.architecture,
        test_fraction=s.test_fraction, seed=s.seed, skip_bad=s.skip_bad_images,
    )


def open_data(dataset, data_dir=None, progress=None, **options):
    """`RunData` of `dataset`; `UsageError` (one line) for bad or unavailable data."""
    from softvq_keras.data import DataUnavailableError
    from softvq_keras.data import DataError, open_source

    try:
        return RunData(open_source(dataset, data_dir, progress=progress, **options))
    except (DataError, DataUnavailableError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


def training_pipeline(x, batch_size, seed, first=0, last=1, per_epoch=None):
    """`tf.data`: for each epoch `first..last-1`, the indices of `x` in that
    epoch's order (`softvq_keras.data.epoch_order`: seed and epoch alone),
    batched, gathered; then prefetched. No batch spans two epochs.

    Shuffling indices rather than images keeps the shuffle buffer small.
    `per_epoch`: a function applied to each epoch's batches (e.g. a shard).
    """
    from softvq_keras.data import epoch_order

    tf = import_tensorflow()
    images, count = tf.constant(x), len(x)

    def one(epoch):
        ds = (
            tf.data.Dataset.from_tensor_slices(epoch_order(count, seed, epoch))
            .batch(batch_size)
            .map(lambda idx: tf.gather(images, idx), num_parallel_calls=tf.data.AUTOTUNE)
        )
        return per_epoch(ds) if per_epoch is not None else ds

    return tf.data.Dataset.range(first, last).flat_map(one).prefetch(tf.data.AUTOTUNE)


def open_run_data(config, data_dir=None, progress=None):
    """The `training.data.RunData` a run was trained on, reopened from its config.json."""
    dataset = config["dataset"]
    if config.get("dataset_path") and not Path(dataset).exists():
        dataset = config["dataset_path"]  # a relative path, from another folder
    options = config.get("data_options") or {}
    return open_data(
        dataset, data_dir or config.get("data_dir"), progress,
        image_size=options.get("image_size"), channels=options.get("channels"),
        architecture=options.get("architecture"),
        test_fraction=options.get("test_fraction", 0.2), seed=int(config["seed"]),
        skip_bad=options.get("skip_bad_images", False),
    )


class RunData:
    """One run's splits; see the module docstring. Build with `open_data`."""

    def __init__(self, source):
        from softvq_keras.data import ArraySource

        self.source = source
        self.info = source.info
        self.in_memory = isinstance(source, ArraySource)
        self._scaled = {}

    @property
    def labelled(self):
        return self.info.labelled

    def count(self, split):
        return self.info.num_train if split == "train" else self.info.num_test

    def labels(self, split):
        """int64 labels of `split` in pipeline order; None without labels."""
        return self.source.labels(split)

    def x(self, split):
        """The whole scaled split (in-memory sources only)."""
        if split not in self._scaled:
            self._scaled[split] = self.source.scale(self.source.arrays[split][0])
        return self._scaled[split]

    @property
    def pixel_variance(self):
        if "pixel_variance" not in self._scaled:
            self._scaled["pixel_variance"] = self.source.pixel_variance()
        return self._scaled["pixel_variance"]

    def train_epochs(self, batch_size, seed, first, last, per_epoch=None):
        """The training batches of epochs `first..last-1`, each epoch in the order
        of (`seed`, epoch) alone, prefetched (`per_epoch`: see `training_pipeline`)."""
        if not self.in_memory:
            return self.source.epochs("train", batch_size, seed, first, last, per_epoch)
        return training_pipeline(self.x("train"), batch_size, seed, first, last, per_epoch)

    def predict(self, model, split):
        """`model.predict` on the whole split (streamed for folders and tfds: sets)."""
        inputs = self.x(split) if self.in_memory else self.source.dataset(split, PREDICT_BATCH)
        return model.predict(inputs, batch_size=PREDICT_BATCH if self.in_memory else None,
                             verbose=0)

    def batches(self, split):
        """The split as scaled float32 NumPy batches, in `labels` order."""
        if self.in_memory:
            x = self.x(split)
            for start in range(0, len(x), PREDICT_BATCH):
                yield x[start:start + PREDICT_BATCH]
            return
        yield from self.source.dataset(split, PREDICT_BATCH).as_numpy_iterator()

    def sample(self, split, n, seed=0):
        """`(x, y, whole)`: at most `n` scaled images of `split`, labels (None
        unlabelled), and whether that is the whole split. Built-in datasets:
        a seeded subset in storage order (the whole split when it fits)."""
        count = self.count(split)
        if self.info.kind != "builtin":
            x, y = self.source.sample(split, n, seed)
            return x, y, n >= count
        x, y = self.x(split), self.labels(split)
        if n < count:
            idx = np.sort(np.random.default_rng(seed).permutation(count)[:n])
            x, y = x[idx], y[idx]
        return x, y, n >= count

    def raw_sample(self, split, seed=0):
        """The raw-pixel baseline's images: the whole split in memory, else `RAW_SAMPLE`."""
        return self.sample(split, self.count(split) if self.in_memory else RAW_SAMPLE, seed)
