"""One training run: train, checkpoint, export, fit the downstream heads, evaluate.

`train_and_export(settings)` (and its keyword form `run(dataset, model, ...)`)
validates the settings (`training.settings`), chooses the backend, then imports
Keras, loads the data, builds and compiles the autoencoder, trains it with
`model.fit` on a `tf.data` pipeline with the run's callbacks
(`training.callbacks`), exports the Keras models, fits the K-means centroids
and the softmax head on the training latents and writes metrics.json
(`training.evaluate.evaluate_run`). The run folder is docs/ARTIFACTS.md's;
`config.json` is built by `run_config`.
"""

import functools
import importlib
import json
import platform
import time

import numpy as np

from training import artifacts, checkpoint, distribution
from training.backend_choice import choose_backend
from training.callbacks import codebook_callbacks, run_callbacks
from training.data import (
    data_kind,
    import_tensorflow,
    open_data,
    source_options,
    training_pipeline,  # noqa: F401  (re-exported)
)
from training.evaluate import evaluate_run
from training.scores import PhaseTimer, single_threaded
from training.settings import (
    ADAM_EPSILON,
    BOTTLENECK_DEFAULTS,
    DEFAULT_CLUSTERS,
    RESUME_DEFAULTS,
    RESUME_KEYS,
    FitSettings,
    TrainingDiverged,
    UsageError,
    check_run_dir,
    check_settings,
    epochs_for_steps,
    fit_verbosity,
    load_presets,
    parse_levels,
    require,
)


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


def run_config(s, backend, info, hyper, data, bottleneck, plan=None):
    """config.json (docs/ARTIFACTS.md) as plain JSON values.

    `info` is the data's `SourceInfo`; `data` its `training.data.RunData`;
    `plan` the devices (`training.distribution.Plan`).
    """
    from pathlib import Path

    source = data.info
    kind = source.kind
    config = {
        "dataset": s.dataset,
        "dataset_kind": kind,
        # An absolute path, so that training.evaluate finds a folder / .npz from anywhere.
        "dataset_path": str(Path(s.dataset).resolve()) if kind in ("folder", "npz") else None,
        "model": s.model,
        "backend": backend,
        "image_shape": source.image_shape,
        "input_shape": source.input_shape,
        "channels": source.channels,
        "pixel_max": source.pixel_max,
        "offset": source.offset,
        "architecture": source.architecture,
        "preset": source.preset,
        "labelled": source.labelled,
        "num_classes": source.num_classes,
        "class_names": source.class_names,
        "clusters": s.clusters or source.num_classes or DEFAULT_CLUSTERS,
        "bottleneck": bottleneck.get_config(),
        "codebook_init": s.codebook_init,
        "dead_code_restarts": s.dead_code_restarts,
        **hyper,
        "steps": hyper["epochs"] * hyper["steps_per_epoch"],
        "seed": s.seed,
        "pixel_variance": data.pixel_variance,
        "pixel_variance_from": (
            "all training images" if data.in_memory or source.num_train <= _variance_sample()
            else f"a seeded sample of {_variance_sample():,} training images"
        ),
        "num_train": source.num_train,
        "num_test": source.num_test,
        "split": {
            "given": source.split_given,
            "test_fraction": None if kind == "builtin" else s.test_fraction,
            "seed": s.seed,
        },
        "preprocessing": source.preprocessing,
        "skipped_images": len(source.skipped),
        "skipped_examples": [str(p) for p in source.skipped[:10]],
        "data_options": {
            "image_size": None if s.image_size is None else list(
                _parse_size(s.image_size)),
            "channels": s.channels,
            "architecture": s.architecture,
            "test_fraction": s.test_fraction,
            "skip_bad_images": s.skip_bad_images,
        },
        "evaluation": {
            "kmeans_init": s.kmeans_init,
            "kmeans_sample": s.kmeans_sample,
            "probe_epochs": s.probe_epochs,
            "raw_baseline": s.raw_baseline and source.labelled,
        },
        "data_dir": s.data_dir,
        "data_source": source.source,
        "precision": s.precision,
        **(plan.config() if plan is not None else {}),
        "versions": _versions(backend),
    }
    return json.loads(json.dumps(artifacts.to_builtin(config)))


def _variance_sample():
    from softvq_keras.data import VARIANCE_SAMPLE

    return VARIANCE_SAMPLE


def _parse_size(size):
    from softvq_keras.data.images import parse_size

    return parse_size(size) if isinstance(size, str) else tuple(size)


def check_resumable(run_dir, config):
    """Refuse to resume a run whose stored settings differ from these (`UsageError`)."""
    stored = {**RESUME_DEFAULTS, **artifacts.read_json(run_dir / artifacts.CONFIG)}
    if isinstance(stored.get("bottleneck"), dict) and isinstance(config.get("bottleneck"), dict):
        added = {k: v for k, v in BOTTLENECK_DEFAULTS.items() if k in config["bottleneck"]}
        stored["bottleneck"] = {**added, **stored["bottleneck"]}
    changed = [k for k in RESUME_KEYS if stored.get(k) != config.get(k)]
    require(not changed,
             f"cannot resume {str(run_dir)!r}: {', '.join(changed)} differ from the stored "
             f"run ({'; '.join(f'{k}: {stored.get(k)!r} vs {config.get(k)!r}' for k in changed[:2])})")


def kmeans_subset(count, n, seed):
    """Sorted indices of at most `n` of `count` training latents (all when they fit)."""
    if n is None or n >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:n])


def fit_downstream(run_dir, encoder, data, config, timer):
    """K-means on (at most `kmeans_sample` of) the training latents (kmeans.npz) and,
    with labels, the softmax head on all of them (classifier.keras)."""
    from softvq_keras import evaluation

    seed = config["seed"]
    protocol = config["evaluation"]
    n_train = data.count("train")
    with timer.phase("encode", f"Encoding {n_train:,} training images"):
        z_train = data.predict(encoder, "train")
    y_train = data.labels("train")
    idx = kmeans_subset(len(z_train), protocol.get("kmeans_sample"), seed)
    with timer.phase("kmeans", f"K-means x{protocol['kmeans_init']} ({config['clusters']} "
                     f"clusters) on {len(idx):,} training latents"), single_threaded():
        kmeans = evaluation.fit_kmeans(
            z_train[idx], config["clusters"], n_init=protocol["kmeans_init"], seed=seed
        )
        stored = {
            "centroids": kmeans.cluster_centers_.astype("float32"),
            "inertia": np.float64(kmeans.inertia_),
            "fitted_on": np.int64(len(idx)),
            # The training split's share per cluster and class: the service
            # publishes them next to its served traffic (serving/metrics.py).
            "train_cluster_counts": np.bincount(
                kmeans.predict(np.asarray(z_train, dtype=np.float64)),
                minlength=config["clusters"]).astype("int64"),
        }
        if config["labelled"]:
            stored["cluster_to_label"] = evaluation.cluster_label_map(
                y_train[idx], kmeans.labels_, config["clusters"]
            ).astype("int64")
            stored["train_class_counts"] = np.bincount(
                np.asarray(y_train, dtype=np.int64), minlength=config["num_classes"]
            ).astype("int64")
        artifacts.write_npz(run_dir / artifacts.KMEANS, **stored)
    if not config["labelled"]:
        return
    with timer.phase("probe", f"Softmax probe: {protocol['probe_epochs']} epochs on "
                     f"{len(z_train):,} training latents"):
        classifier, _ = evaluation.linear_probe(
            z_train, y_train, epochs=protocol["probe_epochs"],
            seed=seed, num_classes=config["num_classes"],
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
    check_settings(settings, presets)
    if distribution.is_chief_process():  # the other processes write nothing
        check_run_dir(settings)
    s, run_dir = settings, settings.run_dir
    say = print if fit_verbosity(s.verbose) else None
    timer = PhaseTimer(say=say)
    # Importing TensorFlow (tensorflow-datasets, tf.data) fixes Keras' backend, so
    # it is chosen before: for a built-in dataset by its architecture; for a
    # folder or .npz file (read without TensorFlow) once the data is opened; for
    # tfds:NAME by --architecture, else the CNN's (the set is unknown until read).
    kind = data_kind(s.dataset)
    backend = None
    if kind in ("builtin", "tfds"):
        backend = choose_backend(
            settings, presets, None if kind == "builtin" else s.architecture or "cnn"
        )
    # The data first: a bad folder or file stops here, before Keras or a model.
    with timer.phase("load"):
        data = open_data(
            s.dataset, s.data_dir, progress=say and (lambda text: say(text, flush=True)),
            **source_options(s),
        )
    info = data.info
    if info.skipped and say:
        say(f"Skipped {len(info.skipped)} unreadable image file(s) (--skip-bad-images), "
            f"e.g. {info.skipped[0]}")
    backend = backend or choose_backend(settings, presets, info.architecture)
    import_tensorflow()  # once, its C++ start-up lines silenced
    import keras

    # A fresh state for every run in one process; it would also clear the
    # distribution and the dtype policy, which are set next.
    keras.backend.clear_session()
    plan = distribution.setup(backend, settings.devices)
    try:
        with distribution.precision(settings.precision):
            run_dir = _train_and_export(
                settings, callbacks, presets, backend, plan, data, timer, started_at)
    except (UsageError, TrainingDiverged, distribution.DistributedRunError, KeyboardInterrupt):
        raise
    except Exception as e:
        if plan.processes == 1:
            raise
        # A failed collective: another process is gone (training.watchdog names it).
        error = plan.lost_process_error(e)
        if error is e:
            raise
        raise error from e
    finally:
        plan.end()
    if settings.export and plan.is_chief:
        from training.export import export_in_subprocess

        export_in_subprocess(run_dir, settings.export, settings.data_dir)
    return run_dir


def _train_and_export(settings, callbacks, presets, backend, plan, data, timer, started_at):
    """`train_and_export` once the data is open and the backend, devices and
    precision are set."""
    import keras

    from softvq_keras import build_autoencoder, make_bottleneck

    s, run_dir, info = settings, settings.run_dir, data.info
    preset = presets.preset(info.preset)
    batch_size = s.batch_size or preset["batch_size"]
    plan.check_batch_size(batch_size)
    steps_per_epoch = plan.steps_per_epoch(info.num_train, batch_size)
    hyper = {
        "epochs": s.epochs or epochs_for_steps(
            s.steps or preset["steps"], info.num_train, batch_size
        ),
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "learning_rate": s.learning_rate or preset["learning_rate"],
        "latent_dim": s.latent_dim or preset["latent_dim"],
        "adam_epsilon": s.adam_epsilon or ADAM_EPSILON,
    }

    keras.utils.set_random_seed(s.seed)
    new_bottleneck = functools.partial(
        make_bottleneck, s.model, info.preset, seed=s.seed, codebook_size=s.codebook_size,
        beta=s.beta, variance=s.variance, codebook_update=s.codebook_update,
        infodropout_weighting=s.infodropout_weighting, weighting=s.softvq_weighting,
        input_shape=info.input_shape, dead_code_threshold=s.dead_code_threshold,
        rotation_trick=s.rotation_trick or None, latent_norm=s.latent_norm,
        levels=None if s.levels is None else parse_levels(s.levels),
        num_quantizers=s.num_quantizers, quantizer_dropout=s.quantizer_dropout or None,
    )

    def build(bottleneck):
        return build_autoencoder(
            bottleneck, info.input_shape, hyper["latent_dim"], info.architecture,
            pixel_variance=data.pixel_variance,
        )

    try:
        bottleneck = new_bottleneck()
    except ValueError as e:
        raise UsageError(str(e)) from None
    config = run_config(s, backend, info, hyper, data, bottleneck, plan)
    resuming = s.resume and plan.is_chief and (run_dir / artifacts.CONFIG).is_file()
    if resuming:
        check_resumable(run_dir, config)
    elif s.overwrite and plan.is_chief:
        artifacts.remove_run_entries(run_dir)

    autoencoder, encoder = build(bottleneck)
    autoencoder.compile(optimizer=keras.optimizers.Adam(
        hyper["learning_rate"], epsilon=hyper["adam_epsilon"]))
    if plan.is_chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        artifacts.write_json(run_dir / artifacts.CONFIG, config)

    print(plan.describe(batch_size), flush=True)
    # Every process assigns process 0's state: the checkpoint's on --resume
    # (weights, noise state, optimizer; training.checkpoint), else its fresh one.
    first = checkpoint.restore(autoencoder, run_dir / artifacts.CHECKPOINT, plan) if (
        resuming or plan.processes > 1) else 0
    epochs = hyper["epochs"]
    if resuming:
        print(f"Resuming {run_dir} after epoch {first} of {epochs}.", flush=True)
    with timer.phase("train"):
        if first < epochs:
            autoencoder.fit(
                # Epochs first..epochs-1, each in the order of (seed, epoch) alone.
                data.train_epochs(
                    batch_size, s.seed, first, epochs,
                    per_epoch=lambda ds: plan.shard(ds, info.num_train, batch_size),
                ),
                epochs=epochs, initial_epoch=first, steps_per_epoch=steps_per_epoch,
                callbacks=[
                    *run_callbacks(run_dir, resuming, plan),
                    *codebook_callbacks(s, data, sync=plan.agree),
                    *callbacks,
                ],
                verbose=fit_verbosity(s.verbose),
                shuffle=False,  # the pipeline shuffles, with the seed
            )
    if plan.data_parallel:
        crc = plan.check_replicas(autoencoder)
        print(f"Weights agree on all {len(plan.devices)} devices "
              f"({plan.processes} process{'es' * (plan.processes > 1)}): CRC-32 {crc:08x}.",
              flush=True)
    if not plan.is_chief:
        plan.wait_for_chief()
        return run_dir
    if plan.data_parallel or s.precision != "float32":
        # Export (and evaluate with) float32 copies on one device: the weights are
        # float32 already; the mixed policy and the mesh are training settings.
        autoencoder, encoder = plan.local_float32_copy(
            autoencoder, lambda: build(new_bottleneck())
        )
    with timer.phase("export"):
        artifacts.save_keras_model(encoder, run_dir / artifacts.ENCODER)
        artifacts.save_keras_model(autoencoder, run_dir / artifacts.AUTOENCODER, optimizer=False)
        if backend == "tensorflow":
            artifacts.export_saved_model(encoder, run_dir / artifacts.SAVED_MODEL)
    fit_downstream(run_dir, encoder, data, config, timer)
    evaluate_run(
        run_dir, data, timer=timer, train_seconds=timer.seconds["train"],
        started_at=started_at,
    )
    artifacts.remove_checkpoint(run_dir)
    plan.wait_for_chief()  # the other processes exit once the folder is complete
    return run_dir


def run(dataset, model, *, callbacks=(), **options):
    """Train `model` on `dataset` and write its run folder; return the folder.

    `options` are the fields of `FitSettings` (the command-line options, with
    underscores); `callbacks` extra Keras callbacks. See `train_and_export`.
    """
    return train_and_export(FitSettings(dataset, model, **options), callbacks)

