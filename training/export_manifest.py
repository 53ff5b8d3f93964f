"""`export/manifest.json` of `python -m training.export`: what an app needs besides the files.

`manifest_base` describes the run (input shape, dtype and scaling, latent size, class
names, K-means centroids and labels, the check, the package versions); `export_run`
adds `formats` and `files`. `old_entries` finds the formats of an earlier export of
the same `.keras` files, which a new export keeps; `describe` prints the files.
"""

from pathlib import Path

import numpy as np

from training import artifacts
from training.export_check import TOLERANCE
from training.export_formats import FORMATS, versions

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
DESCRIPTIONS = {
    "encoder": "scaled image batch (N,) + input_shape -> latent z (N, latent_dim)",
    "classifier": "latent z (N, latent_dim) -> class probabilities (N, num_classes), softmax",
    "autoencoder": "scaled image batch -> reconstruction, scaled as the input",
}


def file_size(path):
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def manifest_base(run_dir, config, formats, n_checked):
    """The manifest's run description (everything but the formats and files)."""
    run_dir = Path(run_dir)
    with np.load(run_dir / artifacts.KMEANS, allow_pickle=False) as f:
        centroids = np.asarray(f["centroids"], np.float32)
        cluster_to_label = (np.asarray(f["cluster_to_label"]).tolist()
                            if "cluster_to_label" in f.files else None)
    import keras

    return {
        "manifest_version": MANIFEST_VERSION,
        "run": {"dataset": config.get("dataset"), "model": config.get("model"),
                "backend": config.get("backend"), "epochs": config.get("epochs")},
        "source_sha256": {name: artifacts.file_sha256(run_dir / name) for name in
                          (artifacts.ENCODER, artifacts.CLASSIFIER, artifacts.AUTOENCODER)
                          if (run_dir / name).is_file()},
        "input": {
            "shape": [None, *config["input_shape"]], "dtype": "float32",
            "image_shape": config["image_shape"], "channels": config.get("channels"),
            "pixel_max": config["pixel_max"], "offset": config["offset"],
            "scaling": "x = raw / pixel_max + offset (raw pixels 0..pixel_max, as the "
                       "dataset stores them; an 8-bit image file: raw = value / 255 * "
                       "pixel_max)",
        },
        "latent_dim": config["latent_dim"],
        "labelled": config.get("labelled", True) is not False,
        "class_names": config.get("class_names"),
        "kmeans": {"centroids": centroids.tolist(), "cluster_to_label": cluster_to_label,
                   "assign": "nearest centroid by Euclidean distance; with labels, "
                             "label = cluster_to_label[cluster]"},
        "models": {k: v for k, v in DESCRIPTIONS.items()},
        "check": {"images": n_checked, "split": "test", "tolerance": TOLERANCE,
                  "reference": f"the .keras models under Keras {keras.__version__} "
                               "(TensorFlow backend)",
                  "batches": [n_checked, 1]},
        "exported_with": versions(formats),
    }


def old_entries(export_dir, base, formats):
    """(formats, files) of an earlier export of the same models, for the formats
    not exported now; empty when there is none or the models changed."""
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        return {}, {}
    try:
        old = artifacts.read_json(path)
    except (OSError, ValueError):
        return {}, {}
    if old.get("source_sha256") != base["source_sha256"]:
        return {}, {}
    kept = {f: e for f, e in old.get("formats", {}).items() if f not in formats and f in FORMATS}
    files = {name: e for name, e in old.get("files", {}).items() if e.get("format") in kept}
    if not all((Path(export_dir) / name.rstrip("/")).exists() for name in files):
        return {}, {}
    return kept, files


def describe(manifest):
    """A few lines: every file with its size and measured difference."""
    lines = []
    for name, entry in manifest["files"].items():
        diff = entry.get("max_abs_diff")
        if diff is None and "differences" in entry:
            diff = max(v["max_abs_diff"] for v in entry["differences"].values())
        text = f"  {name:<22} {entry['bytes'] / 1e6:8.3f} MB"
        if diff is not None:
            text += f"  max abs difference {diff:.2g}"
        lines.append(text)
    return "\n".join(lines)
