"""A folder of image files: `FOLDER/CLASS/*`, `FOLDER/train|test/CLASS/*`, or loose images.

`open_folder` decodes every file once up front to validate it (one-line
`DataError`s, or skipped and counted with `skip_bad`), decides the run's image
shape (`softvq_keras.data.source.custom_info`) and returns a `FolderSource`,
streamed from disk through Pillow inside a `tf.data` pipeline, never loaded
whole. The layouts are those of `softvq_keras.data.images.folder_layout`.
"""

import numpy as np

from softvq_keras.data import images
from softvq_keras.data.availability import import_tensorflow
from softvq_keras.data.images import DataError
from softvq_keras.data.source import ImageSource, custom_info, epoch_order, preprocessing_record


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

    def _reader(self, split, shuffle, seed):
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

        names, count = tf.constant(paths), len(paths)

        def read_epoch(epoch):
            order = tf.gather(names, epoch_order(count, seed, epoch)) if shuffle else names
            return tf.data.Dataset.from_tensor_slices(order).map(
                read, num_parallel_calls=tf.data.AUTOTUNE)

        return read_epoch


def open_folder(root, options, progress=None):
    """The `FolderSource` of folder `root` (see `softvq_keras.data.open_source`)."""
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
    info = custom_info(
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
    info.preprocessing = preprocessing_record(sizes, info.image_shape[:2], converted)
    return FolderSource(
        info, {s: (checks[s].paths, checks[s].labels) for s in ("train", "test")}
    )
