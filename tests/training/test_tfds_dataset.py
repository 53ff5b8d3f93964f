"""`training.fit tfds:NAME` end to end, offline, on a prepared tensorflow-datasets copy.

A tiny image-classification set (16x16 grayscale, classes "dark" and "bright")
is generated and prepared with tensorflow-datasets' own builder machinery in a
temporary data folder; the training process has never seen the builder's
code, so it reads the set as a user's prepared copy (tfds' read-only builder
from `--data-dir`), with downloads forbidden (`SOFTVQ_OFFLINE=1`).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

PREPARE = r'''
import sys
import numpy as np
import tensorflow_datasets as tfds

class TinyShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(16, 16, 1)),
            "label": tfds.features.ClassLabel(names=["dark", "bright"]),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(120, 0), "test": self._generate_examples(40, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            y = i % 2
            yield i, {"image": (rng.integers(0, 100, (16, 16, 1)) + 150 * y).astype("uint8"),
                      "label": y}

TinyShapes(data_dir=sys.argv[1]).download_and_prepare()
'''


def _env():
    return dict(os.environ, SOFTVQ_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2",
                KERAS_BACKEND="tensorflow")


def _fit(*args):
    return subprocess.run(
        [sys.executable, "-m", "training.fit", *args], cwd=REPO_ROOT, env=_env(),
        capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
    folder = tmp_path_factory.mktemp("tfds")
    subprocess.run([sys.executable, "-c", PREPARE, str(folder)], env=_env(), check=True,
                   capture_output=True, timeout=300)
    assert (folder / "tiny_shapes" / "1.0.0" / "dataset_info.json").is_file()
    return folder


@pytest.mark.slow
def test_a_prepared_tfds_set_trains_offline_with_its_class_names(tfds_dir, tmp_path):
    out = tmp_path / "run"
    proc = _fit("tfds:tiny_shapes", "softvq", "--data-dir", str(tfds_dir), "--epochs", "2",
                "--kmeans-init", "2", "--probe-epochs", "2", "--out", str(out), "--verbose", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["dataset_kind"] == "tfds"
    assert config["data_source"] == "tensorflow-datasets:tiny_shapes"
    assert config["class_names"] == ["dark", "bright"]
    assert (config["num_train"], config["num_test"]) == (120, 40)
    assert config["image_shape"] == [16, 16] and config["architecture"] == "mlp"
    assert config["split"]["given"] is True  # the set's own train / test splits
    metrics = json.loads((out / "metrics.json").read_text())
    # Dark and bright images are separable from the first epoch on.
    assert metrics["classification_accuracy"] >= 0.9
    assert metrics["raw"]["classification_accuracy"] >= 0.9


def test_an_unprepared_tfds_set_offline_exits_2_with_one_line(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
    proc = _fit("tfds:mnist", "softvq", "--data-dir", str(tmp_path), "--architecture", "mlp",
                "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Dataset 'tfds:mnist' is not available: SOFTVQ_OFFLINE=1 forbids downloads" in lines[0]
    assert str(tmp_path) in lines[0]
    assert not (tmp_path / "run").exists()


def test_an_unknown_tfds_name_exits_2_with_one_line(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is not installed")
    proc = _fit("tfds:no_such_set_xyz", "softvq", "--architecture", "mlp",
                "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "python -m training.fit: error: tfds:no_such_set_xyz: not a tensorflow-datasets "
        "name (Dataset no_such_set_xyz not found.)"
    ]
