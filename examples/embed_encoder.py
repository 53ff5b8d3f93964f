"""Encode images with a run's `encoder.keras` in plain Keras, without the service.

    python examples/embed_encoder.py RUN_DIR IMAGES [IMAGES ...] [--out latents.npy]

`IMAGES` are `.npy` files of raw pixels (one image or a batch, shaped like
the dataset stores them: `(N, 28, 28)`, `(N, 784)`, `(N, 32, 32, 3)` ...) or
8-bit PNG files. Prints one line per image (the latent's norm and first
values) and, with `--out`, saves the `(N, latent_dim)` latents.

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


def load_encoder(run_dir):
    """`(encoder, config)` of a run folder: the Keras model and config.json."""
    import keras

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    encoder = keras.saving.load_model(run_dir / "encoder.keras", safe_mode=True)
    return encoder, config


def to_inputs(raw, config):
    """Raw pixels (one image or a batch) to the encoder's float32 input batch."""
    image_shape = tuple(config["image_shape"])
    input_shape = tuple(config["input_shape"])
    x = np.asarray(raw, dtype=np.float32)
    if x.shape in (image_shape, input_shape) or x.size == np.prod(image_shape):
        x = x[None]  # a single image
    x = x.reshape((-1,) + input_shape)
    return x / np.float32(config["pixel_max"]) + np.float32(config["offset"])


def encode(encoder, config, raw, batch_size=256):
    """Latents `(N, latent_dim)` of raw pixels, scaled as in training."""
    return encoder.predict(to_inputs(raw, config), batch_size=batch_size, verbose=0)


def read_images(path, config):
    """Raw pixels from a `.npy` file or an 8-bit PNG (mapped to the dataset's range)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        from PIL import Image

        mode = "RGB" if len(config["image_shape"]) == 3 else "L"
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.float32)
        return pixels[None] / 255.0 * float(config["pixel_max"])
    raw = np.load(path, allow_pickle=False)
    image_shape = tuple(config["image_shape"])
    return raw[None] if raw.shape == image_shape else raw


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder written by python -m training.fit")
    parser.add_argument("images", nargs="+", help=".npy files of raw pixels or PNG files")
    parser.add_argument("--out", help="save the latents here (.npy)")
    args = parser.parse_args(argv)
    encoder, config = load_encoder(args.run_dir)
    x = np.concatenate([to_inputs(read_images(p, config), config) for p in args.images])
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
