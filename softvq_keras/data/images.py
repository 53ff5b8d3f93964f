"""Image files and arrays brought to one size and channel count (Pillow, no TensorFlow).

Everything that turns a user's image into the uint8 pixels a run trains on lives
here, so that training, evaluation and the service convert the same way:

- `folder_layout(root)`: which files are the training and test images and
  their labels (`folder/<class>/*`, `folder/train|test/<class>/*`, or loose
  images = unlabelled), with a one-line `DataError` for an empty folder, a
  folder with one class, or no image files at all;
- `check_images(paths)`: decodes every file once (before any model is built)
  and reports its size and mode; a corrupt or truncated file raises
  `BadImageError` naming it, or is skipped and counted (`skip_bad=True`);
- `convert(image, channels, size)`: a Pillow image or uint8 array to a uint8
  array `(H, W)` (1 channel) or `(H, W, 3)`, resized bilinearly when its size
  differs.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from softvq_keras.optional import import_optional


def _pil_image():
    """`PIL.Image` (the `train` extra); MissingDependencyError naming it when absent."""
    import_optional("PIL", "train", "reading image files")
    from PIL import Image

    return Image


#: File name endings read as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: Pillow modes that are grayscale already.
GRAY_MODES = ("1", "L", "LA", "La")
#: Pillow modes `convert` turns into 1 or 3 channels of 8 bits.
CONVERTIBLE_MODES = GRAY_MODES + ("P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr")


class DataError(ValueError):
    """The data cannot be used as given; the message is one line for the user."""


class BadImageError(DataError):
    """An image file that cannot be decoded (corrupt or truncated)."""


def is_image_file(path):
    path = Path(path)
    return path.is_file() and not path.name.startswith(".") and (
        path.suffix.lower() in IMAGE_EXTENSIONS
    )


def parse_size(text):
    """`"HxW"` (or one number for a square) -> `(H, W)`; DataError when malformed."""
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"--image-size must be HxW with positive integers, e.g. 64x64; got {text!r}")
    return size


@dataclass
class Split:
    """Image files of one split and their labels (-1 when unlabelled)."""

    paths: list
    labels: list


@dataclass
class FolderLayout:
    """What `folder_layout` found: the splits (test None: split it yourself) and classes."""

    train: Split
    test: Split | None
    class_names: list | None  # None: unlabelled
    notes: list = field(default_factory=list)


def _visible(entries):
    return [p for p in entries if not p.name.startswith(".")]


def _images_under(folder):
    return sorted(str(p) for p in folder.rglob("*") if is_image_file(p))


def _scan(folder):
    """(paths, labels, class_names or None) of one folder of classes or loose images."""
    entries = sorted(_visible(folder.iterdir()))
    if not entries:
        raise DataError(f"folder {str(folder)!r} is empty")
    loose = [str(p) for p in entries if is_image_file(p)]
    classes = [(p.name, _images_under(p)) for p in entries if p.is_dir()]
    classes = [(name, files) for name, files in classes if files]
    if classes and loose:
        raise DataError(
            f"folder {str(folder)!r} mixes class sub-folders ({classes[0][0]!r}, ...) with "
            f"loose images ({Path(loose[0]).name!r}, ...): put every image in a class "
            "sub-folder, or every image directly in the folder to train without labels"
        )
    if loose:
        return loose, [-1] * len(loose), None
    if not classes:
        others = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if not others:
            raise DataError(f"folder {str(folder)!r} is empty (no files in it or its sub-folders)")
        raise DataError(
            f"folder {str(folder)!r} has no image files ({', '.join(IMAGE_EXTENSIONS)}); "
            f"found {len(others)} other file(s), e.g. {others[0].name!r}"
        )
    if len(classes) == 1:
        raise DataError(
            f"folder {str(folder)!r} has one class sub-folder ({classes[0][0]!r}): a labelled "
            "dataset needs at least two classes; put the images directly in the folder to "
            "train without labels"
        )
    paths, labels = [], []
    for label, (_, files) in enumerate(classes):
        paths += files
        labels += [label] * len(files)
    return paths, labels, [name for name, _ in classes]


def folder_layout(root):
    """Find the images of folder `root` and their labels; see the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is not a folder")
    train_dir, test_dir = root / "train", root / "test"
    if not (train_dir.is_dir() and test_dir.is_dir()):
        paths, labels, names = _scan(root)
        return FolderLayout(Split(paths, labels), None, names)
    paths, labels, names = _scan(train_dir)
    test_paths, test_labels, test_names = _scan(test_dir)
    if (names is None) != (test_names is None):
        raise DataError(
            f"{str(train_dir)!r} and {str(test_dir)!r} differ: one has class sub-folders, "
            "the other loose images"
        )
    if names is not None:
        unknown = sorted(set(test_names) - set(names))
        if unknown:
            raise DataError(
                f"{str(test_dir)!r} has classes the training split lacks: {', '.join(unknown[:5])}"
            )
        index = {name: i for i, name in enumerate(names)}
        test_labels = [index[test_names[y]] for y in test_labels]
    return FolderLayout(Split(paths, labels), Split(test_paths, test_labels), names)


def seeded_split(layout, test_fraction, seed):
    """`layout` with a test split drawn from its training images (stratified by label)."""
    if layout.test is not None:
        return layout
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"--test-fraction must be between 0 and 1; got {test_fraction}")
    labels = np.asarray(layout.train.labels)
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = int(round(len(members) * test_fraction))
        take = min(max(take, 1), len(members) - 1)
        test_idx += list(rng.permutation(members)[:take])
    if not test_idx:
        raise DataError(
            f"too few images to split ({len(labels)}): a run needs at least one training "
            "and one test image"
        )
    is_test = np.zeros(len(labels), bool)
    is_test[test_idx] = True
    pick = lambda mask: Split(  # noqa: E731
        [p for p, m in zip(layout.train.paths, mask) if m], labels[mask].tolist()
    )
    return FolderLayout(pick(~is_test), pick(is_test), layout.class_names, layout.notes)


def open_image(path):
    """The decoded Pillow image of `path`; BadImageError when it cannot be decoded."""
    Image = _pil_image()

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy() if image.mode != "P" else image.convert("RGBA")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"cannot read image {str(path)!r} (corrupt or truncated: {e})") from None


def _check_mode(image, where):
    if image.mode not in CONVERTIBLE_MODES:
        raise DataError(
            f"{where} has Pillow mode {image.mode!r} (e.g. 16-bit or float pixels); "
            "only 8-bit grayscale, palette, RGB(A) and CMYK images can be converted to "
            "--channels 1 or 3"
        )


def is_gray(image):
    """True when `image` has one channel, or three equal ones."""
    if image.mode in GRAY_MODES:
        return True
    rgb = np.asarray(image.convert("RGB"))
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))


@dataclass
class ImageCheck:
    """What `check_images` saw: usable paths (in order), their labels, sizes, modes."""

    paths: list
    labels: list
    skipped: list  # paths of unreadable files skipped
    sizes: dict  # (H, W) -> count
    all_gray: bool  # every image one channel, or three equal ones
    one_channel_files: int  # files stored with a one-channel mode


def check_images(paths, labels, skip_bad=False, progress=None):
    """Decode every file once; see the module docstring.

    `progress(done, total)` is called every few hundred files.
    """
    kept, kept_labels, skipped, sizes, all_gray, one_channel = [], [], [], {}, True, 0
    for i, (path, label) in enumerate(zip(paths, labels)):
        if progress is not None and i % 500 == 0:
            progress(i, len(paths))
        try:
            image = open_image(path)
        except BadImageError as e:
            if not skip_bad:
                raise BadImageError(f"{e}; pass --skip-bad-images to skip such files") from None
            skipped.append(path)
            continue
        _check_mode(image, f"image {str(path)!r}")
        size = (image.height, image.width)
        sizes[size] = sizes.get(size, 0) + 1
        all_gray = all_gray and is_gray(image)
        one_channel += image.mode in GRAY_MODES
        kept.append(path)
        kept_labels.append(label)
    if progress is not None:
        progress(len(paths), len(paths))
    return ImageCheck(kept, kept_labels, skipped, sizes, all_gray, one_channel)


def to_pil(array):
    """A uint8 array `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or `(H, W, 4)` as a Pillow image."""
    Image = _pil_image()

    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return Image.fromarray(array, "L")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return Image.fromarray(array, "RGB" if array.shape[-1] == 3 else "RGBA")
    raise DataError(
        f"an image of shape {array.shape} has {array.shape[-1]} channels; --channels "
        "converts 1, 3 or 4 (RGBA) channels"
    )


def convert(image, channels, size):
    """Pillow image or uint8 array -> uint8 `(H, W)` (channels 1) or `(H, W, 3)`.

    Grayscale -> RGB repeats the channel; colour -> grayscale is Pillow's
    ITU-R 601-2 luma; alpha is dropped. `size` `(H, W)` resizes bilinearly
    when the image's differs.
    """
    Image = _pil_image()

    if isinstance(image, np.ndarray):
        image = to_pil(image)
    image = image.convert("L" if channels == 1 else "RGB")
    height, width = size
    if (image.height, image.width) != (height, width):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def array_channels(shape):
    """Channels of an image array shape `(H, W)` / `(H, W, C)`; DataError when unusable."""
    if len(shape) == 2:
        return 1
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        return shape[-1]
    raise DataError(
        f"images of shape {tuple(shape)} cannot be converted to --channels 1 or 3 "
        "(expected (H, W) or (H, W, C) with C = 1, 3 or 4)"
    )
