"""examples/embed_onnx.py and embed_litert.py: an app without Keras gives the service's answers.

The session's digits run (the one the server serves) is exported once to ONNX
and LiteRT (`python -m training.export`, a copy of the folder); each example
then classifies and clusters PNGs in a fresh interpreter that records which
modules it imported, and its answers are compared with `/classify_png` and
`/cluster_png` of the real server.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from serving_helpers import png_bytes

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
#: Modules an app embedding an export must not need.
HEAVY = ("keras", "tensorflow", "jax", "torch", "softvq_keras", "training", "serving")
#: Runs an example as `python examples/X.py ...` would, then reports the heavy
#: modules imported, as JSON on the last line of stderr.
WRAPPER = (
    "import json, runpy, sys; script = sys.argv[1]; sys.argv = sys.argv[1:]; "
    f"sys.path.insert(0, {str(EXAMPLES)!r}); code = 0\n"
    "try:\n    runpy.run_path(script, run_name='__main__')\n"
    "except SystemExit as e:\n    code = e.code\n"
    f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)\n"
    "sys.exit(code)"
)


@pytest.fixture(scope="module")
def digits_export(digits_run, tmp_path_factory):
    """`export/` of a copy of the served digits run: ONNX and LiteRT."""
    run = tmp_path_factory.mktemp("export-run") / "digits-softvq"
    run.mkdir()
    for name in ("config.json", "encoder.keras", "classifier.keras", "kmeans.npz",
                 "metrics.json"):
        shutil.copy2(digits_run / name, run / name)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "training.export", str(run), "--format", "onnx,litert"],
        cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run / "export"


@pytest.fixture(scope="module")
def pngs(digits_images, tmp_path_factory):
    """Six digits as 8-bit PNGs (0-16 mapped to 0-255, as a user's image would be)."""
    raw, _ = digits_images
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i in (0, 1, 7, 13, 22, 39):
        path = folder / f"digit-{i}.png"
        path.write_bytes(png_bytes(np.round(raw[i] * 255 / 16)))
        paths.append(path)
    return paths


def _run_example(name, *args):
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(EXAMPLES / name), *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=str(EXAMPLES))
    imported = json.loads(proc.stderr.strip().splitlines()[-1])
    return proc, imported


@pytest.mark.parametrize("example", ["embed_onnx.py", "embed_litert.py"])
def test_example_answers_like_the_service_without_keras(example, digits_export, pngs, server):
    proc, imported = _run_example(example, digits_export, *pngs, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert imported == []  # no Keras, no backend, nothing of this project
    answers = json.loads(proc.stdout)
    assert len(answers) == len(pngs)
    for path, answer in zip(pngs, answers):
        served = {}
        for route in ("/classify_png", "/cluster_png"):
            response = requests.post(server.url + route, timeout=30, files={
                "image": (path.name, path.read_bytes(), "image/png")})
            assert response.status_code == 200, response.text
            served[route] = response.json()
        classify, cluster = served["/classify_png"], served["/cluster_png"]
        assert answer["classify"]["labels"] == classify["labels"], path.name
        assert answer["classify"]["names"] == classify["names"]
        np.testing.assert_allclose(answer["classify"]["probabilities"],
                                   classify["probabilities"], rtol=0, atol=1e-5)
        assert answer["cluster"]["clusters"] == cluster["clusters"], path.name
        assert answer["cluster"]["labels"] == cluster["labels"]
        np.testing.assert_allclose(answer["cluster"]["distances"], cluster["distances"],
                                   rtol=0, atol=1e-5)


def test_example_prints_one_line_per_image(digits_export, pngs):
    proc, _ = _run_example("embed_onnx.py", digits_export, *pngs[:2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{pngs[0]}: cluster ") and "; class '" in lines[0]


def test_example_refuses_bad_input_with_one_line(digits_export, tmp_path):
    (tmp_path / "big.png").write_bytes(png_bytes(np.zeros((28, 28))))
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    cases = [
        ("embed_onnx.py", digits_export, tmp_path / "big.png",
         "the image is 28x28 pixels, this run takes 8x8"),
        ("embed_litert.py", digits_export, tmp_path / "notes.png",
         "not a readable PNG or JPEG image"),
        ("embed_onnx.py", tmp_path / "empty", tmp_path / "big.png",
         "manifest.json does not exist"),
    ]
    for example, folder, image, message in cases:
        proc, imported = _run_example(example, folder, image)
        assert proc.returncode == 2, (example, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()[:-1]  # the last is the wrapper's
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
        assert imported == []
