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
