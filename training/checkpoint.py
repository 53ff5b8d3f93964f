"""The per-epoch checkpoint that `--resume` continues from, exactly.

`checkpoint/state.npz` is written at every epoch end (by process 0 of a
multi-process run) and holds everything the next epoch depends on:

- `epoch`: the number of finished epochs;
- every model variable (`model.variables`): the weights, trainable or not
  (EMA statistics included), and the state of every `keras.random.SeedGenerator`
  (the noise of the VAE, InformationDropout, the soft VQ latent noise, dead-code
  choices), saved and restored explicitly because Keras' own weight files do
  not restore it (keras #19796, #20209);
- the optimizer's variables (its step count, learning rate and moments).

The data order of epoch `e` depends only on the seed and `e`
(`training.data.RunData.train_epochs`), and the codebook callbacks draw from
`(seed, epoch)`, so a run resumed after a kill, at any point, continues exactly
as the uninterrupted run with the same seed: the same weights, bit for bit.

The file is written to a temporary name and renamed (`artifacts.write_npz`): a
process killed while writing leaves the previous epoch's whole file. Keras is
imported inside the functions, after the backend is chosen.
"""

import numpy as np

from training import artifacts
from training.settings import UsageError

#: The checkpoint file inside `checkpoint/`.
STATE = "state.npz"
#: The file Keras' BackupAndRestore wrote there before this format.
LEGACY_METADATA = "training_metadata.json"


def state_variables(model):
    """The variables a checkpoint holds, in a fixed order: `model.variables`
    (weights and seed-generator states), then the optimizer's."""
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return list(model.variables) + (list(optimizer.variables) if optimizer is not None else [])


def host_value(variable):
    """A variable's value as a NumPy array (one replica of a replicated JAX array)."""
    import keras

    value = variable.value
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except (RuntimeError, ValueError):  # a JAX array not fully addressable here
        return np.asarray(value.addressable_shards[0].data)


def save(model, checkpoint_dir, epoch):
    """Write `checkpoint_dir/state.npz` for `epoch` finished epochs, atomically."""
    variables = state_variables(model)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    arrays = {f"v{i:05d}": host_value(v) for i, v in enumerate(variables)}
    artifacts.write_npz(
        checkpoint_dir / STATE, epoch=np.int64(epoch),
        paths=np.array([v.path for v in variables]), **arrays,
    )


def read(checkpoint_dir):
    """`(epoch, paths, values)` of `checkpoint_dir/state.npz`; None when there is none."""
    path = checkpoint_dir / STATE
    if not path.is_file():
        return None
    with np.load(path) as state:
        paths = [str(p) for p in state["paths"]]
        return int(state["epoch"]), paths, [state[f"v{i:05d}"] for i in range(len(paths))]


def is_legacy(checkpoint_dir):
    """Whether `checkpoint_dir` holds only a Keras `BackupAndRestore` checkpoint."""
    return (checkpoint_dir / LEGACY_METADATA).is_file() and not (checkpoint_dir / STATE).is_file()


def finished_epochs(checkpoint_dir):
    """Epochs the checkpoint holds (0 when there is none)."""
    path = checkpoint_dir / STATE
    if path.is_file():
        with np.load(path) as state:
            return int(state["epoch"])
    if is_legacy(checkpoint_dir):
        return int(artifacts.read_json(checkpoint_dir / LEGACY_METADATA)["epoch"])
    return 0


def restore(model, checkpoint_dir, plan=None):
    """Assign the checkpoint's state to `model` (and its optimizer); return its epoch.

    With a multi-process `plan`, process 0 reads the file and every process
    assigns process 0's values (`Plan.agree`): every assignment is a collective
    operation, so all processes call this, in the same order. Returns 0 (and
    assigns process 0's fresh state) when there is no checkpoint.
    """
    variables = state_variables(model)
    multi_process = plan is not None and plan.processes > 1
    chief = plan is None or plan.is_chief
    found = read(checkpoint_dir) if chief else None
    if chief and found is None and is_legacy(checkpoint_dir):
        if multi_process:
            raise UsageError(
                f"{checkpoint_dir} was written by an earlier version (Keras BackupAndRestore); "
                "a multi-process run cannot resume it: pass --overwrite to start over")
        return _restore_legacy(model, checkpoint_dir)
    if found is not None:
        epoch, paths, values = found
        expected = [v.path for v in variables]
        shapes = [tuple(v.shape) for v in variables]
        if paths != expected or [tuple(x.shape) for x in values] != shapes:
            raise UsageError(
                f"{checkpoint_dir / STATE} does not match the model being resumed "
                f"({len(paths)} saved variables, {len(expected)} in the model); pass "
                "--overwrite to start over")
    elif multi_process:
        epoch, values = 0, [host_value(v) for v in variables]
    else:
        return 0
    if multi_process:  # process 0's state on every process
        values, agreed = plan.agree((values, np.array([epoch], np.int64)))
        epoch = int(agreed[0])
    for variable, value in zip(variables, values):
        variable.assign(value)
    return epoch


def _restore_legacy(model, checkpoint_dir):
    """Weights, optimizer and epoch from a `BackupAndRestore` checkpoint (not the
    noise state or the data order: such a resume is not exact)."""
    import keras

    loader = keras.callbacks.BackupAndRestore(str(checkpoint_dir), double_checkpoint=True)
    loader.set_model(model)
    loader.on_train_begin()
    print(f"Note: {checkpoint_dir} is an older checkpoint without the noise state; the "
          "resumed run will not be identical to an uninterrupted one.", flush=True)
    return int(getattr(model, "_initial_epoch", None) or 0)


def save_callback(checkpoint_dir, plan=None):
    """A Keras callback writing the checkpoint at every epoch end (process 0 only)."""
    import keras

    class SaveCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if plan is None or plan.is_chief:
                save(self.model, checkpoint_dir, epoch + 1)

    return SaveCheckpoint()
