"""Dataset loading: local `.npz` copies, SVHN's canonical `.mat` files, the
bundled digits, clear errors, and a fast offline failure with advice."""

import json
import socket
import sys

import numpy as np
import pytest

from softvq_keras.data import DataUnavailableError, load, load_raw, preprocess

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def write_npz(folder, name, image_shape, n_train=6, n_test=4, seed=0):
    """Write `<folder>/<name>.npz` with uint8 images (0 and 255 included)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train,) + image_shape, dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test,) + image_shape, dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=n_test).astype(np.uint8),
    }
    arrays["x_train"].flat[0], arrays["x_train"].flat[1] = 0, 255
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", **arrays)
    return arrays


@pytest.fixture(autouse=True)
def _no_data_dir_from_the_environment(monkeypatch):
    monkeypatch.delenv("SOFTVQ_DATA_DIR", raising=False)


def test_mnist_shaped_npz_is_flattened_to_unit_range(tmp_path):
    raw = write_npz(tmp_path, "mnist", (28, 28))
    splits = load("mnist", data_dir=tmp_path)
    assert splits.x_train.shape == (6, 784) and splits.x_test.shape == (4, 784)
    assert splits.x_train.dtype == np.float32
    np.testing.assert_allclose(splits.x_train, raw["x_train"].reshape(6, 784) / 255.0, rtol=1e-6)
    assert (splits.x_train.min(), splits.x_train.max()) == (0.0, 1.0)
    np.testing.assert_array_equal(splits.y_train, raw["y_train"])
    assert splits.y_test.dtype == np.int64 and splits.y_test.shape == (4,)
    assert splits.source == str(tmp_path / "mnist.npz")
    assert splits.pixel_variance == pytest.approx(float(np.var(splits.x_train, dtype=np.float64)))


def test_cifar_shaped_npz_is_centred(tmp_path):
    raw = write_npz(tmp_path, "cifar10", (32, 32, 3))
    splits = load("cifar10", data_dir=str(tmp_path))
    assert splits.x_train.shape == (6, 32, 32, 3) and splits.x_test.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(splits.x_test, raw["x_test"] / 255.0 - 0.5, atol=1e-6)
    assert (splits.x_train.min(), splits.x_train.max()) == (-0.5, 0.5)


def test_data_dir_from_the_environment_and_the_argument_wins(tmp_path, monkeypatch):
    from_env = write_npz(tmp_path / "env", "mnist", (28, 28), seed=1)
    from_arg = write_npz(tmp_path / "arg", "mnist", (28, 28), seed=2)
    monkeypatch.setenv("SOFTVQ_DATA_DIR", str(tmp_path / "env"))
    np.testing.assert_array_equal(load("mnist").y_train, from_env["y_train"])
    np.testing.assert_array_equal(load("mnist", tmp_path / "arg").y_train, from_arg["y_train"])


def test_npz_with_missing_arrays_or_wrong_shape_is_rejected(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"lacks the arrays \['x_test', 'y_test', 'y_train'\]"):
        load("mnist", tmp_path)
    write_npz(tmp_path, "mnist", (32, 32, 3))
    with pytest.raises(ValueError, match=r"expected \(28, 28\) for mnist"):
        load("mnist", tmp_path)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        load("mnist", missing)


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'.*cifar10"):
        load("imagenet")


def write_svhn_mat(folder, n_train=5, n_test=3):
    """The canonical layout: X (32, 32, 3, N) uint8, y (N, 1) with 10 for digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.arange(1, n + 1, dtype=np.uint8).reshape(n, 1)
        y[0, 0] = 10
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out


def test_svhn_reads_the_canonical_mat_files(tmp_path):
    mats = write_svhn_mat(tmp_path)
    (x_tr, y_tr, x_te, y_te), source = load_raw("svhn", tmp_path)
    assert source.endswith("*_32x32.mat")
    assert x_tr.shape == (5, 32, 32, 3) and x_te.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(x_tr[2], mats["train"][0][:, :, :, 2])
    np.testing.assert_array_equal(y_tr, [0, 2, 3, 4, 5])  # 10 is digit 0
    np.testing.assert_array_equal(y_te, [0, 2, 3])
    splits = load("svhn", tmp_path)
    np.testing.assert_allclose(splits.x_test[1], mats["test"][0][:, :, :, 1] / 255.0 - 0.5, atol=1e-6)


def test_svhn_needs_both_mat_files(tmp_path, monkeypatch):
    write_svhn_mat(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    monkeypatch.setenv("SOFTVQ_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match="train_32x32.mat and test_32x32.mat"):
        load("svhn", tmp_path)


def test_digits_loads_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("digits tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    splits = load("digits")
    assert splits.x_train.shape == (1500, 64) and splits.x_test.shape == (297, 64)
    assert splits.x_train.min() == 0.0 and splits.x_train.max() == 1.0
    assert splits.source == "sklearn.datasets.load_digits"
    # Stratified split: every class is in both splits in proportion (~10 %).
    counts = np.bincount(splits.y_test, minlength=10)
    assert counts.min() >= 27 and counts.max() <= 31
    np.testing.assert_allclose(preprocess("digits", np.full((1, 8, 8), 16)), 1.0)


OFFLINE_LOAD = """
import json, socket
attempts, downloads = [], []

def refuse(*args, **kwargs):  # record, then fail like a machine without a network
    attempts.append(repr(args[:2]))
    raise OSError("network refused by the test")

socket.create_connection = refuse
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
try:  # record any download tensorflow-datasets is asked for
    import tensorflow_datasets as tfds
    load_tfds, prepare = tfds.load, tfds.core.DatasetBuilder.download_and_prepare
    def recording_load(*args, **kwargs):
        if kwargs.get("download", True):
            downloads.append("tfds.load(download=True)")
        return load_tfds(*args, **kwargs)
    def recording_prepare(self, *args, **kwargs):
        downloads.append("download_and_prepare")
        return prepare(self, *args, **kwargs)
    tfds.load = recording_load
    tfds.core.DatasetBuilder.download_and_prepare = recording_prepare
except ImportError:
    pass
from softvq_keras.data import DataUnavailableError, load
try:
    load("mnist", data_dir={data_dir!r})
    outcome = {{"error": None}}
except DataUnavailableError as e:
    outcome = {{"error": str(e), "type": type(e).__name__}}
outcome["attempts"], outcome["downloads"] = attempts, downloads
print("OUTCOME " + json.dumps(outcome))
"""


@pytest.mark.parametrize("with_data_dir", [False, True])
def test_offline_without_a_copy_fails_fast_with_advice(with_data_dir, tmp_path, python_subprocess):
    """"Fast" means: refused before any network connection or download is tried.

    (A wall-time bound failed on a loaded CI machine; what makes this fast is
    that nothing waits on the network, which the child records.)
    """
    empty_tfds, empty_data = tmp_path / "tfds", tmp_path / "data"
    empty_tfds.mkdir()
    empty_data.mkdir()
    env = {"SOFTVQ_OFFLINE": "1", "TFDS_DATA_DIR": str(empty_tfds), "SOFTVQ_DATA_DIR": ""}
    code = OFFLINE_LOAD.format(data_dir=str(empty_data) if with_data_dir else None)
    proc = python_subprocess(code, env=env, timeout=300)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("OUTCOME "))
    outcome = json.loads(line[len("OUTCOME "):])
    assert outcome["error"] is not None, "load('mnist') succeeded with no copy anywhere"
    message = outcome["error"]
    for needle in ("mnist.npz", "--data-dir", "SOFTVQ_DATA_DIR", "SOFTVQ_OFFLINE=1"):
        assert needle in message, f"{needle!r} missing from: {message}"
    if with_data_dir:
        assert str(empty_data) in message
    assert "Traceback" not in message and "\n" not in message  # one paragraph
    assert outcome["attempts"] == [], outcome  # no connection tried, not even a probe
    assert outcome["downloads"] == [], outcome  # raised before any download started


def test_real_mnist_copy(shared_data_dir):
    if not (shared_data_dir / "mnist.npz").is_file():
        pytest.skip(f"{shared_data_dir / 'mnist.npz'} is absent")
    splits = load("mnist", shared_data_dir)
    assert splits.x_train.shape == (60000, 784) and splits.x_test.shape == (10000, 784)
    assert splits.x_train.dtype == np.float32
    assert (splits.x_train.min(), splits.x_train.max()) == (0.0, 1.0)
    np.testing.assert_array_equal(np.bincount(splits.y_train), MNIST_TRAIN_COUNTS)
    np.testing.assert_array_equal(np.bincount(splits.y_test), MNIST_TEST_COUNTS)
    # MNIST's well-known pixel statistics: mean 0.1307, std 0.3081.
    assert float(splits.x_train.mean()) == pytest.approx(0.1307, abs=5e-4)
    assert splits.pixel_variance == pytest.approx(0.3081**2, rel=2e-3)


class FakeTfds:
    """Stands in for tensorflow_datasets: nothing prepared, downloads fail."""

    def __init__(self):
        self.calls = []

    def load(self, name, download, **kwargs):
        self.calls.append((name, download))
        raise RuntimeError(f"{name} not prepared" if not download else "HTTP 404")


@pytest.mark.parametrize("reachable", [False, True])
def test_tfds_fallback_without_network_or_with_failing_download(reachable, monkeypatch):
    from softvq_keras import data
    from softvq_keras.data import availability

    fake = FakeTfds()
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.delenv("SOFTVQ_OFFLINE", raising=False)
    monkeypatch.delenv("SOFTVQ_DATA_DIR", raising=False)
    monkeypatch.setattr(availability, "reachable", lambda *a, **k: reachable)
    with pytest.raises(data.DataUnavailableError) as info:
        data.load("cifar10")
    message = str(info.value)
    assert "cifar10.npz" in message and "--data-dir" in message
    if reachable:
        # Not prepared locally, so it tried to download once, and says why it failed.
        assert fake.calls == [("cifar10", False), ("cifar10", True)]
        assert "the download failed (HTTP 404)" in message
    else:
        # Unreachable server: no download attempt (tfds would retry for minutes).
        assert fake.calls == [("cifar10", False)]
        assert "the download server is unreachable" in message
