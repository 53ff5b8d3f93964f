"""Soft VQ maths on a tiny codebook: the closed-form posterior weights of
method.md for each weighting, the posterior-mean output, the hard limit as the
variances vanish, and numerical stability."""

import math

import numpy as np
import pytest
from keras import ops

from softvq_keras import SoftVectorQuantizer

from .conftest import to_numpy

# Three codewords in 2-D and four inputs (hand-picked, not random).
CODEBOOK = np.array([[0.0, 0.0], [1.0, 0.5], [-1.0, 2.0]], "float32")
Z = np.array([[0.2, 0.1], [0.9, 0.8], [-0.5, 1.5], [3.0, -2.0]], "float32")
# One log standard deviation per codeword and per input, from the head's
# bias (same for every input) plus a kernel on a one-hot feature (per input).
BIAS = np.array([0.1, -0.3, 0.4], "float32")
KERNEL = np.array(
    [[0.0, 0.2, -0.1], [0.3, 0.0, 0.1], [-0.2, 0.1, 0.0], [0.0, 0.0, 0.5]], "float32"
)
FEATURES = np.eye(4, dtype="float32")
LOG_SIGMA = FEATURES @ KERNEL + BIAS  # (4, 3)


def quantizer(weighting="mnist_code", codebook=CODEBOOK, kernel=KERNEL, bias=BIAS):
    layer = SoftVectorQuantizer(num_codes=len(codebook), weighting=weighting)
    layer.build([(None, codebook.shape[1]), (None, kernel.shape[0])])
    layer.codebook.assign(codebook)
    layer.log_sigma_head.set_weights([kernel, bias])
    return layer


def closed_form_weights(weighting, z=Z, log_sigma=LOG_SIGMA, codebook=CODEBOOK):
    """method.md's p_k in float64, written with w_k (not logits)."""
    z, s, e = (np.asarray(a, np.float64) for a in (z, log_sigma, codebook))
    distances = ((z[:, None, :] - e[None]) ** 2).sum(-1)
    precision = np.exp(-2 * s)
    if weighting == "mnist_code":
        w = np.exp(-0.5 * precision * distances) / np.sqrt(precision)
    elif weighting == "gaussian":
        w = (2 * np.pi / precision) ** (-z.shape[1] / 2) * np.exp(-0.5 * precision * distances)
    else:
        w = np.exp(-0.5 * precision * distances)
    return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize("weighting", ["mnist_code", "svhn_code", "gaussian"])
def test_weights_equal_the_closed_form(weighting):
    out = to_numpy(quantizer(weighting)([Z, FEATURES], training=False))
    np.testing.assert_allclose(out["code_probs"], closed_form_weights(weighting), rtol=1e-5, atol=1e-7)


def test_first_row_weights_by_hand():
    # z = (0.2, 0.1), s = (0.1, -0.1, 0.3) (bias + first kernel row).
    # D = (0.05, 0.8 ** 2 + 0.4 ** 2, 1.2 ** 2 + 1.9 ** 2) = (0.05, 0.8, 5.05)
    # mnist_code: w_k = sigma_k * exp(-D_k / (2 sigma_k^2)).
    s = np.array([0.1, -0.1, 0.3])
    sigma = np.exp(s)
    w = sigma * np.exp(-np.array([0.05, 0.8, 5.05]) / (2 * sigma**2))
    out = to_numpy(quantizer()([Z, FEATURES], training=False))
    np.testing.assert_allclose(out["code_probs"][0], w / w.sum(), rtol=1e-5)


def test_mnist_code_weights_sum_to_one_and_output_is_the_weighted_mean():
    out = to_numpy(quantizer("mnist_code")([Z, FEATURES], training=False))
    p = out["code_probs"]
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    assert (p > 0).all()
    np.testing.assert_allclose(out["output"], p @ CODEBOOK, rtol=1e-5, atol=1e-6)


def test_gaussian_output_is_the_weighted_mean():
    out = to_numpy(quantizer("gaussian")([Z, FEATURES], training=False))
    np.testing.assert_allclose(out["code_probs"].sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["output"], out["code_probs"] @ CODEBOOK, rtol=1e-5, atol=1e-6)


def test_svhn_code_output_scales_weights_by_sigma():
    """svhn_code: zhat = sum_k exp(s_k) p_k e_k, so its mixing weights do not sum to 1."""
    out = to_numpy(quantizer("svhn_code")([Z, FEATURES], training=False))
    mix = np.exp(LOG_SIGMA) * out["code_probs"]
    np.testing.assert_allclose(out["output"], mix @ CODEBOOK, rtol=1e-5, atol=1e-6)
    assert np.abs(mix.sum(1) - 1).max() > 0.05


def test_posterior_method_matches_the_layer_call():
    layer = quantizer()
    probs, zhat = layer.posterior(ops.convert_to_tensor(Z), ops.convert_to_tensor(LOG_SIGMA))
    np.testing.assert_allclose(to_numpy(probs), closed_form_weights("mnist_code"), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(zhat), to_numpy(probs) @ CODEBOOK, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighting", ["mnist_code", "gaussian"])
@pytest.mark.parametrize("log_sigma", [-2.0, -4.0, -8.0])
def test_vanishing_variances_give_the_nearest_codeword(weighting, log_sigma):
    """sigma -> 0 (large negative s via the head's bias): zhat -> nearest e_k."""
    layer = quantizer(weighting, kernel=np.zeros_like(KERNEL), bias=np.full(3, log_sigma, "float32"))
    out = to_numpy(layer([Z, FEATURES], training=False))
    distances = ((Z[:, None] - CODEBOOK[None]) ** 2).sum(-1)
    nearest = CODEBOOK[distances.argmin(1)]
    error = np.abs(out["output"] - nearest).max()
    # The gap to the runner-up is >= 0.45 in D here, so the error falls like
    # exp(-0.45 / (2 sigma^2)): ~4e-3 at s = -2, then below float32 resolution.
    bound = {-2.0: 2e-2, -4.0: 1e-6, -8.0: 1e-6}[log_sigma]
    assert error < bound
    np.testing.assert_array_equal(out["code_probs"].argmax(1), distances.argmin(1))


def test_error_to_the_nearest_codeword_shrinks_with_sigma():
    errors = []
    distances = ((Z[:, None] - CODEBOOK[None]) ** 2).sum(-1)
    nearest = CODEBOOK[distances.argmin(1)]
    for log_sigma in (0.0, -0.5, -1.0, -1.5):
        layer = quantizer(kernel=np.zeros_like(KERNEL), bias=np.full(3, log_sigma, "float32"))
        out = to_numpy(layer([Z, FEATURES], training=False))
        errors.append(np.abs(out["output"] - nearest).max())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


@pytest.mark.parametrize("weighting", ["mnist_code", "svhn_code", "gaussian"])
def test_huge_distances_and_tiny_variances_stay_finite(weighting):
    """Logits of order -1e14: a naive exp() underflows to 0/0; softmax must not."""
    z = np.array([[1e4, -1e4], [3e3, 5e3], [0.0, 0.0]], "float32")
    layer = quantizer(
        weighting, kernel=np.zeros((3, 3), "float32"), bias=np.full(3, -6.0, "float32")
    )
    out = to_numpy(layer([z, np.eye(3, dtype="float32")], training=True))
    for key, value in out.items():
        assert np.isfinite(value).all(), key
    np.testing.assert_allclose(out["code_probs"].sum(1), 1.0, rtol=1e-6)
    distances = ((z[:, None].astype(np.float64) - CODEBOOK[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(out["code_probs"].argmax(1), distances.argmin(1))


def test_huge_variances_give_equal_weights_for_mnist_code():
    """sigma -> inf with equal s: every codeword is equally likely, zhat = mean(E)."""
    layer = quantizer(kernel=np.zeros_like(KERNEL), bias=np.full(3, 8.0, "float32"))
    out = to_numpy(layer([Z, FEATURES], training=False))
    np.testing.assert_allclose(out["code_probs"], 1 / 3, rtol=1e-4)
    np.testing.assert_allclose(out["output"], np.tile(CODEBOOK.mean(0), (4, 1)), atol=1e-4)


def test_log_sigma_prior_term_shifts_weight_to_broad_codewords():
    """mnist_code's `+ s` term: at equal distance the broader codeword wins, by sigma ratio."""
    codebook = np.array([[-1.0], [1.0]], "float32")
    layer = SoftVectorQuantizer(num_codes=2)
    layer.build([(None, 1), (None, 1)])
    layer.codebook.assign(codebook)
    layer.log_sigma_head.set_weights(
        [np.zeros((1, 2), "float32"), np.array([0.0, math.log(1.5)], "float32")]
    )
    probs = to_numpy(layer([np.zeros((1, 1), "float32"), np.ones((1, 1), "float32")]))["code_probs"]
    # D = 1 for both: w0 = exp(-0.5), w1 = 1.5 exp(-0.5 / 2.25).
    w = np.array([math.exp(-0.5), 1.5 * math.exp(-0.5 / 2.25)])
    np.testing.assert_allclose(probs[0], w / w.sum(), rtol=1e-5)


# --- variance="per_code": one free log standard deviation per codeword ----------

PER_CODE_LOG_SIGMA = np.array([0.2, -0.4, 0.3], "float32")


def per_code_quantizer(weighting="mnist_code"):
    layer = SoftVectorQuantizer(num_codes=3, weighting=weighting, variance="per_code")
    layer.build([(None, 2), (None, 4)])
    layer.codebook.assign(CODEBOOK)
    layer.log_sigma.assign(PER_CODE_LOG_SIGMA)
    return layer


@pytest.mark.parametrize("weighting", ["mnist_code", "svhn_code", "gaussian"])
def test_per_code_variance_weights_equal_the_closed_form(weighting):
    layer = per_code_quantizer(weighting)
    assert layer.log_sigma_head is None
    assert [tuple(w.shape) for w in layer.trainable_weights] == [(3, 2), (3,)]
    out = to_numpy(layer([Z, FEATURES], training=False))
    shared = np.broadcast_to(PER_CODE_LOG_SIGMA, (len(Z), 3))
    np.testing.assert_allclose(
        out["code_probs"], closed_form_weights(weighting, log_sigma=shared), rtol=1e-5, atol=1e-7
    )
    # Features do not matter any more: other features, same output.
    again = to_numpy(layer([Z, 5.0 * FEATURES[::-1]], training=False))
    np.testing.assert_array_equal(again["output"], out["output"])


def test_per_code_variance_gets_a_gradient_and_round_trips():
    from .conftest import gradients, pure_layer, trainable_values

    layer = per_code_quantizer()
    f = pure_layer(layer, training=True)
    codebook, log_sigma = trainable_values(layer)
    _, d_log_sigma = gradients(lambda e, s: f([Z, FEATURES], e, s)[1], codebook, log_sigma)
    assert d_log_sigma.shape == (3,) and np.abs(d_log_sigma).min() > 1e-6
    config = layer.get_config()
    assert config["variance"] == "per_code"
    assert SoftVectorQuantizer.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="Unknown variance 'per_batch'"):
        SoftVectorQuantizer(num_codes=3, variance="per_batch")
