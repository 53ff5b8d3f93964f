"""Users' own images through `python -m training.fit` and `training.evaluate` (issue 9).

The runs (`own_image_runs`, tests/conftest.py) train on generated folders:
labelled grayscale PNGs with a seeded split, a train/test split of RGB JPEGs
(the CNN), and images without labels. Bad data stops with exit code 2 and one
line before anything is written. MNIST written as PNG files gives the same
raw-pixel row as the same images in an .npz file.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import image_folders as f
from training import artifacts
from training.evaluate import main as evaluate_main
from training.fit import main as fit_main

pytestmark = pytest.mark.slow


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


def test_labelled_grayscale_folder_with_a_seeded_split(own_image_runs):
    folder, run, stdout = own_image_runs["gray"]
    config, metrics = read(run, artifacts.CONFIG), read(run, artifacts.METRICS)
    assert config["dataset_kind"] == "folder" and config["dataset_path"] == str(folder)
    assert config["class_names"] == list(f.CLASSES) and config["num_classes"] == 3
    assert config["labelled"] is True and config["clusters"] == 3
    assert (config["image_shape"], config["input_shape"]) == ([12, 10], [120])
    assert (config["channels"], config["architecture"], config["preset"]) == (1, "mlp", "mnist")
    assert config["latent_dim"] == 64 and config["bottleneck"]["num_codes"] == 128  # MNIST's
    assert (config["pixel_max"], config["offset"]) == (255.0, 0.0)
    assert config["split"] == {"given": False, "test_fraction": 0.2, "seed": 0}
    # 31 files, one truncated and skipped; 2 of each class's 10 (11) in the test split.
    assert (config["num_train"], config["num_test"]) == (24, 6)
    assert config["skipped_images"] == 1
    assert config["skipped_examples"][0].endswith("zz-truncated.png")
    assert config["preprocessing"] == {"resized": False, "source_sizes": [[12, 10]],
                                       "channels_converted": False}
    assert 0.0 < config["pixel_variance"] < 0.25
    assert metrics["labelled"] is True
    for key in ("clustering_accuracy", "nmi", "classification_accuracy",
                "clustering_accuracy_train_centroids"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["raw_sample"] == {"train": 24, "test": 6, "whole": True}
    assert metrics["raw"]["classification_accuracy"] > 0.5  # the patterns are easy
    assert metrics["reconstruction_error"] > 0 and metrics["kmeans_inertia"] >= 0
    with np.load(run / artifacts.KMEANS) as stored:
        assert stored["centroids"].shape == (3, 64)
        assert stored["cluster_to_label"].shape == (3,)
        assert int(stored["fitted_on"]) == 24
        # The training split's shares, for the service's /metrics: every training image
        # counted once per cluster and per class (3 classes of 8 images each).
        assert stored["train_cluster_counts"].shape == (3,)
        assert int(stored["train_cluster_counts"].sum()) == 24
        assert stored["train_class_counts"].tolist() == [8, 8, 8]
    # Every evaluation phase says what it does and how long it took, one line each.
    for line in ("Encoding 24 training images ... ", "K-means x2 (3 clusters) on 24 training latents ... ",
                 "Softmax probe: 2 epochs on 24 training latents ... ",
                 "Raw-pixel baseline on 24 training and 6 test images ... "):
        assert any(l.startswith(line) and l.endswith(" s") for l in stdout.splitlines()), line
    assert "Skipped 1 unreadable image file(s)" in stdout
    assert "\x1b" not in stdout and "\r" not in stdout


def test_rgb_jpeg_train_test_folders_train_the_cnn(own_image_runs):
    folder, run, _ = own_image_runs["rgb"]
    config, metrics = read(run, artifacts.CONFIG), read(run, artifacts.METRICS)
    assert config["class_names"] == ["bars", "blobs"] and config["num_classes"] == 2
    assert config["image_shape"] == [16, 16, 3] and config["input_shape"] == [16, 16, 3]
    assert (config["channels"], config["architecture"], config["preset"]) == (3, "cnn", "svhn")
    assert config["latent_dim"] == 256 and config["offset"] == -0.5  # SVHN's preset
    assert config["split"]["given"] is True
    assert (config["num_train"], config["num_test"]) == (17, 8)
    assert config["preprocessing"]["resized"] is True
    assert sorted(config["preprocessing"]["source_sizes"]) == [[16, 16], [20, 18]]
    # pixel_variance: of the training images as decoded and resized by Pillow.
    pixels = []
    for path in sorted((folder / "train").rglob("*.jpg")):
        image = Image.open(path).convert("RGB")
        pixels.append(np.asarray(image.resize((16, 16), Image.BILINEAR), np.float64))
    assert config["pixel_variance"] == pytest.approx(np.var(np.stack(pixels) / 255.0), rel=1e-6)
    assert config["pixel_variance_from"] == "all training images"
    assert metrics["labelled"] is True and 0.0 <= metrics["classification_accuracy"] <= 1.0
    assert 1.0 <= metrics["perplexity"] <= config["bottleneck"]["num_codes"]


def test_unlabelled_folder_trains_without_a_classifier(own_image_runs):
    _, run, stdout = own_image_runs["loose"]
    config, metrics = read(run, artifacts.CONFIG), read(run, artifacts.METRICS)
    assert not (run / artifacts.CLASSIFIER).exists()
    assert config["labelled"] is False and config["class_names"] is None
    assert config["num_classes"] is None and config["clusters"] == 4
    assert config["evaluation"]["raw_baseline"] is False
    assert (config["num_train"], config["num_test"]) == (24, 6)
    assert metrics["labelled"] is False and "without labels" in metrics["note"]
    for key in ("clustering_accuracy", "nmi", "classification_accuracy", "raw"):
        assert key not in metrics, key
    assert metrics["reconstruction_error"] > 0
    assert metrics["kmeans_inertia"] >= 0 and metrics["kmeans_inertia_train_centroids"] >= 0
    assert 0.0 < metrics["codebook_usage"] <= 1.0 and metrics["perplexity"] >= 1.0
    with np.load(run / artifacts.KMEANS) as stored:
        assert sorted(stored.files) == ["centroids", "fitted_on", "inertia",
                                        "train_cluster_counts"]
        assert stored["centroids"].shape == (4, 64)
        assert int(stored["train_cluster_counts"].sum()) == int(stored["fitted_on"])
    assert "no labels: trained without labels" in stdout
    assert "Softmax probe" not in stdout


@pytest.mark.parametrize("name", ["gray", "loose"])
def test_evaluate_reproduces_the_metrics_of_an_own_images_run(own_image_runs, name, tmp_path,
                                                             capsys, monkeypatch):
    _, original, _ = own_image_runs[name]
    run = tmp_path / "run"
    shutil.copytree(original, run)
    monkeypatch.chdir(tmp_path)
    assert evaluate_main([str(run)]) == 0
    before, after = read(original, artifacts.METRICS), read(run, artifacts.METRICS)
    keys = ["reconstruction_error", "kmeans_inertia", "kmeans_inertia_train_centroids",
            "codebook_usage", "perplexity", "labelled"]
    if name == "gray":
        keys += ["clustering_accuracy", "nmi", "classification_accuracy", "nmi_train_centroids"]
    for key in keys:
        assert after[key] == pytest.approx(before[key], rel=1e-4, abs=1e-6), key
    assert "K-means x2" in capsys.readouterr().out


def _rgb_folder(root, size):
    return f.labelled_folder(root, per_class=3, size=size, channels=3, classes=("a", "b"))


def _bad_cases(tmp):
    (tmp / "empty").mkdir(parents=True)
    f.labelled_folder(tmp / "one", per_class=3, classes=("bars",))
    (tmp / "text").mkdir()
    (tmp / "text" / "notes.txt").write_text("no images here\n")
    np.savez(tmp / "no-x.npz", images=np.zeros((4, 8, 8), np.uint8))
    np.savez(tmp / "two-channels.npz", x_train=np.zeros((4, 8, 8, 2), np.uint8),
             x_test=np.zeros((2, 8, 8, 2), np.uint8))
    deep = f.labelled_folder(tmp / "deep", per_class=3)
    Image.fromarray(np.full((12, 10), 40000, np.uint16)).save(deep / "bars" / "zz-16bit.png")
    bad = f.labelled_folder(tmp / "truncated", per_class=3)
    f.truncated_png(bad / "blobs" / "broken.png")
    _rgb_folder(tmp / "rgb20", (20, 20))
    return [
        ([str(tmp / "empty")], f"folder {str(tmp / 'empty')!r} is empty"),
        ([str(tmp / "one")], "has one class sub-folder ('bars'): a labelled dataset needs at "
                             "least two classes"),
        ([str(tmp / "text")], "has no image files (.png, .jpg, .jpeg, .bmp, .gif); found 1 "
                              "other file(s), e.g. 'notes.txt'"),
        ([str(tmp / "no-x.npz")], "has no x_train array (it has: images)"),
        ([str(tmp / "two-channels.npz")], "images of shape (8, 8, 2) cannot be converted to "
                                          "--channels 1 or 3"),
        ([str(tmp / "deep")], "zz-16bit.png' has Pillow mode 'I;16'"),
        ([str(tmp / "truncated")], f"cannot read image {str(bad / 'blobs' / 'broken.png')!r} "
                                   "(corrupt or truncated"),
        ([str(tmp / "rgb20")], "the images are 20x20; the CNN needs sides that are multiples "
                               "of 16: pass --image-size 16x16"),
        ([str(tmp / "rgb20"), "--image-size", "20x20", "--architecture", "cnn"],
         "--image-size 20x20: the CNN needs sides that are multiples of 16; the nearest "
         "valid size is 16x16"),
        ([str(tmp / "rgb20"), "--image-size", "20by20"], "--image-size must be HxW"),
        (["digits", "--channels", "3"], "--channels applies to folders, .npz files and tfds: "
                                        "datasets, not to the built-in 'digits'"),
        ([str(tmp / "missing.npz")], "no such .npz file"),
        ([str(tmp / "truncated"), "--test-fraction", "1.5"], "--test-fraction must be between 0 and 1"),
    ]


def test_bad_data_stops_with_one_line_and_exit_code_2_before_writing(tmp_path, capsys):
    cases = _bad_cases(tmp_path / "data")
    for i, (args, message) in enumerate(cases):
        out = tmp_path / "runs" / f"case{i}"
        code = fit_main([args[0], "softvq", *args[1:], "--out", str(out), "--epochs", "1"])
        _, err = capsys.readouterr()
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert err.count("\n") == 1 and err.startswith("python -m training.fit: error: "), err
        assert not out.exists(), args  # nothing half-written


def test_mnist_as_png_folders_gives_the_npz_raw_row(shared_data_dir, tmp_path):
    """The same 600 + 200 MNIST images as PNG files by class and in an .npz file."""
    from training.data import open_data
    from training.scores import PhaseTimer, flat_images, representation_scores

    with np.load(shared_data_dir / "mnist.npz") as d:
        arrays = {"x_train": d["x_train"][:600], "y_train": d["y_train"][:600],
                  "x_test": d["x_test"][:200], "y_test": d["y_test"][:200]}
    np.savez(tmp_path / "mnist-subset.npz", **arrays)
    for split in ("train", "test"):
        for i, (x, y) in enumerate(zip(arrays[f"x_{split}"], arrays[f"y_{split}"])):
            f.save(x, tmp_path / "png" / split / str(int(y)) / f"{i:05d}.png")
    rows = []
    for dataset in (tmp_path / "mnist-subset.npz", tmp_path / "png"):
        data = open_data(str(dataset), test_fraction=0.2, seed=0)
        assert (data.info.architecture, data.info.input_shape) == ("mlp", (784,))
        samples = [data.raw_sample(split) for split in ("train", "test")]
        assert all(whole for _, _, whole in samples)
        rows.append((samples, representation_scores(
            flat_images(samples[0][0]), samples[0][1], flat_images(samples[1][0]), samples[1][1],
            kmeans_init=2, probe_epochs=2, seed=0, timer=PhaseTimer())))
    (npz_samples, npz_row), (png_samples, png_row) = rows
    for (x_a, y_a, _), (x_b, y_b, _) in zip(npz_samples, png_samples):
        np.testing.assert_array_equal(x_a, x_b)
        np.testing.assert_array_equal(y_a, y_b)
    assert png_row == npz_row
    assert npz_row["classification_accuracy"] > 0.6
