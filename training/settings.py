"""What a training run accepts, and the checks made before Keras is imported.

`FitSettings` (every option of `python -m training.fit` / `training.fit.run`),
the constants they are checked against, the presets (`softvq_keras.presets`,
which imports no Keras), the validation of settings and run folder
(`UsageError`, exit code 2), all made before Keras is imported: nothing here
imports Keras. The backend itself is chosen in `training.backend_choice`.
"""

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from softvq_keras import presets as _presets
from training import artifacts

#: Models with discrete codes (indices, codebook usage and perplexity).
QUANTIZERS = _presets.QUANTIZER_NAMES
#: Models with a learned codebook (K-means init, restarts: vq and softvq; EMA: rvq too).
CODEBOOK_MODELS = ("vq", "softvq")
EMA_MODELS = ("vq", "softvq", "rvq")
#: Models `--codebook-size` applies to (fsq: `--levels`).
CODEBOOK_SIZE_MODELS = ("vq", "softvq", "lfq", "rvq")
ROTATION_MODELS = ("vq", "rvq")
#: Models with a `latent_norm` (batch-standardized latent before the bound / sign).
LATENT_NORM_MODELS = ("fsq", "lfq")
#: `--codebook-init` choices: the paper's random initializer, or `CodebookKMeansInit`.
CODEBOOK_INITS = ("random", "kmeans")
#: `--variance` choices (SoftVectorQuantizer's `variance`).
VARIANCES = ("per_input", "per_code")
#: `--codebook-update` choices (the quantizers' `codebook_update`): gradient or EMA.
CODEBOOK_UPDATES = _presets.CODEBOOK_UPDATES
#: `--infodropout-weighting` choices (`InformationDropout`'s `weighting`).
INFODROPOUT_WEIGHTINGS = _presets.INFODROPOUT_WEIGHTINGS
#: `--softvq-weighting` choices (`SoftVectorQuantizer`'s `weighting`).
SOFTVQ_WEIGHTINGS = _presets.SOFTVQ_WEIGHTINGS
#: Keras' Adam default; TF1's Adam (the authors' notebooks) used 1e-8.
ADAM_EPSILON = 1e-7
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
#: `--kmeans-sample` default: training latents the service's K-means centroids are
#: fitted on (all of MNIST's 60,000, the paper's protocol).
KMEANS_SAMPLE = 60_000
#: `--clusters` default of a run trained without labels (with labels: the classes).
DEFAULT_CLUSTERS = 10
#: `--test-fraction` default: the seeded test split of data that has none.
TEST_FRACTION = 0.2
#: Settings a resumed run must share with the run it continues.
RESUME_KEYS = (
    "dataset", "model", "backend", "batch_size", "learning_rate", "latent_dim", "seed",
    "bottleneck", "codebook_init", "dead_code_restarts", "adam_epsilon", "precision",
    "input_shape", "class_names",
)
#: Values of settings that run folders written before the setting existed lack.
RESUME_DEFAULTS = {
    "codebook_init": "random", "dead_code_restarts": False, "adam_epsilon": ADAM_EPSILON,
    "precision": "float32",
}
#: `--precision` choices: Keras dtype policies (training.distribution applies them).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
#: The same for the bottleneck's own settings (layer arguments added later).
BOTTLENECK_DEFAULTS = {
    "variance": "per_input", "codebook_update": "gradient", "decay": 0.99, "epsilon": 1e-5,
    "dead_code_threshold": 0.0, "rotation_trick": False, "latent_norm": None,
}

EXIT_FAILED = 1
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
    codebook_init: str | None = None  # None: "kmeans" for rvq, else "random"
    dead_code_restarts: bool = False
    codebook_update: str | None = None
    dead_code_threshold: float | None = None
    rotation_trick: bool = False
    levels: str | tuple | None = None  # fsq: "8,4,4"
    num_quantizers: int | None = None  # rvq stages
    quantizer_dropout: bool = False
    latent_norm: str | None = None  # fsq/lfq: "batch" (the preset) or "none"
    infodropout_weighting: str | None = None
    softvq_weighting: str | None = None
    adam_epsilon: float | None = None
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    backend: str | None = None
    resume: bool = False
    overwrite: bool = False
    kmeans_init: int = 100
    probe_epochs: int = 20
    raw_baseline: bool = True
    verbose: int | None = None  # None: fit_verbosity() decides
    precision: str = "float32"
    devices: int | None = None  # per process; None: every visible device
    # The data (issue 9): a user's folder, .npz file or tfds:NAME.
    image_size: str | tuple | None = None  # "HxW"; None: the first image's size
    channels: int | None = None  # 1 or 3; None: 1 when every image is grayscale
    architecture: str | None = None  # "mlp" or "cnn"; None: by image size and channels
    test_fraction: float = TEST_FRACTION
    skip_bad_images: bool = False
    kmeans_sample: int = KMEANS_SAMPLE
    clusters: int | None = None  # None: the number of classes, else DEFAULT_CLUSTERS
    # `--export onnx,litert,...`: `python -m training.export` once the run is finished.
    export: str | None = None

    def __post_init__(self):
        if self.codebook_init is None:
            # rvq's stages collapse to one code from the random codebook on the
            # paper's MLP (digits: usage 3 %); K-means after epoch 1: 93 %.
            self.codebook_init = "kmeans" if self.model == "rvq" else "random"

    @property
    def run_dir(self):
        return Path(self.out or Path("runs") / f"{run_name(self.dataset)}-{self.model}")


def run_name(dataset):
    """A file-name-safe name for DATASET: the built-in name, a folder's or .npz
    file's name (`photos/`, `data/shapes.npz` -> `photos`, `shapes`), or
    `tfds-NAME`."""
    text = str(dataset)
    if text.startswith("tfds:"):
        text = "tfds-" + text[len("tfds:"):]
    elif text not in _presets.DATASETS:
        path = Path(text)
        text = (path.stem if path.suffix.lower() == ".npz" else path.resolve().name) or "data"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def fit_verbosity(verbose, stream=None):
    """Keras `fit` verbosity: `verbose` when given, else a progress bar (1) on a
    terminal and one line per epoch (2) when `stream` (default stdout) is piped
    to a file, which a progress bar would fill with control characters."""
    if verbose is not None:
        return verbose
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if callable(isatty) and isatty() else 2


def load_presets():
    """`softvq_keras.presets`: the datasets and their paper settings (no Keras import).

    The presets are needed for `--help` and validation, which must happen
    before the backend is chosen; `softvq_keras` imports its Keras parts lazily.
    """
    return _presets


#: The command-line model names (the keys of `softvq_keras.BOTTLENECKS`), in the
#: paper's table order; from presets.py, which the CLI reads without Keras.
MODELS = load_presets().MODEL_NAMES


def epochs_for_steps(steps, num_examples, batch_size):
    """Epochs that cover at least `steps` updates: ceil(steps / batches per epoch)."""
    return math.ceil(steps / math.ceil(num_examples / batch_size))


# --------------------------------------------------------------------------
# Validation (no Keras import)


def require(condition, message):
    """Raise `UsageError(message)` unless `condition`."""
    if not condition:
        raise UsageError(message)


def check_export(text):
    """The formats of `--export` (`training.export_formats`), their packages installed,
    checked before training; `UsageError` otherwise."""
    from training.export_formats import missing_packages, parse_formats, pip_command

    try:
        formats = parse_formats(text)
    except ValueError as e:
        raise UsageError(f"--export: {e}") from None
    missing = missing_packages(formats)
    require(not missing, f"--export {text} needs {', '.join(missing)}, not installed: "
                         f"{pip_command(missing)}")
    return formats


def check_settings(s, presets):
    """Refuse bad settings (`UsageError`) before any data or model is loaded."""
    from softvq_keras.data import DataError, source_kind

    try:
        source_kind(s.dataset)
    except DataError as e:
        raise UsageError(str(e)) from None
    require(s.model in MODELS, f"unknown model {s.model!r}; choose one of {', '.join(MODELS)}")
    positive = {
        "--epochs": s.epochs, "--steps": s.steps, "--batch-size": s.batch_size,
        "--latent-dim": s.latent_dim, "--kmeans-init": s.kmeans_init,
        "--probe-epochs": s.probe_epochs, "--kmeans-sample": s.kmeans_sample,
    }
    for flag, value in positive.items():
        require(value is None or (isinstance(value, int) and value > 0),
                 f"{flag} must be a positive integer; got {value}")
    require(s.learning_rate is None or (math.isfinite(s.learning_rate) and s.learning_rate > 0),
             f"--learning-rate must be a positive number; got {s.learning_rate}")
    if s.codebook_size is not None:
        require(s.model in CODEBOOK_SIZE_MODELS,
                 f"--codebook-size applies to {', '.join(CODEBOOK_SIZE_MODELS)} only, not "
                 f"{s.model}" + (" (use --levels)" if s.model == "fsq" else ""))
        require(isinstance(s.codebook_size, int) and s.codebook_size >= 2,
                 f"--codebook-size (K) must be at least 2; got {s.codebook_size}")
        require(s.model != "lfq" or s.codebook_size & (s.codebook_size - 1) == 0,
                 f"--codebook-size must be a power of two for lfq; got {s.codebook_size}")
    if s.levels is not None:
        require(s.model == "fsq", f"--levels applies to fsq only, not {s.model}")
        parse_levels(s.levels)
    if s.num_quantizers is not None:
        require(s.model == "rvq", f"--num-quantizers applies to rvq only, not {s.model}")
        require(isinstance(s.num_quantizers, int) and s.num_quantizers >= 1,
                 f"--num-quantizers must be a positive integer; got {s.num_quantizers}")
    if s.quantizer_dropout:
        require(s.model == "rvq", f"--quantizer-dropout applies to rvq only, not {s.model}")
    if s.latent_norm is not None:
        require(s.model in LATENT_NORM_MODELS,
                 f"--latent-norm applies to {' and '.join(LATENT_NORM_MODELS)} only, not {s.model}")
        require(s.latent_norm in ("batch", "none"),
                 f"--latent-norm must be 'batch' or 'none'; got {s.latent_norm!r}")
    if s.rotation_trick:
        require(s.model in ROTATION_MODELS,
                 f"--rotation-trick applies to {' and '.join(ROTATION_MODELS)} only, not {s.model}")
    if s.dead_code_threshold is not None:
        require(s.model in EMA_MODELS,
                 f"--dead-code-threshold applies to {', '.join(EMA_MODELS)} only, not {s.model}")
        require(s.codebook_update == "ema",
                 "--dead-code-threshold needs --codebook-update ema (it acts on the EMA "
                 "cluster sizes)")
        require(isinstance(s.dead_code_threshold, (int, float))
                and math.isfinite(s.dead_code_threshold) and s.dead_code_threshold >= 0,
                f"--dead-code-threshold must be a non-negative number; got {s.dead_code_threshold}")
    if s.beta is not None:
        require(s.model in BETA_KEYS,
                 f"--beta applies to {', '.join(BETA_KEYS)} only, not {s.model}")
        require(math.isfinite(s.beta) and s.beta >= 0,
                 f"--beta must be a non-negative number; got {s.beta}")
    if s.variance is not None:
        require(s.model == "softvq", f"--variance applies to softvq only, not {s.model}")
        require(s.variance in VARIANCES,
                 f"--variance must be one of {', '.join(VARIANCES)}; got {s.variance!r}")
    require(s.clusters is None or (isinstance(s.clusters, int) and s.clusters >= 2),
             f"--clusters must be an integer of at least 2; got {s.clusters}")
    require(isinstance(s.test_fraction, (int, float)) and 0.0 < s.test_fraction < 1.0,
             f"--test-fraction must be between 0 and 1 (exclusive); got {s.test_fraction}")
    require(s.channels in (None, 1, 3), f"--channels must be 1 or 3; got {s.channels}")
    require(s.architecture in (None, "mlp", "cnn"),
             f"--architecture must be mlp or cnn; got {s.architecture!r}")
    if s.kmeans_sample is not None:
        require(s.kmeans_sample >= 2, f"--kmeans-sample must be at least 2; got {s.kmeans_sample}")
    require(s.codebook_init in CODEBOOK_INITS,
             f"--codebook-init must be one of {', '.join(CODEBOOK_INITS)}; got {s.codebook_init!r}")
    if s.codebook_init != "random":
        require(s.model in EMA_MODELS,
                 f"--codebook-init applies to {', '.join(EMA_MODELS)} only, not {s.model}")
    if s.dead_code_restarts:
        require(s.model in CODEBOOK_MODELS,
                 f"--dead-code-restarts applies to {' and '.join(CODEBOOK_MODELS)} only, "
                 f"not {s.model}")
    if s.codebook_update is not None:
        require(s.model in EMA_MODELS,
                 f"--codebook-update applies to {', '.join(EMA_MODELS)} only, not {s.model}")
        require(s.codebook_update in CODEBOOK_UPDATES,
                 f"--codebook-update must be one of {', '.join(CODEBOOK_UPDATES)}; "
                 f"got {s.codebook_update!r}")
    if s.infodropout_weighting is not None:
        require(s.model == "infodropout",
                 f"--infodropout-weighting applies to infodropout only, not {s.model}")
        require(s.infodropout_weighting in INFODROPOUT_WEIGHTINGS,
                 f"--infodropout-weighting must be one of {', '.join(INFODROPOUT_WEIGHTINGS)}; "
                 f"got {s.infodropout_weighting!r}")
    if s.softvq_weighting is not None:
        require(s.model == "softvq",
                 f"--softvq-weighting applies to softvq only, not {s.model}")
        require(s.softvq_weighting in SOFTVQ_WEIGHTINGS,
                 f"--softvq-weighting must be one of {', '.join(SOFTVQ_WEIGHTINGS)}; "
                 f"got {s.softvq_weighting!r}")
    require(s.adam_epsilon is None
            or (isinstance(s.adam_epsilon, (int, float)) and math.isfinite(s.adam_epsilon)
                and s.adam_epsilon > 0),
            f"--adam-epsilon must be a positive number; got {s.adam_epsilon}")
    require(isinstance(s.seed, int) and s.seed >= 0, f"--seed must be a non-negative integer; got {s.seed}")
    require(s.backend is None or s.backend in BACKENDS,
             f"unknown backend {s.backend!r}; choose one of {', '.join(BACKENDS)}")
    if s.data_dir is not None:
        require(Path(s.data_dir).is_dir(), f"--data-dir {s.data_dir!r} is not a directory")
    require(not (s.resume and s.overwrite), "--resume and --overwrite exclude each other")
    if s.export is not None:
        check_export(s.export)
    require(s.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}; got {s.precision!r}")
    require(s.devices is None or (isinstance(s.devices, int) and s.devices >= 1),
             f"--devices must be a positive integer; got {s.devices}")


def parse_levels(levels):
    """`--levels` as a tuple of ints >= 2: "8,4,4" (or a sequence) -> (8, 4, 4)."""
    if isinstance(levels, str):
        try:
            levels = tuple(int(part) for part in levels.split(","))
        except ValueError:
            raise UsageError(
                f"--levels must be integers >= 2 separated by commas, e.g. 8,4,4; got {levels!r}"
            ) from None
    levels = tuple(levels)
    require(levels and all(isinstance(l, int) and l >= 2 for l in levels),
             f"--levels must be integers >= 2 separated by commas, e.g. 8,4,4; got {levels}")
    return levels


def check_run_dir(s):
    """Refuse a run folder a fresh run would clobber (see `training.fit`'s docstring)."""
    run_dir = s.run_dir
    require(not run_dir.exists() or run_dir.is_dir(), f"--out {str(run_dir)!r} is a file, not a folder")
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
    require((run_dir / artifacts.CONFIG).is_file(),
             f"nothing to resume in {str(run_dir)!r}: it has no {artifacts.CONFIG}")
    require(not finished,
             f"nothing to resume in {str(run_dir)!r}: the run finished; pass --overwrite to train again")
