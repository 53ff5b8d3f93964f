"""Mixed precision: under a mixed Keras dtype policy the encoder and decoder
compute in the low precision, while the quantizer's distances and posterior
stay in float32 (low precision collapses code usage), and training works."""

import numpy as np
import pytest

import keras

from softvq_keras import SoftVectorQuantizer, build_autoencoder, make_bottleneck

from .conftest import to_numpy

MIXED = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


@pytest.fixture(params=sorted(MIXED))
def policy(request):
    """Set a mixed global dtype policy for the test, then restore float32."""
    keras.config.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.config.set_dtype_policy("float32")


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def test_posterior_is_float32_and_exact_under_mixed_policy(policy):
    # A sharp posterior (small variances) on inputs given in the low precision:
    # distances and softmax computed in low precision would be off by ~1e-2.
    rng = np.random.default_rng(0)
    low = MIXED[policy]
    z = keras.ops.convert_to_tensor(rng.normal(size=(16, 4)).astype("float32") * 0.5, low)
    features = keras.ops.convert_to_tensor(np.zeros((16, 3), "float32"), low)
    codebook = rng.normal(size=(8, 4)).astype("float32")
    layer = SoftVectorQuantizer(num_codes=8)
    layer.build([(None, 4), (None, 3)])
    layer.codebook.assign(codebook)
    log_sigma = np.linspace(-1.5, -0.5, 8).astype("float32")
    layer.log_sigma_head.set_weights([np.zeros((3, 8), "float32"), log_sigma])
    assert layer.compute_dtype == "float32"
    assert layer.log_sigma_head.compute_dtype == "float32"

    out = layer([z, features], training=False)
    assert _dtype(out["code_probs"]) == "float32"
    assert _dtype(out["output"]) == "float32"
    # The float64 closed form from the same (low-precision) inputs.
    z64 = to_numpy(keras.ops.cast(z, "float32")).astype(np.float64)
    distances = ((z64[:, None] - codebook[None].astype(np.float64)) ** 2).sum(-1)
    logits = -0.5 * np.exp(-2.0 * log_sigma) * distances + log_sigma
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(to_numpy(out["code_probs"]), expected, atol=2e-5)


@pytest.mark.parametrize("name", ["softvq", "vq"])
def test_autoencoder_encoder_low_quantizer_float32_and_trains(policy, name, digits_splits):
    low = MIXED[policy]
    bottleneck = make_bottleneck(name, "digits", seed=0)
    model, encoder = build_autoencoder(
        bottleneck, (64,), 8, pixel_variance=digits_splits.pixel_variance
    )
    assert model.get_layer("encoder_dense_0").compute_dtype == low
    assert model.get_layer("z").compute_dtype == low
    assert model.get_layer("decoder_output").compute_dtype == low
    assert bottleneck.compute_dtype == "float32"
    assert all(_dtype(v) == "float32" for v in model.weights)  # float32 master weights

    x = digits_splits.x_train[:64]
    out = model(x, training=False)
    assert _dtype(out["latent"]) == low
    assert _dtype(encoder(x)) == low
    assert _dtype(out["code_probs"]) == "float32"
    assert _dtype(out["codebook_loss"]) == "float32"

    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [to_numpy(v).copy() for v in model.trainable_weights]
    history = model.fit(x, epochs=2, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    after = [to_numpy(v) for v in model.trainable_weights]
    assert all(np.isfinite(a).all() for a in after)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before))
    assert losses[-1] < losses[0]
