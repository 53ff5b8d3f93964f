"""softvq-keras: quantization-based bottlenecks for Keras 3 autoencoders.

Importing the package registers every custom layer, the `Autoencoder` model and
the `CodebookUsage` metric for `keras.saving.load_model`.
"""

from softvq_keras.autoencoder import Autoencoder, CodebookUsage, build_autoencoder
from softvq_keras.layers import (
    Bottleneck,
    IdentityBottleneck,
    InformationDropout,
    SoftVectorQuantizer,
    VariationalBottleneck,
    VectorQuantizer,
)
from softvq_keras.presets import DATASETS, PRESETS, dataset_info, preset
from softvq_keras.registry import BOTTLENECKS, bottleneck_settings, make_bottleneck

__version__ = "0.1.0"

__all__ = [
    "Autoencoder",
    "BOTTLENECKS",
    "Bottleneck",
    "CodebookUsage",
    "DATASETS",
    "IdentityBottleneck",
    "InformationDropout",
    "PRESETS",
    "SoftVectorQuantizer",
    "VariationalBottleneck",
    "VectorQuantizer",
    "bottleneck_settings",
    "build_autoencoder",
    "dataset_info",
    "make_bottleneck",
    "preset",
]
