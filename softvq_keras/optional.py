"""Optional dependencies: import them on first use, naming the extra when missing.

The core install (`pip install softvq-keras`) is Keras, NumPy, SciPy and
scikit-learn. TensorFlow (tf.data pipelines), tensorflow-datasets and Pillow
(image folders) come with the `train` extra; nothing in `softvq_keras` imports
them at import time, only when a feature that needs them is used.

Example:

    tfds = import_optional("tensorflow_datasets", "train", "loading a tensorflow-datasets dataset")
"""

import importlib
import sys

#: Module name -> the PyPI distribution that provides it.
DISTRIBUTIONS = {
    "tensorflow": "tensorflow-cpu",
    "tensorflow_datasets": "tensorflow-datasets",
    "PIL": "pillow",
    "matplotlib": "matplotlib",
    "bentoml": "bentoml",
}


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def missing_message(module, extra, purpose):
    """The one-line message for `module` missing when doing `purpose`."""
    distribution = DISTRIBUTIONS.get(module, module)
    return (
        f"{purpose} needs {distribution}, which is not installed: "
        f"pip install 'softvq-keras[{extra}]'"
    )


def import_optional(module, extra, purpose):
    """`importlib.import_module(module)`, or `MissingDependencyError` naming `extra`.

    Args:
        module: the module to import, e.g. `"tensorflow_datasets"`.
        extra: the softvq-keras extra that installs it, e.g. `"train"`.
        purpose: what needs it, for the message (`"reading image folders"`).
    """
    if sys.modules.get(module) is not None:
        return sys.modules[module]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of ITS dependencies is missing
        raise MissingDependencyError(missing_message(module, extra, purpose)) from None
