"""The command line of `python -m training.fit`: its parser, `--help`, exit codes.

`build_parser` defines every option (each defaults to the dataset's preset;
`--help` ends with the per-dataset defaults table), and `main` maps the parsed
options onto `FitSettings`, runs `training.run.train_and_export` and turns its
errors into one line on stderr and an exit code: 1 for a
`DistributedRunError` (another process failed, replicas differ), 2 for a
`UsageError` (bad setting, run folder or data), 3 for `TrainingDiverged` (NaN loss).
Processes other than 0 of a multi-process run print one line and exit 0.
"""

import argparse
import os
import sys
from dataclasses import fields

from training import artifacts
from training.distribution import DistributedRunError, is_chief_process, processes_from_env
from training.evaluate import OneLineErrorParser, format_summary, quiet_retracing_warnings
from training.export import ExportFailed
from training.run import train_and_export
from training.settings import (
    ADAM_EPSILON,
    BACKENDS,
    BETA_KEYS,
    CODEBOOK_INITS,
    CODEBOOK_SAMPLE,
    CODEBOOK_UPDATES,
    DEFAULT_BACKEND,
    DEFAULT_CLUSTERS,
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_USAGE,
    INFODROPOUT_WEIGHTINGS,
    KMEANS_SAMPLE,
    MODELS,
    PRECISIONS,
    SOFTVQ_WEIGHTINGS,
    TEST_FRACTION,
    VARIANCES,
    FitSettings,
    TrainingDiverged,
    UsageError,
    load_presets,
)


def _defaults_table(presets):
    """The per-dataset defaults as a small text table for `--help`."""
    header = ("dataset", "arch", "backend", "steps", "batch", "lr", "d", "K softvq/vq",
              "fsq levels", "K lfq", "rvq", "beta vae/betavae/infodropout")
    rows = [header]
    for name, info in presets.DATASETS.items():
        p = presets.PRESETS[name]
        rows.append((
            name, info.architecture, DEFAULT_BACKEND[info.architecture], str(p["steps"]),
            str(p["batch_size"]), f"{p['learning_rate']:g}", str(p["latent_dim"]),
            f"{p['softvq_codes']}/{p['vq_codes']}",
            ",".join(str(level) for level in p["fsq_levels"]), str(p["lfq_codes"]),
            f"{p['rvq_stages']}x{p['rvq_codes']}",
            "/".join(f"{p[key]:g}" for key in BETA_KEYS.values()),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["per-dataset defaults (the paper's settings; digits is this project's):"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    bits = []
    for name in presets.DATASETS:
        p = presets.PRESETS[name]
        bits.append(f"{name}: " + ", ".join(
            f"{model} {presets.code_bits(model, p):g}" for model in presets.QUANTIZER_NAMES))
    lines += ["bits per image (log2 of the number of codes, summed over rvq's stages):"]
    lines += [f"  - {line}" for line in bits]
    lines += [
        "your own images (a folder, an .npz file, tfds:NAME) take the mnist row's defaults",
        "with the MLP and the svhn row's with the CNN (steps: the same number of updates).",
    ]
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
        + "\n\nexit codes: 0 done; 1 another process of a multi-process run failed; "
        "2 bad arguments, run folder or data, or a package --export needs; 3 NaN loss, "
        "or an --export that differs from its .keras model (the run itself is finished).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset_default = "(default: the dataset's preset, below)"
    parser.add_argument(
        "dataset", metavar="DATASET",
        help=f"a built-in name ({', '.join(presets.DATASETS)}); a folder of images "
        "(FOLDER/CLASS/*.png|jpg|jpeg|bmp|gif, or FOLDER/train/CLASS/... and "
        "FOLDER/test/CLASS/...; images directly in FOLDER: no labels); an .npz file "
        "(x_train, x_test uint8, optionally y_train, y_test); or tfds:NAME",
    )
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
        help="codebook size K (>= 2) of vq and softvq, of lfq (a power of two: "
        f"log2 K sign bits) and of each rvq stage {preset_default}",
    )
    hp.add_argument(
        "--levels", metavar="L1,L2,...",
        help="fsq: levels per channel, each >= 2, e.g. 8,4,4 (128 codes, 7 bits) "
        f"{preset_default}",
    )
    hp.add_argument(
        "--num-quantizers", type=int,
        help=f"rvq: number of residual stages {preset_default}",
    )
    hp.add_argument(
        "--quantizer-dropout", action="store_true",
        help="rvq: in training, keep a random prefix of the stages per batch "
        "(SoundStream) (default: off)",
    )
    hp.add_argument(
        "--rotation-trick", action="store_true",
        help="vq/rvq: pass the codewords to the decoder with the rotation trick "
        "(Fifty et al. 2024) instead of straight-through (default: off)",
    )
    hp.add_argument(
        "--latent-norm", choices=("batch", "none"),
        help="fsq/lfq: 'batch' standardizes each channel of the projected latent over "
        "the batch before the bound / sign (without it the MLP's latent drifts to one "
        "code); 'none' is the reference layer (default: batch)",
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
        "--codebook-init", choices=CODEBOOK_INITS,
        help="vq/softvq/rvq codebook: 'random' (the paper's initializer) or 'kmeans' "
        "(re-initialized after epoch 1 to the K-means centroids of the latents of "
        f"{CODEBOOK_SAMPLE:,} training inputs) (default: kmeans for rvq, whose "
        "stages otherwise collapse to one code on the MLP; random for vq/softvq)",
    )
    hp.add_argument(
        "--dead-code-restarts", action="store_true",
        help="vq/softvq: before every epoch, move codewords that no input of a "
        f"{CODEBOOK_SAMPLE:,}-input training sample picks onto encoder outputs "
        "(default: off, as in the paper)",
    )
    hp.add_argument(
        "--codebook-update", choices=CODEBOOK_UPDATES,
        help="vq/softvq/rvq codebook learning: 'gradient' (the paper's codebook loss) or "
        "'ema' (exponential moving averages of the assigned encoder outputs, decay "
        "0.99; the codebook gets no gradient: vq and rvq drop the codebook loss term, "
        "softvq keeps it since it also trains the encoder and the variance head "
        "through the posterior, and uses the posterior as soft counts) "
        "(default: gradient)",
    )
    hp.add_argument(
        "--dead-code-threshold", type=float,
        help="with --codebook-update ema: a code whose EMA cluster size (picks per "
        "batch) falls under this value is moved onto an encoder output of the batch, "
        "distinct rows (default: 0, off)",
    )
    hp.add_argument(
        "--infodropout-weighting", choices=INFODROPOUT_WEIGHTINGS,
        help="infodropout cost: 'safe' (ours: summed over units, per pixel of the "
        "reconstruction) or 'notebook' (the authors' notebook: mean over batch and "
        "units, linear z head) (default: safe)",
    )
    hp.add_argument(
        "--softvq-weighting", choices=SOFTVQ_WEIGHTINGS,
        help="softvq posterior weights: 'mnist_code' (the MNIST notebook's softmax of "
        "-lambda_k D_k / 2 + s_k), 'svhn_code' (the SVHN notebook's: softmax of "
        "-lambda_k D_k / 2, each weight then scaled by sigma_k) or 'gaussian' (the "
        "isotropic Gaussian posterior) (default: the dataset preset's, mnist_code)",
    )
    hp.add_argument(
        "--adam-epsilon", type=float,
        help=f"Adam's epsilon (default: Keras' {ADAM_EPSILON:g}; the authors' TF1 "
        "notebooks used 1e-8)",
    )
    hp.add_argument("--seed", type=int, default=0, help="random seed of everything (default: 0)")
    own = parser.add_argument_group("your own images (folders, .npz files, tfds:NAME)")
    own.add_argument(
        "--image-size", metavar="HxW",
        help="resize every image to HxW, e.g. 64x64 (default: the first image's size; "
        "the CNN needs sides that are multiples of 16)",
    )
    own.add_argument(
        "--channels", type=int, choices=(1, 3),
        help="1 (grayscale) or 3 (RGB) (default: 1 when every image is grayscale)",
    )
    own.add_argument(
        "--architecture", choices=("mlp", "cnn"),
        help="mlp or cnn (default: the MLP for one-channel images up to 28x28, else the CNN)",
    )
    own.add_argument(
        "--test-fraction", type=float, default=TEST_FRACTION,
        help="the seeded test split of data that has none (no train/test folders, no "
        f"x_test) (default: {TEST_FRACTION})",
    )
    own.add_argument(
        "--skip-bad-images", action="store_true",
        help="skip (and count) corrupt or truncated image files instead of stopping "
        "at the first (default: stop, naming it)",
    )
    io = parser.add_argument_group("data, output and backend")
    io.add_argument(
        "--data-dir",
        help="folder holding DATASET.npz (default: $SOFTVQ_DATA_DIR, else "
        "tensorflow-datasets; digits needs nothing); for tfds:NAME the "
        "tensorflow-datasets data folder",
    )
    io.add_argument(
        "--out",
        help="run folder (default: runs/NAME-MODEL, NAME the dataset, folder or file name)",
    )
    io.add_argument(
        "--backend", choices=BACKENDS,
        help="Keras backend (default: $KERAS_BACKEND, else jax for mlp datasets and "
        "tensorflow for cnn datasets on a CPU, jax when a GPU is visible or several "
        "processes train)",
    )
    hw = parser.add_argument_group("devices and precision")
    hw.add_argument(
        "--devices", type=int,
        help="devices to train on, per process (default: every device the backend sees; "
        "1 turns data parallelism off). Several (JAX): data parallel, --batch-size stays "
        "the global batch. Several processes: set KERAS_DISTRIBUTION_JOB_ADDRESSES, "
        "KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID",
    )
    hw.add_argument(
        "--precision", choices=PRECISIONS, default="float32",
        help="Keras dtype policy: mixed_* compute the encoder and decoder in 16 bits "
        "(the quantizer stays float32; weights and exports are float32) (default: float32)",
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
    io.add_argument(
        "--export", metavar="FORMATS",
        help="once the run is finished, export it with python -m training.export: onnx, "
        "litert, openvino, saved_model or all, comma-separated (needs the export extra; "
        "runs under TensorFlow whatever --backend; exit 3 when an export differs from its "
        ".keras model)",
    )
    ev = parser.add_argument_group("evaluation")
    ev.add_argument(
        "--kmeans-init", type=int, default=100,
        help="K-means initializations (default: 100, the paper's)",
    )
    ev.add_argument(
        "--kmeans-sample", type=int, default=KMEANS_SAMPLE,
        help="training latents the service's K-means centroids are fitted on, at most "
        f"(default: {KMEANS_SAMPLE:,}: all of MNIST)",
    )
    ev.add_argument(
        "--clusters", type=int,
        help=f"K-means clusters (default: the number of classes; {DEFAULT_CLUSTERS} "
        "without labels)",
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
        "--verbose", type=int, choices=(0, 1, 2),
        help="Keras fit verbosity: 0 silent (no progress lines either), 1 progress bar, "
        "2 one line per epoch "
        "(default: 1 on a terminal, 2 when the output goes to a file or pipe)",
    )
    return parser


def _leave(code):
    """`code`; in a multi-process run, end the process now instead: JAX's
    shutdown would wait for every other process, lost ones included."""
    try:
        several = processes_from_env()[0] > 1
    except UsageError:
        several = False
    if several and "jax._src.distributed" in sys.modules:
        from jax._src import distributed

        if distributed.global_state.client is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


def main(argv=None):
    """Entry point of `python -m training.fit`; returns the exit code."""
    quiet_retracing_warnings()  # no TensorFlow retracing warning inside the progress lines
    presets = load_presets()
    parser = build_parser(presets)
    args = parser.parse_args(argv)
    settings = FitSettings(**{f.name: getattr(args, f.name) for f in fields(FitSettings)})
    export_failed = None
    try:
        run_dir = train_and_export(settings)
    except ExportFailed as e:  # the run is finished: say so, then why the export is not
        run_dir, export_failed = settings.run_dir, e
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return _leave(EXIT_USAGE)
    except DistributedRunError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return _leave(EXIT_FAILED)
    except TrainingDiverged as e:
        checkpoint = settings.run_dir / artifacts.CHECKPOINT
        kept = f"; the last good epoch is in {checkpoint}" if checkpoint.is_dir() else ""
        print(
            f"{parser.prog}: error: training diverged: {e}; nothing was exported{kept}",
            file=sys.stderr,
        )
        return _leave(EXIT_DIVERGED)
    if not is_chief_process():
        print(f"Trained; process 0 wrote {run_dir}/.")
        return 0
    metrics = artifacts.read_json(run_dir / artifacts.METRICS)
    print(f"Wrote {run_dir}/ ({', '.join(sorted(p.name for p in run_dir.iterdir()))})")
    print(format_summary(metrics))
    if export_failed is not None:
        print(f"{parser.prog}: error: {export_failed}", file=sys.stderr)
        return export_failed.code
    return 0
