"""Reading a run folder's `config.json`: the one thing every part of the service shares.

`read_config(run_dir)` returns the config with `with_defaults` applied (the
keys newer runs write, at their defaults for older runs) or raises
`RunFolderError` with a sentence saying what is missing; `REQUIRED_FILES` /
`UNLABELLED_FILES` are the files the service needs (docs/ARTIFACTS.md). The
loaders (`serving.runtime`), the model store (`serving.store`), the schema and
the page all read runs through here; this module imports none of them.
"""

import json
from pathlib import Path

#: Files of a run folder the service needs (docs/ARTIFACTS.md); a run trained
#: without labels (config.json `"labelled": false`) has no classifier.keras.
REQUIRED_FILES = ("config.json", "encoder.keras", "classifier.keras", "kmeans.npz")
UNLABELLED_FILES = ("config.json", "encoder.keras", "kmeans.npz")

class RunFolderError(RuntimeError):
    """The run folder is missing, incomplete or inconsistent."""


def read_config(run_dir):
    """`config.json` of `run_dir` as a dict; `RunFolderError` if absent or bad."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunFolderError(
            f"{path} does not exist: SOFTVQ_RUN_DIR must name a run folder written by "
            "`python -m training.fit` (see docs/ARTIFACTS.md)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunFolderError(f"cannot read {path}: {e}") from None
    missing = [
        k for k in ("image_shape", "input_shape", "pixel_max", "offset", "latent_dim")
        if k not in config
    ]
    if missing:
        raise RunFolderError(f"{path} lacks the keys {missing} (see docs/ARTIFACTS.md)")
    return with_defaults(config)


def with_defaults(config):
    """`config` with the keys newer runs write, at their defaults for older runs.

    `labelled` (True), `channels` (3 when image_shape is [H, W, 3], else 1),
    `num_classes` (10 when labelled, else None), `class_names` ("0".."9" when
    labelled), `clusters` (num_classes, else 10); docs/ARTIFACTS.md.
    """
    config = dict(config)
    image_shape = list(config["image_shape"])
    config.setdefault("labelled", True)
    config["labelled"] = bool(config["labelled"])
    if config.get("channels") is None:
        config["channels"] = int(image_shape[2]) if len(image_shape) == 3 else 1
    if config["labelled"]:
        if config.get("num_classes") is None:
            config["num_classes"] = len(config.get("class_names") or []) or 10
        if not config.get("class_names"):
            config["class_names"] = [str(i) for i in range(int(config["num_classes"]))]
    else:
        config["num_classes"] = None
        config["class_names"] = None
    if config.get("clusters") is None:
        config["clusters"] = config["num_classes"] or 10
    return config
