"""Helpers of the tests that kill a training process mid-epoch (`kill -9`).

`PACED`: a `python -c` program running `training.fit`'s `main` with one extra
callback that prints every batch (`PACE epoch E batch B`) and sleeps 50 ms
after it, so that a kill lands mid-epoch; the pause changes no number.
"""

import signal
import time

from training import checkpoint

PACED = """
import sys, time
import training.run as run_module

original = run_module.run_callbacks


def paced(*args, **kwargs):
    import keras

    class Pace(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            print(f"PACE epoch {self.epoch + 1} batch {batch + 1}", flush=True)
            time.sleep(0.05)

    return [*original(*args, **kwargs), Pace()]


run_module.run_callbacks = paced
from training.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kill_mid_epoch(watched, checkpoint_dir, epoch, victim=None, batch=5, timeout=400):
    """SIGKILL `victim` (default: `watched`) once `watched` has printed batch
    `batch` of `epoch` (1-based) and the checkpoint holds `epoch - 1` epochs.

    Returns `(output of watched so far, time.monotonic() of the kill)`.
    """
    victim = victim or watched
    marker = f"PACE epoch {epoch} batch {batch}"
    lines, deadline = [], time.monotonic() + timeout
    for line in watched.stdout:
        lines.append(line)
        if line.startswith(marker) and checkpoint.finished_epochs(checkpoint_dir) == epoch - 1:
            victim.send_signal(signal.SIGKILL)
            return "".join(lines), time.monotonic()
        assert time.monotonic() < deadline, "".join(lines[-20:])
    raise AssertionError(f"{marker!r} never came:\n" + "".join(lines[-30:]))
