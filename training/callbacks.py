"""The Keras callbacks every training run adds to `model.fit`.

- `run_callbacks`: history.json at each epoch end, the per-epoch checkpoint
  (`training.checkpoint`, so that `--resume` continues exactly), and the NaN
  guard that raises `TrainingDiverged`;
- `codebook_callbacks`: the optional codebook maintenance of vq / softvq
  (`--codebook-init kmeans`, `--dead-code-restarts`; `softvq_keras.callbacks`);

Keras is imported inside the functions, after the backend is chosen.
"""

import time

from training import artifacts, checkpoint
from training.settings import CODEBOOK_SAMPLE, TrainingDiverged


def run_callbacks(run_dir, resuming, plan=None):
    """History log, per-epoch checkpoint and NaN guard, in the order they must run.

    `plan` (`training.distribution.Plan`) of a multi-process run: process 0
    logs and checkpoints, the others write nothing (all start from process 0's
    state: `training.checkpoint.restore`, before `fit`).
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

        Raising (rather than a graceful stop) keeps the checkpoint from
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

    if plan is not None and not plan.is_chief:  # process 0 logs and checkpoints
        return [StopOnNaN()]
    history_path = run_dir / artifacts.HISTORY
    records = []
    if resuming and history_path.is_file():
        records = artifacts.read_json(history_path)["epochs"]
    return [
        EpochLog(history_path, records),  # written before the checkpoint
        checkpoint.save_callback(run_dir / artifacts.CHECKPOINT, plan),
        StopOnNaN(),
    ]


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
