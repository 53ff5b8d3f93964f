"""The interface every quantizer layer shares: `"indices"` in `call`'s dict,
`codes_per_stage`, and `decode_indices` giving what the decoder receives."""

import numpy as np
import pytest

import keras

from softvq_keras import SoftVectorQuantizer, VectorQuantizer

from .conftest import to_numpy

K, D = 8, 3


def inputs(batch=16, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(batch, D)).astype("float32"),
        rng.normal(size=(batch, 5)).astype("float32"),
    )


def codebook_of(layer):
    return keras.ops.convert_to_numpy(layer.codebook)


def test_vq_indices_are_the_nearest_codewords_and_decode_to_the_output():
    layer = VectorQuantizer(K)
    z, h = inputs()
    out = to_numpy(layer([z, h]))
    codebook = codebook_of(layer)
    nearest = ((z[:, None] - codebook[None]) ** 2).sum(-1).argmin(-1)
    assert out["indices"].dtype == np.int32 and out["indices"].shape == (16,)
    np.testing.assert_array_equal(out["indices"], nearest)
    assert layer.codes_per_stage == [K]
    decoded = to_numpy(layer.decode_indices(out["indices"]))
    np.testing.assert_allclose(decoded, out["output"], atol=1e-6)
    np.testing.assert_array_equal(decoded, codebook[nearest])


@pytest.mark.parametrize("weighting", ["mnist_code", "svhn_code", "gaussian"])
def test_softvq_indices_are_the_most_probable_code(weighting):
    layer = SoftVectorQuantizer(K, weighting=weighting)
    z, h = inputs()
    out = to_numpy(layer([z, h]))
    assert out["indices"].dtype == np.int32 and out["indices"].shape == (16,)
    np.testing.assert_array_equal(out["indices"], out["code_probs"].argmax(-1))
    assert layer.codes_per_stage == [K]
    decoded = to_numpy(layer.decode_indices(np.array([0, 3, 7], "int32")))
    np.testing.assert_array_equal(decoded, codebook_of(layer)[[0, 3, 7]])


def test_symbolic_call_declares_int32_indices():
    z = keras.Input((D,))
    h = keras.Input((5,))
    for layer in (VectorQuantizer(K), SoftVectorQuantizer(K)):
        spec = layer([z, h])["indices"]
        assert tuple(spec.shape) == (None,) and spec.dtype == "int32"
