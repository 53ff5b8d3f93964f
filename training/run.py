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

from training import artifacts, distribution
from training.callbacks import codebook_callbacks, restored_epoch, run_callbacks
from training.evaluate import PhaseTimer, evaluate_run, single_threaded
from training.settings import (
    ADAM_EPSILON,
    BOTTLENECK_DEFAULTS,
    CLASS_NAMES,
    NUM_CLASSES,
    RESUME_DEFAULTS,
    RESUME_KEYS,
    FitSettings,
    UsageError,
    check_run_dir,
    check_settings,
    choose_backend,
    epochs_for_steps,
    fit_verbosity,
    load_presets,
    require,
)


def training_pipeline(x, batch_size, seed):
    """`tf.data`: shuffled indices (reshuffled every epoch), batched, gathered, prefetched.

    Shuffling indices rather than images keeps the shuffle buffer small.
    """
    from softvq_keras.sources import import_tensorflow

    tf = import_tensorflow()
    images = tf.constant(x)
    return (
        tf.data.Dataset.range(len(x))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(lambda idx: tf.gather(images, idx), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
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


def run_config(s, backend, info, hyper, splits, bottleneck, plan=None):
    """config.json (docs/ARTIFACTS.md) as plain JSON values; `plan`: the devices."""
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
        "precision": s.precision,
        **(plan.config() if plan is not None else {}),
        "versions": _versions(backend),
    }
    return json.loads(json.dumps(artifacts.to_builtin(config)))


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


def fit_downstream(run_dir, encoder, splits, config, timer):
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
    check_settings(settings, presets)
    if distribution.is_chief_process():  # the other processes write nothing
        check_run_dir(settings)
    backend = choose_backend(settings, presets)
    import keras

    # A fresh state for every run in one process; it would also clear the
    # distribution and the dtype policy, which are set next.
    keras.backend.clear_session()
    plan = distribution.setup(backend, settings.devices)
    try:
        with distribution.precision(settings.precision):
            return _train_and_export(settings, callbacks, presets, backend, plan, started_at)
    finally:
        plan.close()


def _train_and_export(settings, callbacks, presets, backend, plan, started_at):
    """`train_and_export` once the backend, devices and precision are set."""
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
    plan.check_batch_size(batch_size)
    steps_per_epoch = plan.steps_per_epoch(len(splits.x_train), batch_size)
    hyper = {
        "epochs": s.epochs or epochs_for_steps(
            s.steps or preset["steps"], len(splits.x_train), batch_size
        ),
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "learning_rate": s.learning_rate or preset["learning_rate"],
        "latent_dim": s.latent_dim or preset["latent_dim"],
        "adam_epsilon": s.adam_epsilon or ADAM_EPSILON,
    }

    keras.utils.set_random_seed(s.seed)
    new_bottleneck = functools.partial(
        make_bottleneck, s.model, s.dataset, seed=s.seed, codebook_size=s.codebook_size,
        beta=s.beta, variance=s.variance, codebook_update=s.codebook_update,
        infodropout_weighting=s.infodropout_weighting,
    )

    def build(bottleneck):
        return build_autoencoder(
            bottleneck, info.input_shape, hyper["latent_dim"], info.architecture,
            pixel_variance=splits.pixel_variance,
        )

    try:
        bottleneck = new_bottleneck()
    except ValueError as e:
        raise UsageError(str(e)) from None
    config = run_config(s, backend, info, hyper, splits, bottleneck, plan)
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
    if resuming:
        print(f"Resuming {run_dir} after epoch {restored_epoch(run_dir)} of {hyper['epochs']}.")
    with timer.phase("train"):
        autoencoder.fit(
            plan.shard(
                training_pipeline(splits.x_train, batch_size, s.seed),
                len(splits.x_train), batch_size,
            ),
            epochs=hyper["epochs"],
            callbacks=[
                *run_callbacks(run_dir, resuming, plan),
                *codebook_callbacks(s, splits.x_train, sync=plan.agree),
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
        artifacts.save_keras_model(autoencoder, run_dir / artifacts.AUTOENCODER)
        if backend == "tensorflow":
            artifacts.export_saved_model(encoder, run_dir / artifacts.SAVED_MODEL)
    fit_downstream(run_dir, encoder, splits, config, timer)
    evaluate_run(
        run_dir, splits, timer=timer, train_seconds=timer.seconds["train"],
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

