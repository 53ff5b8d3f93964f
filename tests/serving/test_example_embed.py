"""examples/embed_encoder.py: another app encodes images with plain Keras."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving_helpers import png_bytes

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "embed_encoder.py"


def test_example_encodes_like_the_run_without_softvq_keras(digits_run, reference,
                                                           digits_images, tmp_path):
    raw, _ = digits_images
    np.save(tmp_path / "batch.npy", raw[:5])
    pixels = np.round(raw[7] * 255 / 16).astype(np.uint8)
    (tmp_path / "digit.png").write_bytes(png_bytes(pixels))
    out = tmp_path / "latents.npy"
    # Run it as another application would, and prove it never imports our package.
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "sys.modules['softvq_keras'] = None; "  # any import of it would fail
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE), str(digits_run),
         str(tmp_path / "batch.npy"), str(tmp_path / "digit.png"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    latents = np.load(out)
    expected = np.concatenate([
        reference.latents(raw[:5]),
        reference.latents(pixels[None].astype(np.float64) / 255 * 16),
    ])
    assert latents.shape == (6, reference.config["latent_dim"])
    np.testing.assert_allclose(latents, expected, atol=1e-5)
    assert proc.stdout.count("image ") == 6 and "saved (6, 16) latents" in proc.stdout


def _bad_inputs(tmp_path):
    """(file, text the one-line error must contain) for input the example refuses."""
    np.save(tmp_path / "wide.npy", np.zeros((5, 10)))
    np.save(tmp_path / "scaled.npy", np.full((2, 8, 8), 200.0))  # 0-255 sent to a 0-16 run
    nan = np.zeros((1, 64))
    nan[0, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "text.npy", np.array([["a"] * 8] * 8))
    np.save(tmp_path / "objects.npy", np.array([1, "x"], dtype=object), allow_pickle=True)
    (tmp_path / "big.png").write_bytes(png_bytes(np.zeros((28, 28))))
    (tmp_path / "notes.png").write_text("not an image")
    return [
        ("wide.npy", "shape (5, 10) is not one image or a batch of images shaped (8, 8) or (64)"),
        ("scaled.npy", "values run from 200 to 200; raw pixels must be 0 to 16"),
        ("nan.npy", "value at [0, 3] is nan: pixels must be finite"),
        ("text.npy", "pixel values must be numbers, got dtype <U1"),
        ("objects.npy", "not a readable .npy array of pixels"),
        ("big.png", "the image is 28x28 pixels, this run takes 8x8"),
        ("notes.png", "not a readable PNG or JPEG image"),
        ("missing.npy", "no such file"),
    ]


def test_example_refuses_bad_input_with_one_line(digits_run, tmp_path):
    for name, message in _bad_inputs(tmp_path):
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE), str(digits_run), str(tmp_path / name)],
            capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
        )
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / name}"), lines
        assert message in lines[0], (name, lines[0])


def test_example_without_pillow_says_so_in_one_line(digits_run, tmp_path):
    """A PNG given where Pillow is not installed: one line naming the package, exit 2."""
    (tmp_path / "digit.png").write_bytes(png_bytes(np.zeros((8, 8))))
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
            "sys.modules['PIL'] = None; "  # as if Pillow were not installed
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE), str(digits_run), str(tmp_path / "digit.png")],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {tmp_path / 'digit.png'}: reading PNG / JPEG files needs Pillow, "
                     "which is not installed: pip install pillow (or give a .npy file of raw "
                     "pixels)"]
