"""`python -m training.fit DATASET MODEL`: train, checkpoint, export, evaluate.

Trains the paper's autoencoder with one bottleneck on one dataset with
`model.fit` (a shuffled, batched, prefetched `tf.data` pipeline and Keras'
progress bar), checkpoints every epoch, then writes the run folder described in
docs/ARTIFACTS.md and its metrics (`training.evaluate.evaluate_run`).

Every option defaults to the dataset's preset (`softvq_keras.presets`, the
paper's values; `--help` lists them). `--steps N` trains
`ceil(N / ceil(n_train / batch_size))` epochs (40,000 updates on MNIST = 43
epochs); `--epochs` overrides it.

The Keras backend is `--backend`, else `$KERAS_BACKEND`, else `jax` for the MLP
datasets (mnist, digits) and `tensorflow` for the CNN ones (svhn, cifar10):
measured on a 2-core CPU, JAX trains the MLP about 2x faster than TensorFlow and
the CNN about 15x slower. It is set before Keras is imported, which is why this
module imports neither Keras nor `softvq_keras` at the top.

The run folder (`--out`, default `runs/<dataset>-<model>/`):

- a fresh run needs an empty or absent folder; a non-empty one is refused
  (exit 2) unless `--resume` (continue an unfinished run from its last
  finished epoch) or `--overwrite` (delete what a run writes there, then start
  over);
- while training, the folder holds `config.json`, `history.json` and
  `checkpoint/` (Keras' `BackupAndRestore`, saved at every epoch end);
  `checkpoint/` is removed once `metrics.json` is written, so a folder with
  `metrics.json` and no `checkpoint/` is a finished run.

Exit codes: 0 done; 2 bad arguments, unusable run folder or unavailable data
(one line on stderr, before any model is built); 3 the loss became NaN or
infinite (nothing exported; the last good epoch stays in `checkpoint/`).

Library use (e.g. to train every row of a table):

>>> from training.fit import run
>>> run_dir = run("digits", "softvq", epochs=2, out="runs/demo")  # doctest: +SKIP
"""

import argparse
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from training import artifacts
from training.evaluate import (
    OneLineErrorParser,
    PhaseTimer,
    evaluate_run,
    format_summary,
    single_threaded,
)

QUANTIZERS = ("vq", "softvq")
#: `--codebook-init` choices: the paper's random initializer, or `CodebookKMeansInit`.
CODEBOOK_INITS = ("random", "kmeans")
#: `--variance` choices (SoftVectorQuantizer's `variance`).
VARIANCES = ("per_input", "per_code")
#: Training inputs encoded by the codebook callbacks (K-means init, dead-code restarts).
CODEBOOK_SAMPLE = 10_000
#: Models whose KL weight `--beta` sets, and the preset key of its default.
BETA_KEYS = {"vae": "vae_beta", "betavae": "betavae_beta", "infodropout": "infodropout_beta"}
BACKENDS = ("jax", "tensorflow", "torch")
#: Default backend per architecture when neither --backend nor KERAS_BACKEND is set.
DEFAULT_BACKEND = {"mlp": "jax", "cnn": "tensorflow"}
CLASS_NAMES = {
    "cifar10": [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ],
}
NUM_CLASSES = 10
#: Settings a resumed run must share with the run it continues.
RESUME_KEYS = (
    "dataset", "model", "backend", "batch_size", "learning_rate", "latent_dim", "seed",
    "bottleneck", "codebook_init", "dead_code_restarts",
)
#: Values of settings that run folders written before the setting existed lack.
RESUME_DEFAULTS = {"codebook_init": "random", "dead_code_restarts": False}
#: The same for the bottleneck's own settings (layer arguments added later).
BOTTLENECK_DEFAULTS = {"variance": "per_input"}

EXIT_USAGE = 2
EXIT_DIVERGED = 3


class UsageError(ValueError):
    """A bad setting, run folder or dataset; reported in one line, exit code 2."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; nothing was exported."""


@dataclass
class FitSettings:
    """Everything `run` accepts; `None` means the dataset's preset value."""

    dataset: str
    model: str
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    latent_dim: int | None = None
    codebook_size: int | None = None
    beta: float | None = None
    variance: str | None = None
    codebook_init: str = "random"
    dead_code_restarts: bool = False
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    backend: str | None = None
    resume: bool = False
    overwrite: bool = False
    kmeans_init: int = 100
    probe_epochs: int = 20
    raw_baseline: bool = True
    verbose: int = 1

    @property
    def run_dir(self):
        return Path(self.out or Path("runs") / f"{self.dataset}-{self.model}")


def load_presets():
    """`softvq_keras.presets` without importing the package (which imports Keras).

    The presets are needed for `--help` and validation, which must happen
    before the backend is chosen; presets.py itself imports nothing heavy.
    """
    if "softvq_keras.presets" in sys.modules:
        return sys.modules["softvq_keras.presets"]
    package = importlib.util.find_spec("softvq_keras")
    path = Path(package.submodule_search_locations[0]) / "presets.py"
    spec = importlib.util.spec_from_file_location("_softvq_presets_keras_free", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


#: The command-line model names (the keys of `softvq_keras.BOTTLENECKS`), in the
#: paper's table order; from presets.py, which the CLI reads without Keras.
MODELS = load_presets().MODEL_NAMES


def epochs_for_steps(steps, num_examples, batch_size):
    """Epochs that cover at least `steps` updates: ceil(steps / batches per epoch)."""
    return math.ceil(steps / math.ceil(num_examples / batch_size))


# --------------------------------------------------------------------------
# Validation (no Keras import)


def _require(condition, message):
    if not condition:
        raise UsageError(message)


def _check_settings(s, presets):
    _require(s.dataset in presets.DATASETS,
             f"unknown dataset {s.dataset!r}; choose one of {', '.join(presets.DATASETS)}")
    _require(s.model in MODELS, f"unknown model {s.model!r}; choose one of {', '.join(MODELS)}")
    positive = {
        "--epochs": s.epochs, "--steps": s.steps, "--batch-size": s.batch_size,
        "--latent-dim": s.latent_dim, "--kmeans-init": s.kmeans_init,
        "--probe-epochs": s.probe_epochs,
    }
    for flag, value in positive.items():
        _require(value is None or (isinstance(value, int) and value > 0),
                 f"{flag} must be a positive integer; got {value}")
    _require(s.learning_rate is None or (math.isfinite(s.learning_rate) and s.learning_rate > 0),
             f"--learning-rate must be a positive number; got {s.learning_rate}")
    if s.codebook_size is not None:
        _require(s.model in QUANTIZERS,
                 f"--codebook-size applies to {' and '.join(QUANTIZERS)} only, not {s.model}")
        _require(s.codebook_size >= 2,
                 f"--codebook-size (K) must be at least 2; got {s.codebook_size}")
    if s.beta is not None:
        _require(s.model in BETA_KEYS,
                 f"--beta applies to {', '.join(BETA_KEYS)} only, not {s.model}")
        _require(math.isfinite(s.beta) and s.beta >= 0,
                 f"--beta must be a non-negative number; got {s.beta}")
    if s.variance is not None:
        _require(s.model == "softvq", f"--variance applies to softvq only, not {s.model}")
        _require(s.variance in VARIANCES,
                 f"--variance must be one of {', '.join(VARIANCES)}; got {s.variance!r}")
    _require(s.codebook_init in CODEBOOK_INITS,
             f"--codebook-init must be one of {', '.join(CODEBOOK_INITS)}; got {s.codebook_init!r}")
    if s.codebook_init != "random" or s.dead_code_restarts:
        flag = "--codebook-init" if s.codebook_init != "random" else "--dead-code-restarts"
        _require(s.model in QUANTIZERS,
                 f"{flag} applies to {' and '.join(QUANTIZERS)} only, not {s.model}")
    _require(isinstance(s.seed, int) and s.seed >= 0, f"--seed must be a non-negative integer; got {s.seed}")
    _require(s.backend is None or s.backend in BACKENDS,
             f"unknown backend {s.backend!r}; choose one of {', '.join(BACKENDS)}")
    if s.data_dir is not None:
        _require(Path(s.data_dir).is_dir(), f"--data-dir {s.data_dir!r} is not a directory")
    _require(not (s.resume and s.overwrite), "--resume and --overwrite exclude each other")


def _check_run_dir(s):
    """Refuse a run folder a fresh run would clobber; see the module docstring."""
    run_dir = s.run_dir
    _require(not run_dir.exists() or run_dir.is_dir(), f"--out {str(run_dir)!r} is a file, not a folder")
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if not entries or s.overwrite:
        return
    finished = (run_dir / artifacts.METRICS).is_file() and not (run_dir / artifacts.CHECKPOINT).exists()
    if not s.resume:
        state = "a finished run" if finished else (
            "an unfinished run: add --resume to continue it" if (run_dir / artifacts.CONFIG).is_file()
            else f"holds {', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}"
        )
        raise UsageError(
            f"run folder {str(run_dir)!r} is not empty ({state}); pass --overwrite to "
            "replace it or --out to pick another folder"
        )
    _require((run_dir / artifacts.CONFIG).is_file(),
             f"nothing to resume in {str(run_dir)!r}: it has no {artifacts.CONFIG}")
    _require(not finished,
             f"nothing to resume in {str(run_dir)!r}: the run finished; pass --overwrite to train again")


def choose_backend(s, presets):
    """Set `KERAS_BACKEND` (before Keras is imported) and return its name."""
    requested = s.backend or os.environ.get("KERAS_BACKEND")
    if "keras" in sys.modules:
        import keras

        current = keras.backend.backend()
        _require(s.backend is None or s.backend == current,
                 f"Keras is already imported with the {current} backend in this process; "
                 f"cannot switch to {s.backend}")
        return current
    backend = requested or DEFAULT_BACKEND[presets.DATASETS[s.dataset].architecture]
    _require(backend in BACKENDS, f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    os.environ["KERAS_BACKEND"] = backend
    return backend


# --------------------------------------------------------------------------
# Training pieces (Keras imported lazily)


def training_pipeline(x, batch_size, seed):
    """`tf.data`: shuffled indices (reshuffled every epoch), batched, gathered, prefetched.

    Shuffling indices rather than images keeps the shuffle buffer small.
    """
    import tensorflow as tf

    images = tf.constant(x)
    return (
        tf.data.Dataset.range(len(x))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(lambda idx: tf.gather(images, idx), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _callbacks(run_dir, resuming):
    import keras

    class EpochLog(keras.callbacks.Callback):
        """Writes history.json (seconds and logged terms per epoch) at each epoch end.

        On a resumed run it starts from the previous records, cut at the epoch
        Keras restarts from: history.json is written just before the
        checkpoint, so it may hold one epoch more than the checkpoint.
        """

        def __init__(self, path, records):
            super().__init__()
            self.path, self.records = path, list(records)

        def on_epoch_begin(self, epoch, logs=None):
            self.records = [r for r in self.records if r["epoch"] <= epoch]
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.records.append({
                "epoch": epoch + 1,
                "seconds": time.perf_counter() - self.started,
                "logs": {k: float(v) for k, v in (logs or {}).items()},
            })
            artifacts.write_json(self.path, {"epochs": self.records})

    class StopOnNaN(keras.callbacks.TerminateOnNaN):
        """`TerminateOnNaN(raise_error=True)` raising `TrainingDiverged`.

        Raising (rather than a graceful stop) keeps `BackupAndRestore` from
        saving the diverged weights as the latest epoch.
        """

        def __init__(self):
            super().__init__(raise_error=True)
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_batch_end(self, batch, logs=None):
            try:
                super().on_batch_end(batch, logs)
            except RuntimeError:
                raise TrainingDiverged(
                    f"the loss became {logs.get('loss')} at epoch {self.epoch + 1}, "
                    f"batch {batch + 1}"
                ) from None

    history_path = run_dir / artifacts.HISTORY
    records = []
    if resuming and history_path.is_file():
        records = artifacts.read_json(history_path)["epochs"]
    return [
        EpochLog(history_path, records),  # written before the checkpoint
        # double_checkpoint: a process killed while writing the weights leaves the
        # previous epoch's copy (*.bkp), which BackupAndRestore falls back to.
        keras.callbacks.BackupAndRestore(
            str(run_dir / artifacts.CHECKPOINT), save_freq="epoch",
            double_checkpoint=True, delete_checkpoint=False,
        ),
        StopOnNaN(),
    ]


def _codebook_callbacks(s, x_train):
    """The optional codebook maintenance of vq / softvq (softvq_keras.callbacks)."""
    import numpy as np

    from softvq_keras.callbacks import CodebookKMeansInit, DeadCodeRestart

    rng = np.random.default_rng(s.seed)
    sample = x_train[np.sort(rng.permutation(len(x_train))[:CODEBOOK_SAMPLE])]
    found = []
    if s.codebook_init == "kmeans":
        found.append(CodebookKMeansInit(sample, at_epoch=1, seed=s.seed))
    if s.dead_code_restarts:
        found.append(DeadCodeRestart(sample, seed=s.seed))
    return found


def _restored_epoch(run_dir):
    """Epochs finished according to the checkpoint (0 when there is none)."""
    path = run_dir / artifacts.CHECKPOINT / "training_metadata.json"
    return int(artifacts.read_json(path)["epoch"]) if path.is_file() else 0


def _versions(backend):
    import keras
    import numpy

    import softvq_keras

    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        backend: importlib.import_module(backend).__version__,
        "numpy": numpy.__version__,
        "softvq_keras": softvq_keras.__version__,
    }


def _run_config(s, backend, info, hyper, splits, bottleneck):
    """config.json (docs/ARTIFACTS.md) as plain JSON values."""
    config = {
        "dataset": s.dataset,
        "model": s.model,
        "backend": backend,
        "image_shape": info.image_shape,
        "input_shape": info.input_shape,
        "pixel_max": info.pixel_max,
        "offset": info.offset,
        "architecture": info.architecture,
        "num_classes": NUM_CLASSES,
        "class_names": CLASS_NAMES.get(s.dataset, [str(i) for i in range(NUM_CLASSES)]),
        "bottleneck": bottleneck.get_config(),
        "codebook_init": s.codebook_init,
        "dead_code_restarts": s.dead_code_restarts,
        **hyper,
        "steps": hyper["epochs"] * hyper["steps_per_epoch"],
        "seed": s.seed,
        "pixel_variance": splits.pixel_variance,
        "num_train": len(splits.x_train),
        "num_test": len(splits.x_test),
        "evaluation": {
            "kmeans_init": s.kmeans_init,
            "probe_epochs": s.probe_epochs,
            "raw_baseline": s.raw_baseline,
        },
        "data_dir": s.data_dir,
        "data_source": splits.source,
        "versions": _versions(backend),
    }
    return json.loads(json.dumps(artifacts.to_builtin(config)))


def _check_resumable(run_dir, config):
    stored = {**RESUME_DEFAULTS, **artifacts.read_json(run_dir / artifacts.CONFIG)}
    if isinstance(stored.get("bottleneck"), dict) and isinstance(config.get("bottleneck"), dict):
        added = {k: v for k, v in BOTTLENECK_DEFAULTS.items() if k in config["bottleneck"]}
        stored["bottleneck"] = {**added, **stored["bottleneck"]}
    changed = [k for k in RESUME_KEYS if stored.get(k) != config.get(k)]
    _require(not changed,
             f"cannot resume {str(run_dir)!r}: {', '.join(changed)} differ from the stored "
             f"run ({'; '.join(f'{k}: {stored.get(k)!r} vs {config.get(k)!r}' for k in changed[:2])})")


def _fit_downstream(run_dir, encoder, splits, config, timer):
    """K-means on the training latents (kmeans.npz) and the softmax head (classifier.keras)."""
    from softvq_keras import evaluation

    seed = config["seed"]
    with timer.phase("encode"):
        z_train = encoder.predict(splits.x_train, batch_size=1024, verbose=0)
    with timer.phase("kmeans"), single_threaded():
        kmeans = evaluation.fit_kmeans(
            z_train, NUM_CLASSES, n_init=config["evaluation"]["kmeans_init"], seed=seed
        )
        artifacts.write_npz(
            run_dir / artifacts.KMEANS,
            centroids=kmeans.cluster_centers_.astype("float32"),
            cluster_to_label=evaluation.cluster_label_map(
                splits.y_train, kmeans.labels_, NUM_CLASSES
            ).astype("int64"),
        )
    with timer.phase("probe"):
        classifier, _ = evaluation.linear_probe(
            z_train, splits.y_train, epochs=config["evaluation"]["probe_epochs"],
            seed=seed, num_classes=NUM_CLASSES,
        )
        artifacts.save_keras_model(classifier, run_dir / artifacts.CLASSIFIER)


def train_and_export(settings, callbacks=()):
    """Validate `settings`, train, export and evaluate; return the run folder.

    `callbacks` are extra Keras callbacks appended to the run's own. Raises
    `UsageError` for bad settings / folder / data (before building a model)
    and `TrainingDiverged` for a NaN loss.
    """
    started_at = time.perf_counter()
    presets = load_presets()
    _check_settings(settings, presets)
    _check_run_dir(settings)
    backend = choose_backend(settings, presets)

    import keras

    from softvq_keras import build_autoencoder, make_bottleneck
    from softvq_keras import data as datasets

    s, run_dir = settings, settings.run_dir
    info = presets.DATASETS[s.dataset]
    preset = presets.preset(s.dataset)
    timer = PhaseTimer()
    with timer.phase("load"):
        try:
            splits = datasets.load(s.dataset, s.data_dir)
        except (datasets.DataUnavailableError, FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None

    batch_size = s.batch_size or preset["batch_size"]
    steps_per_epoch = math.ceil(len(splits.x_train) / batch_size)
    hyper = {
        "epochs": s.epochs or epochs_for_steps(
            s.steps or preset["steps"], len(splits.x_train), batch_size
        ),
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "learning_rate": s.learning_rate or preset["learning_rate"],
        "latent_dim": s.latent_dim or preset["latent_dim"],
    }

    keras.backend.clear_session()  # a fresh state for every run in one process
    keras.utils.set_random_seed(s.seed)
    try:
        bottleneck = make_bottleneck(
            s.model, s.dataset, seed=s.seed, codebook_size=s.codebook_size, beta=s.beta,
            variance=s.variance,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    config = _run_config(s, backend, info, hyper, splits, bottleneck)
    resuming = s.resume and (run_dir / artifacts.CONFIG).is_file()
    if resuming:
        _check_resumable(run_dir, config)
    elif s.overwrite:
        artifacts.remove_run_entries(run_dir)

    autoencoder, encoder = build_autoencoder(
        bottleneck, info.input_shape, hyper["latent_dim"], info.architecture,
        pixel_variance=splits.pixel_variance,
    )
    autoencoder.compile(optimizer=keras.optimizers.Adam(hyper["learning_rate"]))
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(run_dir / artifacts.CONFIG, config)

    if resuming:
        print(f"Resuming {run_dir} after epoch {_restored_epoch(run_dir)} of {hyper['epochs']}.")
    with timer.phase("train"):
        autoencoder.fit(
            training_pipeline(splits.x_train, batch_size, s.seed),
            epochs=hyper["epochs"],
            callbacks=[
                *_callbacks(run_dir, resuming),
                *_codebook_callbacks(s, splits.x_train),
                *callbacks,
            ],
            verbose=s.verbose,
            shuffle=False,  # the pipeline shuffles, with the seed
        )
    with timer.phase("export"):
        artifacts.save_keras_model(encoder, run_dir / artifacts.ENCODER)
        artifacts.save_keras_model(autoencoder, run_dir / artifacts.AUTOENCODER)
        if backend == "tensorflow":
            artifacts.export_saved_model(encoder, run_dir / artifacts.SAVED_MODEL)
    _fit_downstream(run_dir, encoder, splits, config, timer)
    evaluate_run(
        run_dir, splits, timer=timer, train_seconds=timer.seconds["train"],
        started_at=started_at,
    )
    artifacts.remove_checkpoint(run_dir)
    return run_dir


def run(dataset, model, *, callbacks=(), **options):
    """Train `model` on `dataset` and write its run folder; return the folder.

    `options` are the fields of `FitSettings` (the command-line options, with
    underscores); `callbacks` extra Keras callbacks. See `train_and_export`.
    """
    return train_and_export(FitSettings(dataset, model, **options), callbacks)


# --------------------------------------------------------------------------
# Command line


def _defaults_table(presets):
    """The per-dataset defaults as a small text table for `--help`."""
    header = ("dataset", "arch", "backend", "steps", "batch", "lr", "d", "K softvq/vq",
              "beta vae/betavae/infodropout")
    rows = [header]
    for name, info in presets.DATASETS.items():
        p = presets.PRESETS[name]
        rows.append((
            name, info.architecture, DEFAULT_BACKEND[info.architecture], str(p["steps"]),
            str(p["batch_size"]), f"{p['learning_rate']:g}", str(p["latent_dim"]),
            f"{p['softvq_codes']}/{p['vq_codes']}",
            "/".join(f"{p[key]:g}" for key in BETA_KEYS.values()),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["per-dataset defaults (the paper's settings; digits is this project's):"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def build_parser(presets=None):
    """The argument parser; `--help` lists each dataset's defaults."""
    presets = presets or load_presets()
    parser = OneLineErrorParser(
        prog="python -m training.fit",
        description=(
            "Train an autoencoder with one bottleneck, checkpoint every epoch, export "
            "the encoder, K-means centroids and softmax head, and evaluate "
            "(writes the run folder of docs/ARTIFACTS.md)."
        ),
        epilog=_defaults_table(presets)
        + "\n\nexit codes: 0 done; 2 bad arguments, run folder or data; 3 NaN loss.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset_default = "(default: the dataset's preset, below)"
    parser.add_argument("dataset", metavar="DATASET", help=f"one of {', '.join(presets.DATASETS)}")
    parser.add_argument("model", metavar="MODEL", help=f"one of {', '.join(MODELS)}")
    length = parser.add_argument_group("training length")
    length.add_argument("--epochs", type=int, help="epochs to train; overrides --steps")
    length.add_argument(
        "--steps", type=int,
        help=f"optimizer updates, rounded up to whole epochs {preset_default}",
    )
    hp = parser.add_argument_group("hyperparameters")
    hp.add_argument("--batch-size", type=int, help=f"batch size {preset_default}")
    hp.add_argument("--learning-rate", type=float, help=f"Adam learning rate {preset_default}")
    hp.add_argument("--latent-dim", type=int, help=f"latent dimension d {preset_default}")
    hp.add_argument(
        "--codebook-size", type=int,
        help=f"codebook size K (>= 2) of vq and softvq {preset_default}",
    )
    hp.add_argument(
        "--beta", type=float,
        help=f"KL weight of vae, betavae and infodropout {preset_default}",
    )
    hp.add_argument(
        "--variance", choices=VARIANCES,
        help="softvq codeword variances: 'per_input' (the paper's s head, one per "
        "codeword and input) or 'per_code' (one free variance per codeword) "
        "(default: per_input)",
    )
    hp.add_argument(
        "--codebook-init", choices=CODEBOOK_INITS, default="random",
        help="vq/softvq codebook: 'random' (the paper's initializer) or 'kmeans' "
        "(re-initialized after epoch 1 to the K-means centroids of the latents of "
        f"{CODEBOOK_SAMPLE:,} training inputs) (default: random)",
    )
    hp.add_argument(
        "--dead-code-restarts", action="store_true",
        help="vq/softvq: before every epoch, move codewords that no input of a "
        f"{CODEBOOK_SAMPLE:,}-input training sample picks onto encoder outputs "
        "(default: off, as in the paper)",
    )
    hp.add_argument("--seed", type=int, default=0, help="random seed of everything (default: 0)")
    io = parser.add_argument_group("data, output and backend")
    io.add_argument(
        "--data-dir",
        help="folder holding DATASET.npz (default: $SOFTVQ_DATA_DIR, else "
        "tensorflow-datasets; digits needs nothing)",
    )
    io.add_argument("--out", help="run folder (default: runs/DATASET-MODEL)")
    io.add_argument(
        "--backend", choices=BACKENDS,
        help="Keras backend (default: $KERAS_BACKEND, else jax for mlp datasets and "
        "tensorflow for cnn datasets)",
    )
    mode = io.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true",
        help="continue the unfinished run in the folder from its last finished epoch "
        "(an empty or absent folder starts a fresh run)",
    )
    mode.add_argument(
        "--overwrite", action="store_true",
        help="delete a previous run's files in the folder and start over "
        "(without --resume/--overwrite a non-empty folder is refused)",
    )
    ev = parser.add_argument_group("evaluation")
    ev.add_argument(
        "--kmeans-init", type=int, default=100,
        help="K-means initializations (default: 100, the paper's)",
    )
    ev.add_argument(
        "--probe-epochs", type=int, default=20,
        help="epochs of the softmax head on the latents (default: 20)",
    )
    ev.add_argument(
        "--skip-raw", dest="raw_baseline", action="store_false",
        help="skip the raw-pixel row (metrics.json then has no 'raw'; e.g. when a "
        "script computes it once per dataset)",
    )
    ev.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), default=1,
        help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch (default: 1)",
    )
    return parser


def main(argv=None):
    """Entry point of `python -m training.fit`; returns the exit code."""
    presets = load_presets()
    parser = build_parser(presets)
    args = parser.parse_args(argv)
    settings = FitSettings(**{f.name: getattr(args, f.name) for f in fields(FitSettings)})
    try:
        run_dir = train_and_export(settings)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as e:
        checkpoint = settings.run_dir / artifacts.CHECKPOINT
        kept = f"; the last good epoch is in {checkpoint}" if checkpoint.is_dir() else ""
        print(
            f"{parser.prog}: error: training diverged: {e}; nothing was exported{kept}",
            file=sys.stderr,
        )
        return EXIT_DIVERGED
    metrics = artifacts.read_json(run_dir / artifacts.METRICS)
    print(f"Wrote {run_dir}/ ({', '.join(sorted(p.name for p in run_dir.iterdir()))})")
    print(format_summary(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
