"""softvq-keras: quantization-based bottlenecks for Keras 3 autoencoders.

The package imports its parts lazily (PEP 562): `softvq_keras.presets` (the
datasets, their paper settings and the model names) imports without Keras, and
the Keras parts (layers, `Autoencoder`, registry) are imported the first time
one of their names is used, e.g. `softvq_keras.SoftVectorQuantizer`.

Importing a Keras part registers every custom layer, the `Autoencoder` model and
the `CodebookUsage` metric for `keras.saving.load_model`. When Keras is already
imported, `import softvq_keras` does so at once, so that
`import keras, softvq_keras; keras.saving.load_model(...)` works as it did.

The layout, one concern per place (imports run downward only: `data` and
`models` may use `layers` and `presets`, never the reverse):

| where | what |
|---|---|
| `layers/` | the bottleneck layers, one file each, and their shared base |
| `models/` | the paper's MLP / CNN autoencoders around a bottleneck (`build_autoencoder`) and the CNN decoder's sub-pixel layer |
| `registry.py`, `presets.py` | command-line names to layers; each dataset's paper settings |
| `callbacks.py` | codebook maintenance during `fit` (K-means init, dead-code restarts) |
| `evaluation.py` | clustering accuracy, NMI, K-means, the linear probe |
| `data/` | the image-data pipeline: built-in datasets, folders, `.npz`, tfds |
| `optional.py` | imports of optional extras with a message naming the extra |
"""

import importlib
import sys

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "Autoencoder": "models.autoencoder",
    "CodebookUsage": "models.autoencoder",
    "build_autoencoder": "models.autoencoder",
    "Bottleneck": "layers",
    "FiniteScalarQuantizer": "layers",
    "IdentityBottleneck": "layers",
    "LookupFreeQuantizer": "layers",
    "ResidualVectorQuantizer": "layers",
    "InformationDropout": "layers",
    "Quantizer": "layers",
    "SoftVectorQuantizer": "layers",
    "VariationalBottleneck": "layers",
    "VectorQuantizer": "layers",
    "DATASETS": "presets",
    "PRESETS": "presets",
    "dataset_info": "presets",
    "preset": "presets",
    "SubPixelConv2DTranspose": "models.subpixel",
    "BOTTLENECKS": "registry",
    "bottleneck_settings": "registry",
    "make_bottleneck": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


def _register_keras_parts():
    """Import the modules that register the custom objects (needs Keras)."""
    importlib.import_module(f"{__name__}.models.autoencoder")
    importlib.import_module(f"{__name__}.registry")


if "keras" in sys.modules:
    _register_keras_parts()
