"""What the data sources need from the machine: TensorFlow, tensorflow-datasets, a network.

The shared pieces every source kind may call on before it reads anything:

- `import_tensorflow()`: TensorFlow for `tf.data`, its C++ start-up lines
  silenced, or a `MissingDependencyError` naming the `train` extra;
- `import_tfds(spec, data_dir)`: tensorflow-datasets, or a
  `DataUnavailableError` saying how to provide the data without it;
- `download_refusal()`: why a download must not be tried right now
  (`SOFTVQ_OFFLINE=1`, or the download server unreachable in a few seconds),
  so that no loader retries for minutes;
- `offline_message(...)`: the one sentence telling an offline user how to
  provide a local copy;
- `quiet_absl()`: tensorflow-datasets' absl warnings silenced.
"""

import logging
import os
import socket
from contextlib import contextmanager

from softvq_keras.optional import import_optional

DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class DataUnavailableError(RuntimeError):
    """The dataset has no local copy and cannot be downloaded right now."""


def offline_message(name, data_dir, reason):
    """How to provide dataset `name` (a built-in name or `tfds:NAME`) without a download."""
    where = (
        f"There is no local copy in {str(data_dir)!r}."
        if data_dir
        else "There is no local copy: neither --data-dir nor SOFTVQ_DATA_DIR names a folder."
    )
    if str(name).startswith("tfds:"):
        return (
            f"Dataset {name!r} is not available: {reason}. {where} Run once with internet "
            "access so tensorflow-datasets can download and prepare it (or pass --data-dir "
            "FOLDER naming a tensorflow-datasets folder that holds it); a folder of images "
            "or an .npz file works offline."
        )
    extra = (
        " For SVHN the canonical train_32x32.mat and test_32x32.mat files in "
        "that folder work too."
        if name == "svhn"
        else ""
    )
    return (
        f"Dataset {name!r} is not available: {reason}. {where} To use it offline, put "
        f"{name}.npz (np.savez with uint8 arrays x_train, y_train, x_test, y_test and "
        "labels 0-9) in a folder and pass --data-dir FOLDER or set SOFTVQ_DATA_DIR=FOLDER; "
        "or run once with internet access so tensorflow-datasets can download and prepare "
        f"it.{extra} The 'digits' dataset needs nothing downloaded."
    )


def reachable(host=DOWNLOAD_HOST, timeout=3.0):
    """Whether a TCP connection to the download server opens within `timeout` s."""
    try:
        socket.create_connection(host, timeout=timeout).close()
        return True
    except OSError:
        return False


def download_refusal():
    """Why no download may be tried now (a short reason), or None when it may."""
    if os.environ.get("SOFTVQ_OFFLINE") == "1":
        return "SOFTVQ_OFFLINE=1 forbids downloads"
    if not reachable():
        return "the download server is unreachable"
    return None


def import_tensorflow():
    """`import tensorflow`, its C++ start-up chatter (oneDNN INFO lines) silenced.

    Those lines are written to the process's stderr by native code at import
    time, so stderr's file descriptor is pointed at /dev/null for the import
    only. Without TensorFlow it raises `MissingDependencyError` (an ImportError)
    naming the `train` extra.
    """
    import sys

    if sys.modules.get("tensorflow") is not None:
        return sys.modules["tensorflow"]
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        tensorflow = import_optional("tensorflow", "train", "a tf.data input pipeline")
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
    return tensorflow


def import_tfds(spec, data_dir):
    """tensorflow-datasets (after TensorFlow), or `DataUnavailableError` for `spec`."""
    try:
        import_tensorflow()
        return import_optional("tensorflow_datasets", "train", "a tensorflow-datasets dataset")
    except ImportError as e:
        raise DataUnavailableError(offline_message(spec, data_dir, str(e).rstrip("."))) from None


@contextmanager
def quiet_absl():
    """Silence absl's warnings (e.g. "Variant folder ... has no dataset_info.json")."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
