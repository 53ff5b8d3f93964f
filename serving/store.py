"""Save a finished run into BentoML's model store, and find a stored run again.

    python -m serving.store RUN_DIR [--name NAME]     # prints the tag, e.g. softvq-digits-softvq:abc123
    python -m serving.store --list                    # stored runs with their metrics

A stored model is a copy of the run folder's files the service reads
(docs/ARTIFACTS.md): `config.json`, `encoder.keras`, `classifier.keras`
(labelled runs), `kmeans.npz`, `metrics.json` and `autoencoder.keras` (for
`/reconstruct`), and `export/` (ONNX, LiteRT, OpenVINO files and their
`manifest.json`, `python -m training.export`) when the run has one; never
`checkpoint/` or `saved_model/`. Its labels
(`bentoml models get TAG`) hold the dataset, model, backend and headline
metrics; its metadata the whole metrics.json, the image shape, scaling and
the library versions of the run.

The service serves a stored run with `SOFTVQ_MODEL=NAME[:VERSION]`
(`latest` when no version is given); `bentofile.yaml` names the same tag so
that `bentoml build` packs it. Nothing here imports `training/` or Keras.
"""

import argparse
import functools
import json
import os
import re
import shutil
import sys
from pathlib import Path

from serving.run_folder import RunFolderError, read_config

#: Run-folder files copied into the store: (name, needed).
STORED_FILES = ("config.json", "encoder.keras", "classifier.keras", "kmeans.npz",
                "metrics.json", "autoencoder.keras")
#: `python -m training.export`'s folder, copied along when it has a manifest.json.
EXPORT_DIR = "export"
#: Metrics copied into the labels (shown by `bentoml models get`).
LABEL_METRICS = ("clustering_accuracy", "nmi", "classification_accuracy",
                 "reconstruction_error", "codebook_usage", "perplexity")
MODULE = "serving.store"
#: The alias bentofile.yaml gives the run it packs (see `served_model`).
PACKED_ALIAS = "softvq"
_TAG_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


class StoreError(RuntimeError):
    """A run that cannot be stored, or a tag that cannot be found."""


def dataset_slug(dataset):
    """A tag-safe short name for a DATASET argument (built-in, path, .npz, tfds:NAME)."""
    text = str(dataset)
    if text.startswith("tfds:"):
        text = text[len("tfds:"):]
    elif "/" in text or "\\" in text or text.endswith(".npz") or Path(text).exists():
        text = Path(text.rstrip("/\\")).stem or "data"
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug or "data"


def default_name(config):
    """`softvq-<dataset>-<model>`, tag-safe and at most 63 characters."""
    name = f"softvq-{dataset_slug(config.get('dataset', 'data'))}-{config.get('model', 'model')}"
    name = re.sub(r"[^a-z0-9._-]+", "-", name.lower())[:63].strip("-._")
    return name


def check_name(name):
    """`name` if it is a valid BentoML model name, else `StoreError`."""
    if not _TAG_NAME.match(name):
        raise StoreError(
            f"--name {name!r} is not a valid model name: use 1 to 63 lowercase letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return name


def needed_files(config):
    """The run-folder files a stored run must have (no classifier when unlabelled)."""
    labelled = config.get("labelled", True) is not False
    return [f for f in STORED_FILES if labelled or f != "classifier.keras"]


def check_finished(run_dir):
    """config.json of a finished, complete run folder, else `StoreError` (one line)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StoreError(f"{run_dir} is not a folder: give a run folder written by "
                         "`python -m training.fit` (e.g. runs/digits-softvq)")
    try:
        config = read_config(run_dir)
    except RunFolderError as e:
        raise StoreError(str(e)) from None
    if (run_dir / "checkpoint").exists() or not (run_dir / "metrics.json").is_file():
        raise StoreError(
            f"run folder {run_dir} is not finished (no metrics.json yet, or a checkpoint/ "
            "left): wait for training to end, or finish it with `python -m training.fit "
            "... --resume`"
        )
    missing = [f for f in needed_files(config) if not (run_dir / f).is_file()]
    if missing:
        raise StoreError(f"run folder {run_dir} is incomplete: it lacks {', '.join(missing)}")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {run_dir / 'metrics.json'}: {e}") from None
    return config, metrics


def _flat_numbers(metrics):
    """Top-level numeric metrics, for labels."""
    return {k: metrics[k] for k in LABEL_METRICS
            if isinstance(metrics.get(k), (int, float)) and not isinstance(metrics[k], bool)}


def labels_and_metadata(config, metrics):
    """(labels: str -> str, metadata: JSON-able) describing a run."""
    labels = {
        "project": "softvq-keras",
        "dataset": str(config.get("dataset")),
        "model": str(config.get("model")),
        "backend": str(config.get("backend")),
        "labelled": str(config.get("labelled", True) is not False).lower(),
        "image_shape": "x".join(str(n) for n in config.get("image_shape", [])),
    }
    labels.update({k: f"{v:.4f}" for k, v in _flat_numbers(metrics).items()})
    metadata = {
        "dataset": config.get("dataset"),
        "dataset_kind": config.get("dataset_kind", "builtin"),
        "model": config.get("model"),
        "backend": config.get("backend"),
        "image_shape": list(config.get("image_shape", [])),
        "input_shape": list(config.get("input_shape", [])),
        "pixel_max": config.get("pixel_max"),
        "offset": config.get("offset"),
        "latent_dim": config.get("latent_dim"),
        "class_names": config.get("class_names"),
        "versions": config.get("versions", {}),
        "epochs": config.get("epochs"),
        "metrics": json.loads(json.dumps(metrics)),
    }
    return labels, {k: v for k, v in metadata.items() if v is not None}


def save_run(run_dir, name=None):
    """Copy a finished run into the model store; returns the new model's tag (str)."""
    import bentoml

    config, metrics = check_finished(run_dir)
    name = check_name(name) if name else default_name(config)
    labels, metadata = labels_and_metadata(config, metrics)
    export = Path(run_dir) / EXPORT_DIR
    if (export / "manifest.json").is_file():
        labels["exports"] = ",".join(_exported_formats(export))
    with bentoml.models.create(name, labels=labels, metadata=metadata, module=MODULE) as model:
        for file in needed_files(config):
            shutil.copy2(Path(run_dir) / file, model.path_of(file))
        if "exports" in labels:
            shutil.copytree(export, model.path_of(EXPORT_DIR))
    return str(model.tag)


def _exported_formats(export):
    """The formats listed in `export/manifest.json` (empty when unreadable)."""
    try:
        return sorted(json.loads((export / "manifest.json").read_text(encoding="utf-8"))
                      .get("formats", {}))
    except (OSError, ValueError, AttributeError):
        return []


@functools.lru_cache(maxsize=8)
def _stored(tag, home):
    """(folder, resolved tag) of the stored model `tag`; `RunFolderError` if none."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        model = bentoml.models.get(tag)  # resolves `latest` and the Bento's alias
    except NotFound:
        raise RunFolderError(
            f"SOFTVQ_MODEL={tag!r}: no such model in the BentoML model store ({home}); "
            "store a run with `python -m serving.store RUN_DIR` (bentoml models list "
            "shows the stored ones)"
        ) from None
    except (BentoMLException, ValueError) as e:
        raise RunFolderError(f"SOFTVQ_MODEL={tag!r} is not a usable model tag: {e}") from None
    return Path(model.path), str(model.tag)


def stored_run_dir(tag):
    """The folder of the stored run `tag` (`NAME[:VERSION]`, or the Bento's alias).

    `NAME` alone is the newest version (`latest`). Raises `RunFolderError`
    with one line when there is no such model.
    """
    return _stored(str(tag).strip(), os.environ.get("BENTOML_HOME", "~/bentoml"))[0]


def stored_tag(tag):
    """The full `NAME:VERSION` that `tag` resolves to (see `stored_run_dir`)."""
    return _stored(str(tag).strip(), os.environ.get("BENTOML_HOME", "~/bentoml"))[1]


def _model_aliases():
    """BentoML's alias -> tag map of the Bento (or bentofile.yaml) being served or built.

    BentoML sets it before it imports the service, from the `models:` entries
    that have an `alias`; `{}` outside a Bento, or if BentoML's internals move.
    """
    if "bentoml" not in sys.modules:
        return {}
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        return dict(BentoMLContainer.model_aliases.get())
    except Exception:  # noqa: BLE001 - no aliases known
        return {}


def served_model():
    """The stored model the service serves, as a tag or alias; None for a run folder.

    `$SOFTVQ_MODEL` when set; else, unless `$SOFTVQ_RUN_DIR` is set, the model
    a Bento packs under the alias `softvq` (bentofile.yaml's `models:`).
    BentoML applies a Bento's `envs` only inside its container image, not to
    `bentoml serve softvq:latest`, so the alias is what finds the packed run.
    """
    tag = os.environ.get("SOFTVQ_MODEL", "").strip()
    if tag:
        return tag
    if os.environ.get("SOFTVQ_RUN_DIR", "").strip():
        return None
    return PACKED_ALIAS if PACKED_ALIAS in _model_aliases() else None


def default_run_dir():
    """The run the service serves.

    The folder of the stored model `$SOFTVQ_MODEL` (`NAME[:VERSION]`, the
    newest version when none is given) or, in a Bento, of the model it packs
    (`served_model`); else `$SOFTVQ_RUN_DIR`, else
    `runs/digits-softvq`, the run the README's set-up command writes (relative
    to the working directory). `RunFolderError` when the stored model is absent.
    """
    model = served_model()
    if model:
        return stored_run_dir(model)
    return Path(os.environ.get("SOFTVQ_RUN_DIR", "").strip() or "runs/digits-softvq")


def hint_missing_packed_model():
    """At `bentoml build`: one line for each model of bentofile.yaml not in the store.

    `bentoml build` imports the service module after reading bentofile.yaml's
    `models:` (their aliases are then known) and before it packs them; BentoML
    itself then refuses with "Model ... could not be found locally and failed
    to fetch from remote". This line says what to do about it. Silent when
    the models are there, and when no bentofile.yaml names any.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    for alias, tag in sorted(_model_aliases().items()):
        try:
            bentoml.models.get(tag)
        except NotFound:
            home = os.environ.get("BENTOML_HOME", "~/bentoml")
            print(f"softvq: bentofile.yaml packs the model {tag!r} (alias {alias!r}), which "
                  f"is not in the model store ({home}/models): store a finished run first "
                  "with `python -m serving.store RUN_DIR` (e.g. runs/digits-softvq), then "
                  "build again", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - a bad tag: BentoML's own error says it
            pass


def list_runs():
    """(tag, labels) of every model saved by this module, newest first."""
    import bentoml

    models = [m for m in bentoml.models.list() if m.info.module == MODULE]
    models.sort(key=lambda m: m.info.creation_time, reverse=True)
    return [(str(m.tag), dict(m.info.labels)) for m in models]


def _print_list():
    rows = list_runs()
    if not rows:
        print("no stored softvq runs (python -m serving.store RUN_DIR stores one)")
        return
    columns = ("dataset", "model") + LABEL_METRICS[:3]
    print("\t".join(("tag",) + columns))
    for tag, labels in rows:
        print("\t".join([tag] + [labels.get(c, "-") for c in columns]))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m serving.store",
        description="Save a finished run folder into BentoML's model store and print its tag "
        "(serve it with SOFTVQ_MODEL=TAG).",
    )
    parser.add_argument("run_dir", nargs="?", help="a finished run folder, e.g. runs/digits-softvq")
    parser.add_argument("--name", help="model name (default softvq-<dataset>-<model>)")
    parser.add_argument("--list", action="store_true",
                        help="list the stored runs with their metrics instead")
    args = parser.parse_args(argv)
    if args.list:
        _print_list()
        return 0
    if not args.run_dir:
        parser.error("give RUN_DIR (a finished run folder) or --list")
    try:
        tag = save_run(args.run_dir, args.name)
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
