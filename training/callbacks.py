"""The Keras callbacks every training run adds to `model.fit`.

- `run_callbacks`: history.json at each epoch end, the per-epoch checkpoint
  (`BackupAndRestore`, so that `--resume` continues), and the NaN guard that
  raises `TrainingDiverged`;
- `codebook_callbacks`: the optional codebook maintenance of vq / softvq
  (`--codebook-init kmeans`, `--dead-code-restarts`; `softvq_keras.callbacks`);
- `checkpoint_callbacks`: the checkpoint of a multi-process run (process 0
  saves; every process starts from process 0's state);
- `restored_epoch`: how many epochs the checkpoint holds.

Keras is imported inside the functions, after the backend is chosen.
"""

import time

from training import artifacts
from training.distribution import DistributedRunError
from training.settings import CODEBOOK_SAMPLE, TrainingDiverged


def run_callbacks(run_dir, resuming, plan=None):
    """History log, per-epoch checkpoint and NaN guard, in the order they must run.

    `plan` (`training.distribution.Plan`) of a multi-process run: process 0
    logs and checkpoints, the others write nothing, and all start from process
    0's state (`training.distribution.checkpoint_callbacks`).
    """
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
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            self.records.append({
                "epoch": epoch + 1,
                "seconds": time.perf_counter() - self.started,
                "steps": self.steps,
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

    multi_process = plan is not None and plan.processes > 1
    if multi_process and not plan.is_chief:
        return [*checkpoint_callbacks(plan, run_dir / artifacts.CHECKPOINT), StopOnNaN()]
    history_path = run_dir / artifacts.HISTORY
    records = []
    if resuming and history_path.is_file():
        records = artifacts.read_json(history_path)["epochs"]
    return [
        EpochLog(history_path, records),  # written before the checkpoint
        # double_checkpoint: a process killed while writing the weights leaves the
        # previous epoch's copy (*.bkp), which BackupAndRestore falls back to.
        *(checkpoint_callbacks(plan, run_dir / artifacts.CHECKPOINT) if multi_process else [
            keras.callbacks.BackupAndRestore(
                str(run_dir / artifacts.CHECKPOINT), save_freq="epoch",
                double_checkpoint=True, delete_checkpoint=False,
            ),
        ]),
        StopOnNaN(),
    ]


def checkpoint_callbacks(plan, checkpoint_dir):
    """The per-epoch checkpoint of a multi-process run (`plan.processes > 1`).

    Under a multi-process distribution every assignment to a variable is a
    collective operation that all processes must make in the same order, so
    process 0 cannot restore a checkpoint alone, and Keras' saving (which makes
    variables) must run outside the distribution. So: process 0 saves with
    `BackupAndRestore` outside the distribution and never restores; at the
    start of `fit`, process 0 reads the checkpoint (when there is one) into a
    copy of the model on its own device, and every process assigns process 0's
    weights, optimizer state and starting epoch. The others need not see the
    run folder.
    """
    import keras
    import numpy as np

    def checkpoint():
        return keras.callbacks.BackupAndRestore(
            str(checkpoint_dir), save_freq="epoch", double_checkpoint=True,
            delete_checkpoint=False,
        )

    class Save(keras.callbacks.Callback):
        """Process 0: `BackupAndRestore`'s saving at every epoch end, outside the distribution."""

        def __init__(self):
            super().__init__()
            self.saver = checkpoint()

        def on_epoch_end(self, epoch, logs=None):
            self.saver.set_model(self.model)
            with plan.local():
                self.saver.on_epoch_end(epoch, logs)

    class Restore(keras.callbacks.Callback):
        """Every process: process 0's state (restored from its checkpoint, if any)."""

        def on_train_begin(self, logs=None):
            model = self.model
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            variables = list(model.variables) + list(model.optimizer.variables)
            values = [np.asarray(keras.ops.convert_to_numpy(v.value)) for v in variables]
            epoch = 0
            if plan.is_chief and checkpoint_dir.is_dir():
                values, epoch = self._restored(model, values)
            values, epoch = plan.agree((values, np.array([epoch], np.int32)))
            for variable, value in zip(variables, values):
                variable.assign(value)
            if int(epoch[0]):
                model._initial_epoch = int(epoch[0])

        def _restored(self, model, current):
            """The checkpoint's values, read into a local copy of `model`."""
            with plan.local():
                copy = keras.models.clone_model(model)
                optimizer = model.optimizer.__class__.from_config(model.optimizer.get_config())
                copy.compile(optimizer=optimizer)
                copy.optimizer.build(copy.trainable_variables)
                loader = checkpoint()
                loader.set_model(copy)
                loader.on_train_begin()  # BackupAndRestore's own loading, .bkp fallback included
                values = [np.asarray(keras.ops.convert_to_numpy(v.value))
                          for v in list(copy.variables) + list(copy.optimizer.variables)]
            if [v.shape for v in values] != [v.shape for v in current]:
                raise DistributedRunError("the checkpoint does not match the model's variables")
            return values, int(getattr(copy, "_initial_epoch", None) or 0)

    return ([Save()] if plan.is_chief else []) + [Restore()]


def codebook_callbacks(s, data, sync=None):
    """The optional codebook maintenance of vq / softvq (softvq_keras.callbacks),
    on a seeded sample of `CODEBOOK_SAMPLE` training inputs (`training.data.RunData`).

    `sync`: the callbacks' `sync` (`training.distribution.Plan.agree` makes every
    process assign process 0's codebook).
    """
    from softvq_keras.callbacks import CodebookKMeansInit, DeadCodeRestart

    if s.codebook_init == "random" and not s.dead_code_restarts:
        return []
    sample, _, _ = data.sample("train", CODEBOOK_SAMPLE, s.seed)
    found = []
    if s.codebook_init == "kmeans":
        found.append(CodebookKMeansInit(sample, at_epoch=1, seed=s.seed, sync=sync))
    if s.dead_code_restarts:
        found.append(DeadCodeRestart(sample, seed=s.seed, sync=sync))
    return found


def restored_epoch(run_dir):
    """Epochs finished according to the checkpoint (0 when there is none)."""
    path = run_dir / artifacts.CHECKPOINT / "training_metadata.json"
    return int(artifacts.read_json(path)["epoch"]) if path.is_file() else 0

