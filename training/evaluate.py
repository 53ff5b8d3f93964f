"""`python -m training.evaluate RUN_DIR`: recompute a run folder's metrics.json.

`evaluate_run` is the one evaluation of a trained run, used both at the end of
`python -m training.fit` and by this command. It reads only the artifacts
(`encoder.keras`, `autoencoder.keras`, `classifier.keras`, `kmeans.npz`,
`config.json`, `history.json`) and the dataset, and computes on the test split:

- the paper's protocol: K-means (``config.evaluation.kmeans_init`` restarts,
  the run's seed) fitted and scored on the test latents `z`
  (`clustering_accuracy`, `nmi`);
- the stored train-fitted centroids assigning the test latents, mapped to
  labels with the stored Hungarian map, as the service does
  (`clustering_accuracy_train_centroids`, `nmi_train_centroids`);
- the stored softmax head on the test latents (`classification_accuracy`);
- the same protocol on the raw scaled pixels (`raw`; computed once per dataset
  fingerprint with seed 0 and cached, `training.raw_row`; `raw_cached` says
  whether it was read back; skipped when `config.evaluation.raw_baseline` is false);
- codebook usage and perplexity of the autoencoder's `code_probs` on the test
  split (vq, softvq);
- `final_losses` (last epoch of history.json) and `timings_s`.

Options: `--data-dir` where the dataset copy lives (default: the run's),
`--backend` (default: the run's backend, so that the numbers match).
Exit codes: 0, or 2 with a one-line message for a bad folder or missing data.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from training import artifacts
from training.scores import PhaseTimer, single_threaded

#: What `evaluate_run` needs in the run folder (a run without labels: no classifier).
REQUIRED_FILES = (
    artifacts.CONFIG,
    artifacts.HISTORY,
    artifacts.ENCODER,
    artifacts.AUTOENCODER,
    artifacts.CLASSIFIER,
    artifacts.KMEANS,
)
UNLABELLED_NOTE = (
    "trained without labels: no classifier and no accuracy figures; the metrics are "
    "unsupervised (reconstruction error, codebook usage and perplexity, K-means inertia)"
)


def required_files(config):
    """`REQUIRED_FILES` of a run with this config.json."""
    if config.get("labelled", True):
        return REQUIRED_FILES
    return tuple(name for name in REQUIRED_FILES if name != artifacts.CLASSIFIER)
PREDICT_BATCH = 1024


def nearest_centroid(latents, centroids):
    """Index of the closest centroid (squared Euclidean) for every row."""
    latents = np.asarray(latents, dtype=np.float64)
    centroids = np.asarray(centroids, dtype=np.float64)
    distances = (
        np.sum(latents**2, axis=1, keepdims=True)
        - 2.0 * latents @ centroids.T
        + np.sum(centroids**2, axis=1)
    )
    return np.argmin(distances, axis=1)


def codebook_statistics(indices, codes_per_stage):
    """Codebook usage and perplexity of `indices` (N,) or (N, stages), via
    `CodebookUsage`; `codes_per_stage` as the quantizer's."""
    from softvq_keras import CodebookUsage

    metric = CodebookUsage(codes_per_stage)
    metric.update_state(np.asarray(indices, dtype=np.int32))
    return {k: float(np.asarray(v)) for k, v in metric.result().items()}


def _codes_per_stage(autoencoder):
    from softvq_keras.layers import Quantizer

    for layer in autoencoder.layers:
        if isinstance(layer, Quantizer):
            return layer.codes_per_stage
    return None


def autoencoder_statistics(autoencoder, data, split="test"):
    """Reconstruction error (mean squared error per scaled pixel) and, for
    the quantizers, codebook usage and perplexity of the `indices` (distinct
    codes counted, per stage for rvq and averaged), over `split` batch by
    batch (a streamed split is never held whole)."""
    from softvq_keras import CodebookUsage

    squared, values, usage = 0.0, 0, None
    codes_per_stage = _codes_per_stage(autoencoder)
    for x in data.batches(split):
        outputs = autoencoder.predict_on_batch(x)
        reconstruction = np.asarray(outputs["reconstruction"], dtype=np.float64)
        squared += float(np.sum((reconstruction.reshape(x.shape) - x) ** 2))
        values += x.size
        if "indices" in outputs and codes_per_stage is not None:
            if usage is None:
                usage = CodebookUsage(codes_per_stage)
            usage.update_state(np.asarray(outputs["indices"], dtype=np.int32))
    stats = {"reconstruction_error": squared / max(values, 1)}
    if usage is not None:
        stats.update({k: float(np.asarray(v)) for k, v in usage.result().items()})
        stats["codes_per_stage"] = list(codes_per_stage)
        stats["bits_per_image"] = float(sum(np.log2(k) for k in codes_per_stage))
    return stats


def final_losses(history):
    """The last recorded epoch's logged terms (empty if no epoch ran)."""
    epochs = history.get("epochs", [])
    return dict(epochs[-1]["logs"]) if epochs else {}


def evaluate_run(
    run_dir, data=None, *, data_dir=None, timer=None, train_seconds=None, started_at=None
):
    """Compute and write `run_dir/metrics.json`; return the metrics dict.

    Args:
        run_dir: a run folder with the files in `required_files(config)`.
        data: the run's `training.data.RunData`; reopened from config.json
            (and `data_dir`, else the run's) when None.
        data_dir: where to look for a built-in dataset's copy when `data` is None.
        timer: a `PhaseTimer` holding the caller's phases (`load`, `train`);
            evaluation phases are added to it (and announced with its `say`).
        train_seconds: wall time of training; default: the previous
            metrics.json's, else the sum of the epoch times in history.json.
        started_at: `time.perf_counter()` at the start of the command, for
            `timings_s.total` (default: the start of this call).
    """
    import keras

    from softvq_keras import evaluation

    started_at = time.perf_counter() if started_at is None else started_at
    run_dir = Path(run_dir)
    timer = timer or PhaseTimer()
    config = artifacts.read_json(run_dir / artifacts.CONFIG)
    history = artifacts.read_json(run_dir / artifacts.HISTORY)
    protocol = config["evaluation"]
    seed = int(config["seed"])
    labelled = bool(config.get("labelled", True))
    n_clusters = int(config.get("clusters") or config.get("num_classes") or 10)
    if data is None:
        from training.data import open_run_data

        with timer.phase("load"):
            data = open_run_data(config, data_dir)
    n_test = data.count("test")

    with timer.phase("encode", f"Encoding {n_test:,} test images"):
        encoder = keras.saving.load_model(run_dir / artifacts.ENCODER)
        z_test = data.predict(encoder, "test")
    with timer.phase("kmeans", f"K-means x{protocol['kmeans_init']} ({n_clusters} clusters) "
                     f"on {n_test:,} test latents"), single_threaded():
        kmeans = evaluation.fit_kmeans(
            z_test, n_clusters, n_init=protocol["kmeans_init"], seed=seed
        )
        with np.load(run_dir / artifacts.KMEANS, allow_pickle=False) as stored:
            centroids = stored["centroids"]
            clusters = nearest_centroid(z_test, centroids)
            mapping = stored["cluster_to_label"] if labelled else None
    gaps = np.asarray(z_test, np.float64) - np.asarray(centroids, np.float64)[clusters]
    metrics = {"labelled": labelled}
    if labelled:
        y_test = data.labels("test")
        with timer.phase("probe"):
            classifier = keras.saving.load_model(run_dir / artifacts.CLASSIFIER)
            probs = classifier.predict(z_test, batch_size=PREDICT_BATCH, verbose=0)
        metrics.update({
            "clustering_accuracy": evaluation.cluster_accuracy(y_test, kmeans.labels_),
            "nmi": evaluation.nmi(y_test, kmeans.labels_),
            "clustering_accuracy_train_centroids": float(np.mean(mapping[clusters] == y_test)),
            "nmi_train_centroids": evaluation.nmi(y_test, clusters),
            "classification_accuracy": float(
                np.mean(np.argmax(probs, axis=-1) == y_test)
            ),
        })
    else:
        metrics["note"] = UNLABELLED_NOTE
    metrics["kmeans_inertia"] = float(kmeans.inertia_)
    metrics["kmeans_inertia_train_centroids"] = float(np.sum(gaps**2))
    if labelled and protocol.get("raw_baseline", True):
        from training.raw_row import raw_scores

        raw = raw_scores(
            data, kmeans_init=protocol["kmeans_init"], probe_epochs=protocol["probe_epochs"],
            timer=timer, say=timer.say, announce=True,
            test_fraction=(config.get("data_options") or {}).get("test_fraction", 0.2),
        )
        sample = raw.pop("sample")
        metrics["raw"] = {k: raw[k] for k in ("clustering_accuracy", "nmi",
                                              "classification_accuracy")}
        metrics["raw_sample"] = sample
        metrics["raw_cached"] = raw["cached"]
    with timer.phase("encode", f"Reconstructing {n_test:,} test images"):
        from softvq_keras import Autoencoder  # noqa: F401  imports (registers) the custom layers

        autoencoder = keras.saving.load_model(run_dir / artifacts.AUTOENCODER)
        metrics.update(autoencoder_statistics(autoencoder, data, "test"))
    metrics["final_losses"] = final_losses(history)

    seconds_per_epoch = [e["seconds"] for e in history.get("epochs", [])]
    if train_seconds is None:
        previous = run_dir / artifacts.METRICS
        if previous.is_file():
            train_seconds = artifacts.read_json(previous).get("timings_s", {}).get("train")
        if train_seconds is None:
            train_seconds = float(sum(seconds_per_epoch))
    timings = {"train": train_seconds, **timer.seconds}
    timings["total"] = time.perf_counter() - started_at
    timings["seconds_per_epoch"] = seconds_per_epoch
    metrics["timings_s"] = timings
    metrics["epochs_trained"] = len(seconds_per_epoch)
    artifacts.write_json(run_dir / artifacts.METRICS, metrics)
    return metrics


def format_summary(metrics):
    """A few human-readable lines of the headline numbers."""
    if metrics.get("labelled", True):
        lines = [
            f"clustering accuracy {metrics['clustering_accuracy']:.4f}  "
            f"NMI {metrics['nmi']:.4f}  classification {metrics['classification_accuracy']:.4f}",
            f"  train-fitted centroids on test: accuracy "
            f"{metrics['clustering_accuracy_train_centroids']:.4f}  "
            f"NMI {metrics['nmi_train_centroids']:.4f}",
        ]
    else:
        lines = [f"no labels: {metrics.get('note', UNLABELLED_NOTE)}"]
    if "reconstruction_error" in metrics:
        lines.append(
            f"  reconstruction error (MSE per scaled pixel) {metrics['reconstruction_error']:.5f}"
            + (f"  K-means inertia {metrics['kmeans_inertia']:.4g}" if "kmeans_inertia" in metrics
               else "")
        )
    if "raw" in metrics:
        raw = metrics["raw"]
        sample = metrics.get("raw_sample") or {}
        lines.append(
            ("  raw pixels" if sample.get("whole", True) else
             f"  raw pixels ({sample['train']:,} + {sample['test']:,} sampled images)")
            + f": clustering {raw['clustering_accuracy']:.4f}  NMI {raw['nmi']:.4f}  "
            f"classification {raw['classification_accuracy']:.4f}"
        )
    if "codebook_usage" in metrics:
        lines.append(
            f"  codebook usage {metrics['codebook_usage']:.3f}  "
            f"perplexity {metrics['perplexity']:.2f}"
            + (f"  ({metrics['bits_per_image']:g} bits per image)"
               if "bits_per_image" in metrics else "")
        )
    timings = metrics["timings_s"]
    per_epoch = timings.get("seconds_per_epoch") or [0.0]
    lines.append(
        f"  wall time {timings['total']:.1f} s (train {timings['train']:.1f} s, "
        f"{len(timings.get('seconds_per_epoch', []))} epochs, "
        f"{float(np.median(per_epoch)):.2f} s/epoch median)"
    )
    return "\n".join(lines)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    parser = OneLineErrorParser(
        prog="python -m training.evaluate",
        description="Recompute RUN_DIR/metrics.json from the run's artifacts.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by training.fit")
    parser.add_argument(
        "--data-dir", default=None,
        help="folder with the dataset's .npz copy (default: the run's data_dir)",
    )
    parser.add_argument(
        "--backend", choices=("jax", "tensorflow", "torch"), default=None,
        help="Keras backend (default: $KERAS_BACKEND, else the run's backend)",
    )
    return parser


class _NoRetracingWarning(logging.Filter):
    """Drop TensorFlow's "... triggered tf.function retracing" warning."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_retracing_warnings():
    """Keep TensorFlow's retracing warnings out of the progress lines.

    Under the TensorFlow backend, Keras' `predict` and `predict_on_batch` on
    the evaluation's models (the probes, the raw-pixel row, the autoencoder on
    the test split) retrace their `tf.function` for new shapes and models, and
    TensorFlow logs a multi-line warning for it, printed in the middle of a
    phase's "... 0.9 s" line. The cost is in the phase timings; the warning
    tells a user nothing to act on. Other TensorFlow warnings still show.
    """
    logger = logging.getLogger("tensorflow")  # TF's own logger (tf.get_logger())
    if not any(isinstance(f, _NoRetracingWarning) for f in logger.filters):
        logger.addFilter(_NoRetracingWarning())


def main(argv=None):
    """Entry point; returns the exit code."""
    started_at = time.perf_counter()
    quiet_retracing_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"{parser.prog}: error: run folder {str(run_dir)!r} does not exist", file=sys.stderr)
        return 2
    try:
        config = artifacts.read_json(run_dir / artifacts.CONFIG)
    except (OSError, ValueError):
        config = {}
    missing = [name for name in required_files(config) if not (run_dir / name).is_file()]
    if missing:
        print(
            f"{parser.prog}: error: {str(run_dir)!r} is not a finished run: missing "
            f"{', '.join(missing)}", file=sys.stderr,
        )
        return 2
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        print(f"{parser.prog}: error: --data-dir {args.data_dir!r} is not a directory", file=sys.stderr)
        return 2
    backend = args.backend or os.environ.get("KERAS_BACKEND") or config.get("backend")
    if backend:
        os.environ["KERAS_BACKEND"] = backend

    from training.data import import_tensorflow, open_run_data
    from training.settings import UsageError

    import_tensorflow()  # before Keras imports it: its C++ start-up lines silenced
    timer = PhaseTimer(say=print)
    try:
        with timer.phase("load"):
            data = open_run_data(config, args.data_dir,
                                 progress=lambda text: print(text, flush=True))
        metrics = evaluate_run(run_dir, data, timer=timer, started_at=started_at)
    except (UsageError, FileNotFoundError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {run_dir / artifacts.METRICS}")
    print(format_summary(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
