"""Bottleneck layers: one file each, all registered under package `softvq`."""

from softvq_keras.layers.base import Bottleneck, Quantizer, squared_distances
from softvq_keras.layers.finite_scalar_quantizer import FiniteScalarQuantizer
from softvq_keras.layers.identity import IdentityBottleneck
from softvq_keras.layers.information_dropout import InformationDropout
from softvq_keras.layers.lookup_free_quantizer import LookupFreeQuantizer
from softvq_keras.layers.residual_vector_quantizer import ResidualVectorQuantizer
from softvq_keras.layers.soft_vector_quantizer import SoftVectorQuantizer
from softvq_keras.layers.variational import VariationalBottleneck
from softvq_keras.layers.vector_quantizer import VectorQuantizer

__all__ = [
    "Bottleneck",
    "FiniteScalarQuantizer",
    "IdentityBottleneck",
    "InformationDropout",
    "LookupFreeQuantizer",
    "Quantizer",
    "ResidualVectorQuantizer",
    "SoftVectorQuantizer",
    "VariationalBottleneck",
    "VectorQuantizer",
    "squared_distances",
]
