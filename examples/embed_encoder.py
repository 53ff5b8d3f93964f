"""Encode images with a run's `encoder.keras` in plain Keras, without the service.

    python examples/embed_encoder.py RUN_DIR IMAGES [IMAGES ...] [--out latents.npy]

`IMAGES` are `.npy` files of raw pixels (one image or a batch, shaped like
the dataset stores them: `(N, 28, 28)`, `(N, 784)`, `(N, 32, 32, 3)` ...) or
8-bit PNG / JPEG files of the run's image size. Prints one line per image (the
latent's norm and first values) and, with `--out`, saves the `(N,
latent_dim)` latents.

Bad input is refused before the model runs, with one line naming the file
and what was wrong (exit code 2): `check_images` is the part to copy into
your application. It checks what `encoder.predict` would not: the dtype
(numbers, not strings or objects), the shape (one image or a batch of images
shaped like the run's), finiteness (no NaN/inf) and the range (raw pixels 0 to
`pixel_max`, not values already scaled).

This is what another application needs and nothing more: Keras, NumPy (and
Pillow for PNGs). The encoder is made only of built-in Keras layers, so
`keras.saving.load_model(..., safe_mode=True)` loads it without importing
`softvq_keras`; the scaling applied in training, `raw / pixel_max + offset`,
comes from the run's `config.json` (docs/ARTIFACTS.md).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """Input the encoder must not be given; the message says what and why."""


def load_config(run_dir):
    """config.json of a run folder (docs/ARTIFACTS.md), or `InputError`."""
    run_dir = Path(run_dir)
    for name in ("config.json", "encoder.keras"):
        if not (run_dir / name).is_file():
            raise InputError(f"{run_dir} has no {name}: give a run folder written by "
                             "python -m training.fit (see docs/ARTIFACTS.md)")
    return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))


def load_encoder(run_dir):
    """`(encoder, config)` of a run folder: the Keras model and config.json."""
    import keras

    config = load_config(run_dir)
    encoder = keras.saving.load_model(Path(run_dir) / "encoder.keras", safe_mode=True)
    return encoder, config


def _shape_text(shape):
    return "(" + ", ".join(str(n) for n in shape) + ")"


def check_images(raw, config, name="images"):
    """Raw pixels as a float32 batch `(N,) + image_shape`, or `InputError`.

    Accepts one image or a batch, each shaped like the run's images
    (`image_shape`, e.g. (28, 28)), like the encoder input (`input_shape`,
    e.g. (784,)) or flat; values must be finite numbers from 0 to `pixel_max`.
    """
    image_shape = tuple(config["image_shape"])
    input_shape = tuple(config["input_shape"])
    flat = (int(np.prod(image_shape)),)
    pixel_max = float(config["pixel_max"])
    accepted = list(dict.fromkeys([image_shape, input_shape, flat]))
    shapes = " or ".join(_shape_text(s) for s in accepted)
    x = np.asarray(raw)
    if x.dtype.kind not in "iuf":
        raise InputError(f"{name}: pixel values must be numbers, got dtype {x.dtype}")
    if x.shape in accepted:
        x = x[None]  # a single image
    if x.ndim < 2 or tuple(x.shape[1:]) not in accepted:
        raise InputError(f"{name}: shape {_shape_text(x.shape)} is not one image or a batch "
                         f"of images shaped {shapes} (this run's images are "
                         f"{_shape_text(image_shape)})")
    if len(x) == 0:
        raise InputError(f"{name}: no images (shape {_shape_text(x.shape)})")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise InputError(f"{name}: value at {list(index)} is {x[index]}: pixels must be "
                         "finite")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > pixel_max:
        raise InputError(f"{name}: values run from {low:g} to {high:g}; raw pixels must be "
                         f"0 to {pixel_max:g} as the dataset stores them (not already scaled)")
    return x.reshape((len(x),) + image_shape)


def to_inputs(raw, config, name="images"):
    """Checked raw pixels (one image or a batch) to the encoder's float32 input batch."""
    x = check_images(raw, config, name).reshape((-1,) + tuple(config["input_shape"]))
    return x / np.float32(config["pixel_max"]) + np.float32(config["offset"])


def encode(encoder, config, raw, batch_size=256):
    """Latents `(N, latent_dim)` of raw pixels, scaled as in training."""
    return encoder.predict(to_inputs(raw, config), batch_size=batch_size, verbose=0)


def read_images(path, config):
    """Raw pixels from a `.npy` file, or a PNG / JPEG (mapped to the dataset's range)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    image_shape = tuple(config["image_shape"])
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError:
            raise InputError(f"{path}: reading PNG / JPEG files needs Pillow, which is not "
                             "installed: pip install pillow (or give a .npy file of raw "
                             "pixels)") from None

        mode = "RGB" if len(image_shape) == 3 else "L"
        try:
            with Image.open(path) as image:
                if image.size != (image_shape[1], image_shape[0]):
                    raise InputError(
                        f"{path}: the image is {image.size[0]}x{image.size[1]} pixels, this "
                        f"run takes {image_shape[1]}x{image_shape[0]} (resize it first)")
                pixels = np.asarray(image.convert(mode), dtype=np.float32)
        except InputError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{path}: not a readable PNG or JPEG image ({e})") from None
        return pixels[None] / 255.0 * float(config["pixel_max"])
    if path.suffix.lower() != ".npy":
        raise InputError(f"{path}: expected a .npy, .png, .jpg or .jpeg file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:  # pickled objects are refused, not loaded
        raise InputError(f"{path}: not a readable .npy array of pixels ({e})") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder written by python -m training.fit")
    parser.add_argument("images", nargs="+",
                        help=".npy files of raw pixels, or PNG / JPEG files")
    parser.add_argument("--out", help="save the latents here (.npy)")
    args = parser.parse_args(argv)
    try:  # every input is checked before Keras is even imported
        config = load_config(args.run_dir)
        x = np.concatenate([to_inputs(read_images(p, config), config, name=p)
                            for p in args.images])
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    encoder, _ = load_encoder(args.run_dir)
    latents = encoder.predict(x, batch_size=256, verbose=0)
    for i, z in enumerate(latents):
        head = " ".join(f"{v:+.3f}" for v in z[:4])
        print(f"image {i}: |z| = {np.linalg.norm(z):.4f}  z[:4] = {head}")
    if args.out:
        np.save(args.out, latents)
        print(f"saved {latents.shape} latents to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
