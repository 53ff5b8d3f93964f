"""An `.npz` file of a user's images: `x_train`, `x_test` (uint8), optionally `y_train`, `y_test`.

Read whole (an `.npz` is loaded whole anyway) and validated with one-line
`DataError`s: no `x_train`, not uint8, not image-shaped, channels that cannot
be converted, labels that do not fit. Without `x_test` a seeded test split of
`test_fraction` is drawn; without `y_train` the run has no labels.
"""

import numpy as np

from softvq_keras.data import images
from softvq_keras.data.images import DataError
from softvq_keras.data.source import ArraySource, custom_info, preprocessing_record


def _split_arrays(x, y, test_fraction, seed):
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"--test-fraction must be between 0 and 1; got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = min(max(int(round(len(x) * test_fraction)), 1), len(x) - 1)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    pick = lambda idx: (x[idx], None if y is None else y[idx])  # noqa: E731
    return pick(train), pick(test)


def open_npz(path, options):
    """The `ArraySource` of an `.npz` file (see `softvq_keras.data.open_source`)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {str(path)!r} as an .npz file ({e})") from None
    if "x_train" not in arrays:
        raise DataError(
            f"{str(path)!r} has no x_train array (it has: {', '.join(sorted(arrays)) or 'nothing'}); "
            "expected x_train, x_test (uint8 images) and optionally y_train, y_test"
        )
    for key in ("x_train", "x_test"):
        x = arrays.get(key)
        if x is None:
            continue
        if x.dtype != np.uint8:
            raise DataError(f"{str(path)!r}: {key} is {x.dtype}; expected uint8 pixels 0-255")
        if x.ndim not in (3, 4) or len(x) == 0:
            raise DataError(
                f"{str(path)!r}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) images"
            )
        images.array_channels(x.shape[1:])
    labelled = "y_train" in arrays
    if labelled and "x_test" in arrays and "y_test" not in arrays:
        raise DataError(f"{str(path)!r} has y_train but no y_test")
    y_tr = arrays["y_train"].reshape(-1).astype(np.int64) if labelled else None
    train = (arrays["x_train"], y_tr)
    if "x_test" in arrays:
        y_te = arrays["y_test"].reshape(-1).astype(np.int64) if labelled else None
        test = (arrays["x_test"], y_te)
    else:
        train, test = _split_arrays(*train, options.get("test_fraction", 0.2), options.get("seed", 0))
        options["split_drawn"] = True
    names = None
    if labelled:
        for key, (x, y) in (("train", train), ("test", test)):
            if len(y) != len(x) or y.min() < 0:
                raise DataError(
                    f"{str(path)!r}: y_{key} must hold one label >= 0 per image "
                    f"({len(y)} labels for {len(x)} images)"
                )
        num_classes = int(max(train[1].max(), test[1].max())) + 1
        if len(np.unique(train[1])) < 2:
            raise DataError(
                f"{str(path)!r}: y_train has one class; a labelled dataset needs at least two "
                "(leave out y_train and y_test to train without labels)"
            )
        names = [str(i) for i in range(num_classes)]
    first = train[0]
    sizes = {tuple(first.shape[1:3]): len(first)}
    sizes[tuple(test[0].shape[1:3])] = sizes.get(tuple(test[0].shape[1:3]), 0) + len(test[0])
    stored = [images.array_channels(x.shape[1:]) for x in (train[0], test[0])]
    all_gray = all(c == 1 for c in stored) or all(
        c == 3 and np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2])
        for c, x in zip(stored, (train[0][:1000], test[0][:1000]))
    )
    info = custom_info(
        path, "npz", tuple(first.shape[1:3]), all_gray, options, labelled=labelled,
        class_names=names, num_train=len(train[0]), num_test=len(test[0]), source=str(path),
        split_given=not options.get("split_drawn", False),
    )
    converted = any((c == 1) != (info.channels == 1) for c in stored)
    info.preprocessing = preprocessing_record(sizes, info.image_shape[:2], converted)
    result = {}
    for key, (x, y) in (("train", train), ("test", test)):
        if tuple(x.shape[1:]) != tuple(info.image_shape):
            same = x.ndim == 4 and x.shape[-1] == 1 and tuple(x.shape[1:3]) == info.image_shape
            x = x.reshape(x.shape[:3]) if same else np.stack(
                [images.convert(im, info.channels, info.image_shape[:2]) for im in x]
            )
        result[key] = (x, y)
    return ArraySource(info, result, variance_exact=True)
