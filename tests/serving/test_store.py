"""`python -m serving.store`: runs in BentoML's model store, served and built by tag.

The refusals run in process; everything else runs the real commands in a
subprocess against a temporary `BENTOML_HOME`: store the fixture's digits run
(twice, so that `latest` has to pick the newer version), serve it by tag and
compare every answer with the folder-served server's, build a Bento from the
tag with the repository's bentofile.yaml and serve that, and check that a
build with no model in the store refuses.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bentoml
import numpy as np
import pytest
import requests
import yaml

from serving.store import (
    StoreError, check_finished, check_name, dataset_slug, default_name, labels_and_metadata,
    main,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_FILES = {"config.json", "encoder.keras", "classifier.keras", "kmeans.npz", "metrics.json",
             "autoencoder.keras"}


def _env(home):
    return {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}


def _run(args, home, cwd=REPO_ROOT, timeout=300):
    return subprocess.run(args, cwd=str(cwd), env=_env(home), capture_output=True, text=True,
                          timeout=timeout)


# ---- names and refusals (in process) -------------------------------------------------

def test_default_names_are_tag_safe():
    assert default_name({"dataset": "digits", "model": "softvq"}) == "softvq-digits-softvq"
    assert dataset_slug("tfds:Fashion_MNIST") == "fashion_mnist"
    assert dataset_slug("/data/My Photos/") == "my-photos"
    assert dataset_slug("shapes.npz") == "shapes"
    assert len(default_name({"dataset": "x" * 100, "model": "vq"})) <= 63
    assert check_name("digits-v2.1") == "digits-v2.1"
    for bad in ("Digits", "-x", "a b", "x" * 64, "ü"):
        with pytest.raises(StoreError, match="is not a valid model name"):
            check_name(bad)


def test_labels_carry_the_metrics_and_metadata_the_run(digits_run):
    config, metrics = check_finished(digits_run)
    labels, metadata = labels_and_metadata(config, metrics)
    assert labels["dataset"] == "digits" and labels["model"] == "softvq"
    assert labels["image_shape"] == "8x8" and labels["labelled"] == "true"
    assert labels["clustering_accuracy"] == f"{metrics['clustering_accuracy']:.4f}"
    assert all(isinstance(v, str) for v in labels.values())
    assert metadata["metrics"] == metrics and metadata["input_shape"] == [64]


@pytest.fixture
def run_copy(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    return run


@pytest.mark.parametrize("damage, message", [
    (lambda run: shutil.rmtree(run), "is not a folder"),
    (lambda run: (run / "config.json").unlink(), "config.json does not exist"),
    (lambda run: (run / "metrics.json").unlink(), "is not finished"),
    (lambda run: (run / "checkpoint").mkdir(), "is not finished"),
    (lambda run: (run / "autoencoder.keras").unlink(), "lacks autoencoder.keras"),
    (lambda run: (run / "kmeans.npz").unlink(), "lacks kmeans.npz"),
    (lambda run: (run / "metrics.json").write_text("{"), "cannot read"),
])
def test_unfinished_or_incomplete_runs_are_refused_with_one_line(run_copy, capsys, damage,
                                                                 message):
    damage(run_copy)
    assert main([str(run_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_store_cli_usage_errors(capsys):
    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == 2
    assert "give RUN_DIR" in capsys.readouterr().err


def test_store_never_imports_training(tmp_path):
    code = ("import sys, serving.store, serving.service; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT), env=_env(tmp_path / "home"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ---- the real store ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(digits_run, tmp_path_factory):
    """A BENTOML_HOME holding the digits run twice: (home, old tag, new tag).

    The newer version differs only in its metrics.json (clustering_accuracy
    0.999), so that `latest` can be told apart from the older one.
    """
    home = tmp_path_factory.mktemp("bentoml-store") / "home"
    first = _run([sys.executable, "-m", "serving.store", str(digits_run)], home)
    assert first.returncode == 0, first.stderr[-3000:]
    newer = tmp_path_factory.mktemp("newer") / "digits-softvq"
    shutil.copytree(digits_run, newer)
    metrics = json.loads((newer / "metrics.json").read_text())
    metrics["clustering_accuracy"] = 0.999
    (newer / "metrics.json").write_text(json.dumps(metrics))
    second = _run([sys.executable, "-m", "serving.store", str(newer)], home)
    assert second.returncode == 0, second.stderr[-3000:]
    old_tag, new_tag = first.stdout.strip(), second.stdout.strip()
    return home, old_tag, new_tag


@pytest.mark.slow
def test_store_prints_the_tag_and_bentoml_lists_the_model(store, digits_run):
    home, old_tag, new_tag = store
    for tag in (old_tag, new_tag):
        name, version = tag.split(":")
        assert name == "softvq-digits-softvq" and version
    assert old_tag != new_tag
    listed = _run([sys.executable, "-m", "bentoml", "models", "list", "-o", "json"], home)
    assert listed.returncode == 0, listed.stderr
    assert {m["tag"] for m in json.loads(listed.stdout)} == {old_tag, new_tag}
    got = _run([sys.executable, "-m", "bentoml", "models", "get", old_tag, "-o", "json"], home)
    info = json.loads(got.stdout)
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert info["module"] == "serving.store"
    assert info["labels"]["clustering_accuracy"] == f"{metrics['clustering_accuracy']:.4f}"
    assert info["labels"]["dataset"] == "digits"
    assert info["metadata"]["metrics"]["nmi"] == pytest.approx(metrics["nmi"])
    model_dir = home / "models" / "softvq-digits-softvq" / old_tag.split(":")[1]
    files = {p.name for p in model_dir.iterdir()} - {"model.yaml"}
    assert files == RUN_FILES  # not history.json, checkpoints or saved_model/
    for name in RUN_FILES:
        assert (model_dir / name).read_bytes() == (digits_run / name).read_bytes()
    ours = _run([sys.executable, "-m", "serving.store", "--list"], home)
    lines = ours.stdout.strip().splitlines()
    assert lines[0].split("\t")[:3] == ["tag", "dataset", "model"]
    assert lines[1].startswith(new_tag + "\tdigits\tsoftvq\t0.9990")  # newest first


@pytest.fixture(scope="module")
def tag_server(store):
    """`bentoml serve` with SOFTVQ_MODEL naming the model without a version."""
    from serving.launch import BentoServer

    home, _, _ = store
    with BentoServer(None, env={"SOFTVQ_MODEL": "softvq-digits-softvq",
                                "BENTOML_HOME": str(home), "KERAS_BACKEND": "jax",
                                "SOFTVQ_RUN_DIR": "/nonexistent/not-used"}) as running:
        yield running


def _answers(url, raw):
    body = {"images": raw.tolist()}
    out = {}
    for route in ("/encode", "/cluster", "/classify", "/reconstruct", "/codes"):
        response = requests.post(url + route, json=body, timeout=60)
        assert response.status_code == 200, (route, response.text)
        out[route] = response.json()
    return out


@pytest.mark.slow
def test_served_by_tag_answers_equal_the_folder_served_answers(tag_server, server, store,
                                                               digits_images):
    raw, _ = digits_images
    by_tag, by_folder = _answers(tag_server.url, raw), _answers(server.url, raw)
    assert by_tag.keys() == by_folder.keys()
    for route in by_tag:
        assert by_tag[route].keys() == by_folder[route].keys()
        for key, value in by_tag[route].items():
            if isinstance(value[0], str) or key in ("clusters", "labels"):
                assert value == by_folder[route][key], (route, key)
            else:
                np.testing.assert_allclose(value, by_folder[route][key], rtol=0, atol=1e-6)
    _, _, new_tag = store
    info = requests.get(tag_server.url + "/ui/config.json", timeout=10).json()
    assert info["source"] == f"model {new_tag}"  # `latest`: the newer version
    assert info["metrics"]["clustering_accuracy"] == 0.999
    assert f"serving stored model {new_tag} ({store[0]}" in tag_server.log(10**6)


def _build_context(tmp_path):
    context = tmp_path / "context"
    for folder in ("serving", "softvq_keras"):
        shutil.copytree(REPO_ROOT / folder, context / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "bentofile.yaml", context)
    return context


@pytest.mark.slow
def test_bentoml_build_packs_the_model_by_tag_and_the_bento_serves_it(store, tmp_path,
                                                                     digits_images, server):
    home, _, new_tag = store
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    assert bentofile["models"] == [{"tag": "softvq-digits-softvq:latest", "alias": "softvq"}]
    envs = {e["name"]: e["value"] for e in bentofile["envs"]}
    assert not {"SOFTVQ_MODEL", "SOFTVQ_RUN_DIR"} & set(envs)  # the alias finds the model
    context = _build_context(tmp_path)
    proc = _run([sys.executable, "-m", "bentoml", "build", str(context), "-o", "tag"], home,
                cwd=context)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "softvq: bentofile.yaml packs" not in proc.stderr
    (bento,) = [p for p in (home / "bentos" / "softvq").iterdir() if p.name != "latest"]
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert [(m["tag"], m["alias"]) for m in manifest["models"]] == [(new_tag, "softvq")]
    assert manifest["service"] == "serving.service:SoftVQService"
    src = bento / "src"
    assert not (src / "runs").exists()  # the run comes from the store, not the source tree
    assert {"service.py", "store.py", "reconstruct.py", "code_model.py", "codes.py",
            "ui_app.py", "startup.py"} <= {
        p.name for p in (src / "serving").iterdir()}
    assert {"index.html", "app.js", "pixels.js", "style.css"} <= {p.name for p in (src / "serving/ui").iterdir()}
    assert (src / "softvq_keras" / "layers" / "soft_vector_quantizer.py").is_file()
    # The container: exactly bentofile.yaml's packages (test_bento_requirements.py checks
    # that they are what the service imports) plus BentoML's own pin, in a Python 3.11
    # image that serves on port 3000 with the JAX backend.
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert [r for r in requirements if r.strip()] == [
        *bentofile["python"]["packages"], f"bentoml=={bentoml.__version__}"]
    assert not any(re.search(r"tensorflow|torch|scikit|matplotlib", r) for r in requirements)
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install -r $BENTO_PATH/env/python/requirements.txt" in dockerfile
    assert "ENV KERAS_BACKEND=$KERAS_BACKEND" in dockerfile and "ARG KERAS_BACKEND=jax" in dockerfile
    assert "EXPOSE 3000" in dockerfile and "USER bentoml" in dockerfile
    assert 'ENTRYPOINT [ "/home/bentoml/bento/env/docker/entrypoint.sh" ]' in dockerfile
    entrypoint = (bento / "env" / "docker" / "entrypoint.sh").read_text()
    assert 'set -- bentoml serve "$@" "$BENTO_PATH"' in entrypoint  # no arguments: serve
    routes = {route["route"] for route in manifest["schema"]["routes"]}
    assert routes == {"/encode", "/cluster", "/classify", "/reconstruct", "/codes", "/decode",
                      "/encode_png", "/cluster_png", "/classify_png"}

    from serving.launch import BentoServer

    raw, _ = digits_images
    with BentoServer(None, service="softvq:latest", env={
            "BENTOML_HOME": str(home), "KERAS_BACKEND": "jax"}) as bento_server:
        assert _answers(bento_server.url, raw[:5])["/classify"] == _answers(
            server.url, raw[:5])["/classify"]
        log = bento_server.log(10**6)
    assert f"serving stored model {new_tag} ({home / 'models' / 'softvq-digits-softvq'}" in log


@pytest.mark.slow
def test_bentoml_build_without_the_model_refuses(tmp_path):
    home = tmp_path / "empty-home"
    context = _build_context(tmp_path)
    proc = _run([sys.executable, "-m", "bentoml", "build", str(context)], home, cwd=context)
    assert proc.returncode != 0
    assert ("softvq: bentofile.yaml packs the model 'softvq-digits-softvq:latest' (alias "
            "'softvq'), which is not in the model store") in proc.stderr
    assert "python -m serving.store RUN_DIR" in proc.stderr
    assert "Model softvq-digits-softvq:latest could not be found locally" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (home / "bentos" / "softvq").exists()


@pytest.mark.slow
@pytest.mark.parametrize("env, message", [
    ({"SOFTVQ_MODEL": "no-such-model"},
     "SOFTVQ_MODEL='no-such-model': no such model in the BentoML model store"),
    ({"SOFTVQ_RUN_DIR": "/nonexistent/run"}, "/nonexistent/run/config.json does not exist"),
])
def test_a_model_that_cannot_load_stops_the_server_with_one_line(tmp_path, env, message):
    from serving.launch import free_port

    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "serve", "serving.service:SoftVQService",
         "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=str(REPO_ROOT), env={**_env(tmp_path / "home"), **env}, capture_output=True,
        text=True, timeout=180)
    assert proc.returncode == 3, proc.stderr[-3000:]  # not restarted, not 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("softvq:")]
    assert len(ours) == 1, proc.stderr[-3000:]
    assert ours[0].startswith("softvq: cannot load the model, the server stops: RunFolderError: ")
    assert message in ours[0]
    assert "Traceback" not in proc.stderr


def test_store_carries_the_export_folder_along(run_copy, tmp_path):
    export = run_copy / "export"
    export.mkdir()
    (export / "manifest.json").write_text(json.dumps({"formats": {"onnx": {}, "litert": {}}}))
    (export / "encoder.onnx").write_bytes(b"an onnx file")
    (export / "saved_model").mkdir()
    (export / "saved_model" / "saved_model.pb").write_bytes(b"pb")
    home = tmp_path / "home"
    proc = _run([sys.executable, "-m", "serving.store", str(run_copy)], home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, version = proc.stdout.strip().split(":")
    model_dir = home / "models" / name / version
    assert (model_dir / "export" / "encoder.onnx").read_bytes() == b"an onnx file"
    assert (model_dir / "export" / "saved_model" / "saved_model.pb").read_bytes() == b"pb"
    assert {p.name for p in model_dir.iterdir()} - {"model.yaml"} == RUN_FILES | {"export"}
    labels = yaml.safe_load((model_dir / "model.yaml").read_text())["labels"]
    assert labels["exports"] == "litert,onnx"
