"""Import Keras and load `.keras` files for inference, without work a server never uses.

`import_keras()` imports Keras without the optional extras it imports when
they are installed: scikit-learn (for `keras.wrappers`) and matplotlib (for
`keras.visualization`). Measured here, `import keras` (JAX backend) took
9.7-10.0 s with both installed, 5.7 s without (2 cores loaded by other jobs).
Both are hidden only while Keras imports (its modules fall back as when they
are absent) and importable again afterwards; a container built from the
Bento has neither.

`keras.saving.load_model` builds every layer before it reads the weights, and
building runs each variable's initializer (Glorot-uniform kernels and the
like) only for the loaded weights to overwrite the values at once. Under JAX
each initializer on a new shape is an XLA compilation: loading the digits
run's encoder, classifier and autoencoder took 16.5 s on this 2-core machine
(loaded by other jobs), 0.9 s with the initializers skipped, and the three
models answered bit-identically (serving/README.md, "Start-up").

`load_model(path)` is `keras.saving.load_model(path, safe_mode=True)` with
every variable created meanwhile filled with zeros (NumPy, no compilation)
instead; the loaded weights replace them as usual (Keras raises when a
layer's stored weights do not match its variables, so none keeps its
placeholder; tests/serving compare every route with models loaded the
ordinary way). Should a
Keras version lack the private hook used here (`Variable._initialize_with_
initializer`), or a dtype have no NumPy zeros, the initializer runs as before.
"""

import contextlib
import sys
import threading

import numpy as np

_LOCK = threading.Lock()
#: Imported by `import keras` when installed, used by no part of the service.
KERAS_EXTRAS = ("sklearn", "matplotlib")


def import_keras():
    """`import keras`, skipping `KERAS_EXTRAS` if Keras is not imported yet."""
    if "keras" in sys.modules:
        import keras

        return keras
    hidden = [name for name in KERAS_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError meanwhile
    try:
        import keras
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return keras


@contextlib.contextmanager
def _zeros_for_initializers():
    cls = import_keras().Variable
    original = getattr(cls, "_initialize_with_initializer", None)
    if original is None:  # another Keras: load as usual
        yield
        return

    def zeros(self, initializer):
        try:
            value = np.zeros(tuple(self._shape), dtype=self._dtype)
        except TypeError:  # a dtype NumPy lacks: run the real initializer
            return original(self, initializer)
        self._initialize(value)

    own = "_initialize_with_initializer" in vars(cls)
    with _LOCK:  # the patch is process-wide: one load at a time
        cls._initialize_with_initializer = zeros
        try:
            yield
        finally:
            if own:
                cls._initialize_with_initializer = original
            else:  # inherited: uncover the base class's again
                del cls._initialize_with_initializer


def load_model(path):
    """`keras.saving.load_model(path, safe_mode=True)`, initializers skipped."""
    keras = import_keras()

    with _zeros_for_initializers():
        return keras.saving.load_model(path, safe_mode=True)
