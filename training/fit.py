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
the CNN about 15x slower. It is set before Keras is imported, which is why the
trainer imports only the Keras-free `softvq_keras.presets` at the top.

The run folder (`--out`, default `runs/<dataset>-<model>/`):

- a fresh run needs an empty or absent folder; a non-empty one is refused
  (exit 2) unless `--resume` (continue an unfinished run from its last
  finished epoch) or `--overwrite` (delete what a run writes there, then start
  over);
- while training, the folder holds `config.json`, `history.json` and
  `checkpoint/` (`training.checkpoint`, saved at every epoch end: `--resume`
  continues bit-identically to the uninterrupted run);
  `checkpoint/` is removed once `metrics.json` is written, so a folder with
  `metrics.json` and no `checkpoint/` is a finished run.

Devices (`training.distribution`): every device the backend sees, data
parallel under JAX when there are several, and across processes when Keras'
`KERAS_DISTRIBUTION_*` variables are set (process 0 writes the folder);
`--devices N` per process, `--precision` the Keras dtype policy.

Exit codes: 0 done; 1 another process of a multi-process run failed, or the
replicas' weights differ; 2 bad arguments, unusable run folder or unavailable
data (one line on stderr, before any model is built); 3 the loss became NaN or
infinite (nothing exported; the last good epoch stays in `checkpoint/`).

Library use (e.g. to train every row of a table):

>>> from training.fit import run
>>> run_dir = run("digits", "softvq", epochs=2, out="runs/demo")  # doctest: +SKIP

Where each concern lives (this module only re-exports them):

- `training.settings`: `FitSettings`, the constants, the presets, the checks
  made before Keras loads (`UsageError`) and the backend choice;
- `training.cli`: the argument parser, `--help` and `main` (exit codes);
- `training.run`: `train_and_export` / `run`, config.json, exports and the
  downstream K-means and softmax head;
- `training.callbacks`: history.json, the per-epoch checkpoint, the NaN guard
  and the codebook callbacks;
- `training.checkpoint`: what the checkpoint holds, saving and restoring it;
- `training.distribution`: the devices, data parallelism over devices and
  processes, the precision policy;
- `training.watchdog`: heartbeats between processes, so that a lost one stops
  the others.
"""

import sys

from training.backend_choice import choose_backend
from training.cli import build_parser, main
from training.run import run, run_config, train_and_export, training_pipeline
from training.settings import (
    BACKENDS,
    BETA_KEYS,
    BOTTLENECK_DEFAULTS,
    CLASS_NAMES,
    CODEBOOK_INITS,
    CODEBOOK_SAMPLE,
    DEFAULT_BACKEND,
    EXIT_DIVERGED,
    EXIT_USAGE,
    MODELS,
    NUM_CLASSES,
    QUANTIZERS,
    RESUME_DEFAULTS,
    RESUME_KEYS,
    VARIANCES,
    FitSettings,
    TrainingDiverged,
    UsageError,
    epochs_for_steps,
    fit_verbosity,
    load_presets,
)

__all__ = [
    "BACKENDS",
    "BETA_KEYS",
    "BOTTLENECK_DEFAULTS",
    "CLASS_NAMES",
    "CODEBOOK_INITS",
    "CODEBOOK_SAMPLE",
    "DEFAULT_BACKEND",
    "EXIT_DIVERGED",
    "EXIT_USAGE",
    "MODELS",
    "NUM_CLASSES",
    "QUANTIZERS",
    "RESUME_DEFAULTS",
    "RESUME_KEYS",
    "VARIANCES",
    "FitSettings",
    "TrainingDiverged",
    "UsageError",
    "build_parser",
    "choose_backend",
    "epochs_for_steps",
    "fit_verbosity",
    "load_presets",
    "main",
    "run",
    "run_config",
    "train_and_export",
    "training_pipeline",
]

if __name__ == "__main__":
    sys.exit(main())
