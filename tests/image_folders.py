"""Small generated image folders for the own-images tests (imported by basename).

Every class draws a different pattern (so that labels are learnable) plus
seeded noise; files are PNG or JPEG, grayscale or RGB, of any size.
"""

import numpy as np

CLASSES = ("bars", "blobs", "checks")


def pattern(label, size, rng, channels=1):
    """A uint8 image `(H, W)` or `(H, W, 3)` of class `label` (0, 1, 2)."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    if label == 0:
        base = ((xx // 2) % 2) * 200.0
    elif label == 1:
        base = 220.0 * np.exp(-((yy - height / 2) ** 2 + (xx - width / 2) ** 2) / (0.1 * height * width))
    else:
        base = (((yy // 3) + (xx // 3)) % 2) * 180.0
    image = np.clip(base + rng.normal(0, 20, size=(height, width)), 0, 255)
    if channels == 3:
        tint = np.array([1.0, 0.6 + 0.2 * label, 0.3 + 0.3 * label])
        image = np.clip(image[..., None] * tint, 0, 255)
    return image.astype(np.uint8)


def save(array, path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path)
    return path


def labelled_folder(root, per_class=10, size=(12, 10), channels=1, ext=".png", seed=0,
                    classes=CLASSES):
    """`root/<class>/<i>.<ext>`; returns root."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        for i in range(per_class):
            save(pattern(label, size, rng, channels), root / name / f"{i:03d}{ext}")
    return root


def split_folder(root, train=8, test=4, size=(16, 16), channels=3, ext=".jpg", seed=0,
                 classes=CLASSES[:2]):
    """`root/train/<class>/...` and `root/test/<class>/...`; returns root."""
    labelled_folder(root / "train", train, size, channels, ext, seed, classes)
    labelled_folder(root / "test", test, size, channels, ext, seed + 1, classes)
    return root


def unlabelled_folder(root, count=30, size=(8, 8), seed=0):
    """`root/<i>.png`, no class sub-folders; returns root."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        save(pattern(i % 3, size, rng), root / f"img{i:03d}.png")
    return root


def truncated_png(path):
    """A PNG file cut in half (Pillow cannot decode it)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((12, 10), 128, np.uint8)).save(buffer, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path
