"""`bentoml build` with the repository's bentofile.yaml packs the service and a run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bentoml_build_packs_service_run_and_dependencies(digits_run, tmp_path):
    # A build context like the repository's, with the fixture's digits run copied to the
    # run folder bentofile.yaml names (runs/ of the checkout is never touched).
    context = tmp_path / "context"
    shutil.copytree(REPO_ROOT / "serving", context / "serving",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "bentofile.yaml", context)
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    run_dir = {e["name"]: e["value"] for e in bentofile["envs"]}["SOFTVQ_RUN_DIR"]
    # The README's set-up command writes runs/digits-softvq: the bento packs that run.
    assert run_dir == "runs/digits-softvq"
    shutil.copytree(digits_run, context / run_dir)
    home = tmp_path / "bentoml-home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", str(context), "-o", "tag"],
        cwd=str(context), env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (bento,) = [p for p in (home / "bentos" / "softvq").iterdir() if p.name != "latest"]
    src = bento / "src"
    run_files = {p.name for p in (src / run_dir).iterdir()}
    assert run_files == {"config.json", "encoder.keras", "classifier.keras", "kmeans.npz",
                         "metrics.json"}  # not autoencoder.keras nor history.json
    assert {"service.py", "runtime.py", "validation.py", "batching.py", "guard.py"} <= {
        p.name for p in (src / "serving").iterdir()
    }
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    envs = {e["name"]: e["value"] for e in manifest["envs"]}
    assert envs["SOFTVQ_RUN_DIR"] == run_dir and envs["KERAS_BACKEND"] == "jax"
    assert manifest["service"] == "serving.service:SoftVQService"
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    for package in ("bentoml", "keras", "jax[cpu]", "numpy", "pillow"):
        assert package in requirements
    routes = {route["route"] for route in manifest["schema"]["routes"]}
    assert routes == {"/encode", "/cluster", "/classify",
                      "/encode_png", "/cluster_png", "/classify_png"}
