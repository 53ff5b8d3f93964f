"""Every bottleneck on the current backend: shapes, added losses against the
formulas of method.md, gradient paths, noise and determinism, configs."""

import math

import numpy as np
import pytest

import keras
from keras import ops

from softvq_keras import (
    BOTTLENECKS,
    FiniteScalarQuantizer,
    IdentityBottleneck,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
    InformationDropout,
    SoftVectorQuantizer,
    VariationalBottleneck,
    VectorQuantizer,
    make_bottleneck,
)

from softvq_keras.presets import MODEL_NAMES

from .conftest import added_loss, gradients, pure_layer, to_numpy, trainable_values

NAMES = MODEL_NAMES
QUANTIZERS = ("vq", "softvq")
MODERN = ("fsq", "lfq", "rvq")
CLASSES = {
    "ae": IdentityBottleneck,
    "vae": VariationalBottleneck,
    "betavae": VariationalBottleneck,
    "infodropout": InformationDropout,
    "vq": VectorQuantizer,
    "softvq": SoftVectorQuantizer,
    "fsq": FiniteScalarQuantizer,
    "lfq": LookupFreeQuantizer,
    "rvq": ResidualVectorQuantizer,
}
BATCH, LATENT, FEATURES, CODES = 5, 6, 7, 8


def small_inputs(seed=0, batch=BATCH, latent=LATENT, features=FEATURES):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, latent)).astype("float32")
    h = rng.normal(size=(batch, features)).astype("float32")
    return z, h


def make_small(name, **overrides):
    """The layer for `name` with the digits preset and a small codebook."""
    if name in QUANTIZERS:
        overrides.setdefault("codebook_size", CODES)
    return make_bottleneck(name, "digits", seed=1, **overrides)


def built(name, **overrides):
    layer = make_small(name, **overrides)
    z, h = small_inputs()
    layer([z, h], training=False)
    return layer


# --- registry -----------------------------------------------------------------


def test_registry_names_are_the_command_line_names():
    assert tuple(BOTTLENECKS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_make_bottleneck_returns_the_right_class(name):
    assert type(make_bottleneck(name, "mnist")) is CLASSES[name]


def test_make_bottleneck_uses_the_papers_mnist_defaults():
    assert make_bottleneck("vae", "mnist").beta == 1.0
    assert make_bottleneck("betavae", "mnist").beta == 20.0
    assert make_bottleneck("betavae", "mnist").reconstruction_size == 784
    info = make_bottleneck("infodropout", "mnist")
    assert (info.beta, info.max_alpha) == (0.5, 0.7)
    vq = make_bottleneck("vq", "mnist")
    assert vq.num_codes == 128
    svq = make_bottleneck("softvq", "mnist")
    assert (svq.num_codes, svq.commitment_cost, svq.loss_weight) == (128, 2.5, 3.0)
    assert svq.weighting == "mnist_code"
    assert svq.codebook_initializer == "uniform_unit_scaling"
    assert svq.latent_noise_stddev == 0.0


def test_make_bottleneck_uses_the_papers_svhn_defaults():
    assert make_bottleneck("betavae", "svhn").beta == 100.0
    assert make_bottleneck("betavae", "svhn").reconstruction_size == 32 * 32 * 3
    assert make_bottleneck("vq", "svhn").num_codes == 512
    svq = make_bottleneck("softvq", "svhn")
    assert (svq.num_codes, svq.commitment_cost, svq.loss_weight) == (32, 7.5, 2.0)
    assert svq.codebook_initializer == "variance_scaling"


def test_make_bottleneck_overrides_and_rejects_unknown_settings():
    assert make_bottleneck("softvq", "mnist", codebook_size=16).num_codes == 16
    assert make_bottleneck("vq", "mnist", codebook_size=16).num_codes == 16
    assert make_bottleneck("betavae", "mnist", beta=4.0).beta == 4.0
    assert make_bottleneck("infodropout", "mnist", beta=0.1).beta == 0.1
    svq = make_bottleneck("softvq", "mnist", weighting="gaussian", latent_noise_stddev=0.01)
    assert (svq.weighting, svq.latent_noise_stddev) == ("gaussian", 0.01)
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        make_bottleneck("nope", "mnist")
    with pytest.raises(ValueError, match="Unknown bottleneck settings.*bogus"):
        make_bottleneck("softvq", "mnist", bogus=1)
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'"):
        make_bottleneck("ae", "imagenet")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SoftVectorQuantizer(num_codes=1), "num_codes must be at least 2"),
        (lambda: VectorQuantizer(num_codes=1), "num_codes must be at least 2"),
        (lambda: SoftVectorQuantizer(4, weighting="fancy"), "Unknown weighting 'fancy'"),
        (lambda: SoftVectorQuantizer(4, latent_noise_stddev=-1), "latent_noise_stddev"),
        (lambda: SoftVectorQuantizer(4, codebook_initializer="x"), "codebook_initializer"),
        (lambda: VectorQuantizer(4, codebook_initializer="x"), "codebook_initializer"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("cls", [VariationalBottleneck, InformationDropout, SoftVectorQuantizer])
def test_layers_with_heads_require_the_features(cls):
    layer = cls(num_codes=4) if cls is SoftVectorQuantizer else cls()
    with pytest.raises(ValueError, match="needs the encoder's hidden features"):
        layer(np.zeros((2, 3), "float32"))


# --- shapes -------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name, training):
    layer = make_small(name)
    z, h = small_inputs()
    out = to_numpy(layer([z, h], training=training))
    expected = {"output": (BATCH, LATENT)}
    expected.update({f"{t}_loss": (BATCH,) for t in layer.loss_terms})
    if name in QUANTIZERS:
        expected["code_probs"] = (BATCH, CODES)
    if name in QUANTIZERS + MODERN:
        indices = out.pop("indices")
        assert indices.dtype == np.int32
        stages = layer.index_columns
        assert indices.shape == ((BATCH, stages) if stages else (BATCH,))
    assert {k: v.shape for k, v in out.items()} == expected
    assert all(np.isfinite(v).all() for v in out.values())
    assert all(v.dtype == np.float32 for v in out.values())


def test_quantizer_weights_have_the_expected_shapes():
    svq = built("softvq")
    assert tuple(svq.codebook.shape) == (CODES, LATENT)
    assert tuple(svq.log_sigma_head.kernel.shape) == (FEATURES, CODES)
    vq = built("vq")
    assert tuple(vq.codebook.shape) == (CODES, LATENT)
    assert len(vq.trainable_variables) == 1  # no head: features are ignored


# --- added losses against the formulas ------------------------------------------


def test_ae_adds_no_loss_and_passes_z_through():
    layer = make_small("ae")
    z, h = small_inputs()
    out = to_numpy(layer([z, h], training=True))
    assert layer.losses == []
    np.testing.assert_array_equal(out["output"], z)


def test_vq_loss_on_a_hand_checked_example():
    # Codewords e0=(0,0), e1=(1,1), e2=(-1,2). z1=(0.9,1.2) is nearest e1
    # (D = 2.25, 0.05, 4.25), z2=(0.2,-0.1) nearest e0 (D = 0.05, 1.85, 5.65).
    # Both squared errors are 0.05 over d=2 elements: per-sample mean 0.025.
    # Loss = w * (0.025 + c * 0.025) = 2 * (0.025 + 0.25 * 0.025) = 0.0625.
    layer = VectorQuantizer(num_codes=3, commitment_cost=0.25, loss_weight=2.0)
    z = np.array([[0.9, 1.2], [0.2, -0.1]], "float32")
    layer.build([(None, 2), (None, 1)])
    layer.codebook.assign(np.array([[0, 0], [1, 1], [-1, 2]], "float32"))
    out = to_numpy(layer([z, np.zeros((2, 1), "float32")]))
    np.testing.assert_allclose(out["output"], [[1, 1], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(out["codebook_loss"], [0.025, 0.025], rtol=1e-5)
    np.testing.assert_allclose(out["commitment_loss"], [0.025, 0.025], rtol=1e-5)
    np.testing.assert_array_equal(out["code_probs"], [[0, 1, 0], [1, 0, 0]])
    assert added_loss(layer) == pytest.approx(0.0625, rel=1e-5)


def test_vq_loss_matches_numpy_on_random_input():
    layer = built("vq", commitment_cost=0.5, loss_weight=3.0)
    z, h = small_inputs(seed=3)
    codebook = np.random.default_rng(4).normal(size=(CODES, LATENT)).astype("float32")
    layer.codebook.assign(codebook)
    out = to_numpy(layer([z, h]))
    d = ((z[:, None, :] - codebook[None]) ** 2).sum(-1)
    zq = codebook[d.argmin(1)]
    per_sample = ((zq - z) ** 2).mean(1)
    np.testing.assert_allclose(out["output"], zq, atol=1e-6)
    np.testing.assert_allclose(out["codebook_loss"], per_sample, rtol=1e-5)
    assert added_loss(layer) == pytest.approx(3.0 * 1.5 * per_sample.mean(), rel=1e-5)


def test_vae_loss_on_a_hand_checked_example():
    # mu = [[1, 0], [0, 2]], logvar = [0, ln 2] for both samples (bias only).
    # KL1 = -0.5 * ((1+0-1-1) + (1+ln2-0-2)) = 1 - ln2/2
    # KL2 = -0.5 * ((1+0-0-1) + (1+ln2-4-2)) = 2.5 - ln2/2
    # Loss = beta * mean(KL) / reconstruction_size = 2 * (1.75 - ln2/2) / 4.
    layer = VariationalBottleneck(beta=2.0, reconstruction_size=4)
    mu = np.array([[1, 0], [0, 2]], "float32")
    h = np.ones((2, 3), "float32")
    layer.build([(None, 2), (None, 3)])
    layer.logvar_head.kernel.assign(np.zeros((3, 2), "float32"))
    layer.logvar_head.bias.assign(np.array([0.0, math.log(2.0)], "float32"))
    out = to_numpy(layer([mu, h], training=False))
    half_ln2 = math.log(2.0) / 2
    np.testing.assert_allclose(out["kl_loss"], [1 - half_ln2, 2.5 - half_ln2], rtol=1e-5)
    np.testing.assert_array_equal(out["output"], mu)  # the mean at inference
    assert added_loss(layer) == pytest.approx(2 * (1.75 - half_ln2) / 4, rel=1e-5)


@pytest.mark.parametrize("name", ["vae", "betavae"])
def test_vae_loss_matches_numpy_on_random_input(name):
    layer = built(name)
    z, h = small_inputs(seed=5)
    rng = np.random.default_rng(6)
    kernel = rng.normal(scale=0.3, size=(FEATURES, LATENT)).astype("float32")
    bias = rng.normal(scale=0.3, size=LATENT).astype("float32")
    layer.logvar_head.set_weights([kernel, bias])
    out = to_numpy(layer([z, h], training=True))
    logvar = h @ kernel + bias
    kl = -0.5 * (1 + logvar - z**2 - np.exp(logvar)).sum(1)
    np.testing.assert_allclose(out["kl_loss"], kl, rtol=1e-5)
    expected = layer.beta * kl.mean() / 64  # digits: 8x8 pixels
    assert added_loss(layer) == pytest.approx(expected, rel=1e-5)


def test_infodropout_loss_on_a_hand_checked_example():
    # Zero head: alpha = 0.001 + 0.7 * sigmoid(0) = 0.351 for every unit, so
    # KL = d * -log(0.351 / 0.701) = 2 * 0.691727... per sample.
    layer = InformationDropout(beta=0.5, max_alpha=0.7, reconstruction_size=4)
    f = np.array([[1.0, 0.0], [0.5, 2.0]], "float32")
    layer.build([(None, 2), (None, 3)])
    layer.alpha_head.set_weights([np.zeros((3, 2), "float32"), np.zeros(2, "float32")])
    out = to_numpy(layer([f, np.ones((2, 3), "float32")], training=False))
    kl = 2 * math.log(0.701 / 0.351)
    np.testing.assert_allclose(out["kl_loss"], [kl, kl], rtol=1e-5)
    np.testing.assert_array_equal(out["output"], f)
    assert added_loss(layer) == pytest.approx(0.5 * kl / 4, rel=1e-5)


def test_infodropout_loss_matches_numpy_on_random_input():
    layer = built("infodropout")
    f, h = small_inputs(seed=7)
    f = np.maximum(f, 0)
    rng = np.random.default_rng(8)
    kernel = rng.normal(size=(FEATURES, LATENT)).astype("float32")
    bias = rng.normal(size=LATENT).astype("float32")
    layer.alpha_head.set_weights([kernel, bias])
    out = to_numpy(layer([f, h], training=True))
    alpha = 0.001 + 0.7 / (1 + np.exp(-(h @ kernel + bias)))
    kl = (-np.log(alpha / 0.701)).sum(1)
    np.testing.assert_allclose(out["kl_loss"], kl, rtol=1e-5)
    assert added_loss(layer) == pytest.approx(0.5 * kl.mean() / 64, rel=1e-5)


def test_infodropout_notebook_weighting_is_a_mean_over_units_with_linear_f():
    layer = make_small("infodropout", infodropout_weighting="notebook")
    assert layer.weighting == "notebook" and layer.latent_activation is None
    assert make_small("infodropout").latent_activation == "relu"
    f, h = small_inputs(seed=7)  # negative f allowed: the notebook's f is linear
    rng = np.random.default_rng(8)
    kernel = rng.normal(size=(FEATURES, LATENT)).astype("float32")
    bias = rng.normal(size=LATENT).astype("float32")
    layer([f, h], training=False)
    layer.alpha_head.set_weights([kernel, bias])
    out = to_numpy(layer([f, h], training=True))
    alpha = 0.001 + 0.7 / (1 + np.exp(-(h @ kernel + bias)))
    cost = (-np.log(alpha / 0.7 + 0.001)).mean(1)  # mean, not sum, over units
    np.testing.assert_allclose(out["kl_loss"], cost, rtol=1e-5)
    assert added_loss(layer) == pytest.approx(0.5 * cost.mean() / 64, rel=1e-5)
    # Noise still multiplies f with the safe alpha: log|out / f| = alpha * eps.
    ratio = np.log(out["output"] / f)
    assert np.all(np.abs(ratio) <= alpha * 6)
    assert np.abs(ratio).max() > 0.01


def test_infodropout_notebook_model_has_a_linear_z_head():
    from softvq_keras import build_autoencoder

    layer = make_small("infodropout", infodropout_weighting="notebook")
    model, _ = build_autoencoder(layer, (64,), 4, "mlp")
    assert model.get_layer("z").activation is keras.activations.linear
    with pytest.raises(ValueError, match="Unknown weighting 'paper'"):
        InformationDropout(weighting="paper")


def softvq_reference(z, log_sigma, codebook, weighting="mnist_code"):
    """method.md's closed form in float64: weights p (B, K) and zhat (B, d)."""
    z, log_sigma, codebook = (np.asarray(a, np.float64) for a in (z, log_sigma, codebook))
    distances = ((z[:, None, :] - codebook[None]) ** 2).sum(-1)
    precision = np.exp(-2 * log_sigma)
    if weighting == "mnist_code":  # w_k = exp(-lambda_k D_k / 2) / sqrt(lambda_k)
        w = np.exp(-0.5 * precision * distances) / np.sqrt(precision)
    elif weighting == "gaussian":  # w_k = lambda_k^(d/2) exp(-lambda_k D_k / 2)
        w = precision ** (z.shape[1] / 2) * np.exp(-0.5 * precision * distances)
    else:  # svhn_code
        w = np.exp(-0.5 * precision * distances)
    p = w / w.sum(1, keepdims=True)
    mix = p * np.exp(log_sigma) if weighting == "svhn_code" else p
    return p, mix @ codebook


def test_softvq_loss_on_a_hand_checked_example():
    # e0 = (0, 0), e1 = (2, 0), z = (1, 0): D = (1, 1). s = (0, ln 2):
    # w0 = exp(-1/2) * 1 = 0.606531, w1 = exp(-1/8) * 2 = 1.764994,
    # p1 = 1.764994 / 2.371525 = 0.744244, zhat = (2 p1, 0) = (1.488488, 0).
    # q_latent = e_latent = (0.488488^2 + 0) / 2 = 0.119310.
    # Loss = w * (1 + c) * 0.119310 with w = 3, c = 2.5.
    layer = SoftVectorQuantizer(num_codes=2, commitment_cost=2.5, loss_weight=3.0)
    layer.build([(None, 2), (None, 1)])
    layer.codebook.assign(np.array([[0, 0], [2, 0]], "float32"))
    layer.log_sigma_head.set_weights(
        [np.zeros((1, 2), "float32"), np.array([0, math.log(2)], "float32")]
    )
    out = to_numpy(layer([np.array([[1, 0]], "float32"), np.ones((1, 1), "float32")]))
    np.testing.assert_allclose(out["code_probs"], [[0.255756, 0.744244]], atol=1e-5)
    np.testing.assert_allclose(out["output"], [[1.488488, 0]], atol=1e-5)
    np.testing.assert_allclose(out["codebook_loss"], [0.119310], rtol=1e-4)
    np.testing.assert_allclose(out["commitment_loss"], [0.119310], rtol=1e-4)
    assert added_loss(layer) == pytest.approx(3 * 3.5 * 0.119310, rel=1e-4)


@pytest.mark.parametrize("weighting", ["mnist_code", "svhn_code", "gaussian"])
def test_softvq_loss_matches_numpy_on_random_input(weighting):
    layer = built("softvq", weighting=weighting, commitment_cost=1.5, loss_weight=2.0)
    z, h = small_inputs(seed=9)
    rng = np.random.default_rng(10)
    codebook = rng.normal(size=(CODES, LATENT)).astype("float32")
    kernel = rng.normal(scale=0.2, size=(FEATURES, CODES)).astype("float32")
    bias = rng.normal(scale=0.2, size=CODES).astype("float32")
    layer.codebook.assign(codebook)
    layer.log_sigma_head.set_weights([kernel, bias])
    out = to_numpy(layer([z, h], training=True))
    p, zhat = softvq_reference(z, h @ kernel + bias, codebook, weighting)
    per_sample = ((zhat - z) ** 2).mean(1)
    np.testing.assert_allclose(out["code_probs"], p, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["output"], zhat, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["codebook_loss"], per_sample, rtol=1e-4)
    np.testing.assert_allclose(out["commitment_loss"], per_sample, rtol=1e-4)
    assert added_loss(layer) == pytest.approx(2.0 * 2.5 * per_sample.mean(), rel=1e-4)


def test_loss_convention_is_a_mean_not_a_sum_over_the_batch():
    """Doubling the batch with copies leaves every added loss unchanged."""
    for name in ("vae", "infodropout", "vq", "softvq"):
        layer = built(name)
        z, h = small_inputs(seed=11)
        layer([z, h])
        single = added_loss(layer)
        layer([np.concatenate([z, z]), np.concatenate([h, h])])
        assert added_loss(layer) == pytest.approx(single, rel=1e-5), name


# --- gradients ------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in NAMES if n not in MODERN])
def test_gradient_reaches_z_as_the_identity_at_inference(name):
    """d(sum(output * g))/dz = g: the straight-through path (or the identity)."""
    layer = built(name)
    f = pure_layer(layer, training=False)
    z, h = small_inputs(seed=12)
    g = np.random.default_rng(13).normal(size=z.shape).astype("float32")
    weights = trainable_values(layer)
    (dz,) = gradients(lambda z_: ops.sum(ops.multiply(f([z_, h], *weights)[0]["output"], g)), z)
    np.testing.assert_allclose(dz, g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", QUANTIZERS)
def test_straight_through_output_sends_no_gradient_to_the_codebook(name):
    layer = built(name)
    f = pure_layer(layer, training=True)
    z, h = small_inputs(seed=14)

    def output_sum(*weights):
        return ops.sum(f([z, h], *weights)[0]["output"])

    grads = gradients(output_sum, *trainable_values(layer))
    assert all(np.abs(g).max() == 0 for g in grads)


def test_vq_codebook_gradient_comes_from_q_latent_only():
    """d loss / d e_k = w * 2 * sum_{i -> k} (e_k - z_i) / (B d); none from the commitment."""
    layer = built("vq", commitment_cost=0.25, loss_weight=2.0)
    f = pure_layer(layer, training=True)
    z, h = small_inputs(seed=15)
    codebook = trainable_values(layer)[0]
    (grad,) = gradients(lambda e: f([z, h], e)[1], codebook)
    nearest = ((z[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    expected = np.zeros_like(codebook)
    for i, k in enumerate(nearest):
        expected[k] += 2.0 * 2 * (codebook[k] - z[i]) / (BATCH * LATENT)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)
    (commit_grad,) = gradients(lambda e: ops.sum(f([z, h], e)[0]["commitment_loss"]), codebook)
    assert np.abs(commit_grad).max() == 0


def test_vq_commitment_gradient_pulls_z_to_its_codeword():
    layer = built("vq", commitment_cost=0.25, loss_weight=2.0)
    f = pure_layer(layer, training=True)
    z, h = small_inputs(seed=16)
    codebook = trainable_values(layer)[0]
    (dz,) = gradients(lambda z_: f([z_, h], codebook)[1], z)
    zq = codebook[((z[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)]
    np.testing.assert_allclose(dz, 2.0 * 0.25 * 2 * (z - zq) / (BATCH * LATENT), rtol=1e-4, atol=1e-7)


def _finite_difference(fn, x, eps=1e-5):
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        grad[idx] = (fn(x + step) - fn(x - step)) / (2 * eps)
    return grad


def test_softvq_gradients_match_the_stop_gradient_losses():
    """Codebook and s-head get gradients only through q_latent; z through both terms.

    The references differentiate method.md's losses in float64 by central
    differences, holding `sg(z)` and `sg(zhat)` fixed as constants.
    """
    w, c = 2.0, 1.5
    layer = built("softvq", commitment_cost=c, loss_weight=w)
    f = pure_layer(layer, training=True)
    z, h = small_inputs(seed=17)
    rng = np.random.default_rng(18)
    kernel = rng.normal(scale=0.2, size=(FEATURES, CODES)).astype("float32")
    bias = rng.normal(scale=0.2, size=CODES).astype("float32")
    codebook = rng.normal(scale=0.7, size=(CODES, LATENT)).astype("float32")
    grad_z, grad_e, grad_kernel, grad_bias = gradients(
        lambda z_, e, k, b: f([z_, h], e, k, b)[1], z, codebook, kernel, bias
    )
    z64, h64, e64 = z.astype(np.float64), h.astype(np.float64), codebook.astype(np.float64)
    k64, b64 = kernel.astype(np.float64), bias.astype(np.float64)
    _, zhat_fixed = softvq_reference(z64, h64 @ k64 + b64, e64)

    def q_latent(z_, e, k, b):
        return ((softvq_reference(z_, h64 @ k + b, e)[1] - z64) ** 2).mean()

    def e_latent(z_):
        return ((zhat_fixed - z_) ** 2).mean()

    ref_e = w * _finite_difference(lambda e: q_latent(z64, e, k64, b64), e64)
    ref_b = w * _finite_difference(lambda b: q_latent(z64, e64, k64, b), b64)
    ref_k = w * _finite_difference(lambda k: q_latent(z64, e64, k, b64), k64)
    ref_z = w * (
        _finite_difference(lambda z_: q_latent(z_, e64, k64, b64), z64)
        + c * _finite_difference(e_latent, z64)
    )
    for got, ref in ((grad_e, ref_e), (grad_bias, ref_b), (grad_kernel, ref_k), (grad_z, ref_z)):
        assert np.abs(ref).max() > 1e-4  # every path carries a real gradient
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-5)


def test_softvq_commitment_sends_no_gradient_to_codebook_or_head():
    layer = built("softvq")
    f = pure_layer(layer, training=True)
    z, h = small_inputs(seed=19)
    grads = gradients(
        lambda *w: ops.sum(f([z, h], *w)[0]["commitment_loss"]), *trainable_values(layer)
    )
    assert all(np.abs(g).max() == 0 for g in grads)


# --- noise and determinism --------------------------------------------------------


@pytest.mark.parametrize("name", NAMES + ("softvq_noise",))
def test_inference_is_deterministic(name):
    layer = built("softvq", latent_noise_stddev=0.1) if name == "softvq_noise" else built(name)
    z, h = small_inputs(seed=20)
    first = to_numpy(layer([z, h], training=False))
    second = to_numpy(layer([z, h], training=False))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.mark.parametrize(
    "name, noisy",
    [("ae", False), ("vq", False), ("softvq", False), ("vae", True), ("betavae", True),
     ("infodropout", True), ("softvq_noise", True)],
)
def test_training_noise_only_where_the_method_has_it(name, noisy):
    layer = built("softvq", latent_noise_stddev=0.1) if name == "softvq_noise" else built(name)
    z, h = small_inputs(seed=21)
    z = np.abs(z) + 0.5  # info dropout's f(x) is a ReLU output: make it non-zero
    first = to_numpy(layer([z, h], training=True))["output"]
    second = to_numpy(layer([z, h], training=True))["output"]
    inference = to_numpy(layer([z, h], training=False))["output"]
    if noisy:
        assert np.abs(first - second).max() > 1e-4
        assert np.abs(first - inference).max() > 1e-4
    else:
        np.testing.assert_array_equal(first, second)
        np.testing.assert_array_equal(first, inference)


def test_vae_samples_have_the_posterior_spread():
    """mu + exp(logvar/2) eps: with logvar = ln 4 the samples' std is 2."""
    layer = VariationalBottleneck(seed=3)
    mu = np.full((4000, 2), 3.0, "float32")
    layer.build([(None, 2), (None, 1)])
    layer.logvar_head.set_weights([np.zeros((1, 2), "float32"), np.full(2, math.log(4), "float32")])
    sample = to_numpy(layer([mu, np.ones((4000, 1), "float32")], training=True))["output"]
    assert sample.mean() == pytest.approx(3.0, abs=0.1)
    assert sample.std() == pytest.approx(2.0, rel=0.05)


def test_infodropout_noise_is_log_normal_with_scale_alpha():
    """log(out / f) = alpha * eps: with a zero head alpha = 0.351."""
    layer = InformationDropout(seed=3)
    f = np.full((4000, 2), 2.0, "float32")
    layer.build([(None, 2), (None, 1)])
    layer.alpha_head.set_weights([np.zeros((1, 2), "float32"), np.zeros(2, "float32")])
    out = to_numpy(layer([f, np.ones((4000, 1), "float32")], training=True))["output"]
    log_ratio = np.log(out / f)
    assert log_ratio.mean() == pytest.approx(0.0, abs=0.03)
    assert log_ratio.std() == pytest.approx(0.351, rel=0.05)


def test_softvq_latent_noise_has_the_requested_scale():
    """With noise sigma_n and (nearly) hard weights, the nearest code flips where expected."""
    layer = SoftVectorQuantizer(num_codes=2, latent_noise_stddev=0.5, seed=4)
    layer.build([(None, 1), (None, 1)])
    layer.codebook.assign(np.array([[-1.0], [1.0]], "float32"))
    layer.log_sigma_head.set_weights([np.zeros((1, 2), "float32"), np.full(2, -5.0, "float32")])
    z = np.full((4000, 1), 0.5, "float32")
    probs = to_numpy(layer([z, np.ones((4000, 1), "float32")], training=True))["code_probs"]
    # z + n < 0 (code 0 wins) with probability Phi(-0.5 / 0.5) = Phi(-1) = 0.1587.
    assert (probs[:, 0] > 0.5).mean() == pytest.approx(0.1587, abs=0.02)


# --- configs ------------------------------------------------------------------------


CONFIGURED = [
    IdentityBottleneck(name="b"),
    VariationalBottleneck(beta=4.0, reconstruction_size=10, seed=3, name="b"),
    InformationDropout(beta=0.2, max_alpha=0.5, reconstruction_size=10, seed=3, name="b"),
    VectorQuantizer(num_codes=5, commitment_cost=0.3, loss_weight=2.0,
                    codebook_initializer="variance_scaling", name="b"),
    SoftVectorQuantizer(num_codes=5, commitment_cost=7.5, loss_weight=2.0, weighting="svhn_code",
                        latent_noise_stddev=0.01, codebook_initializer="variance_scaling",
                        seed=3, name="b"),
]


@pytest.mark.parametrize("layer", CONFIGURED, ids=lambda l: type(l).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is type(layer)
    assert revived.get_config() == config


@pytest.mark.parametrize("name", NAMES)
def test_registry_layers_round_trip_their_config(name):
    layer = make_bottleneck(name, "mnist", seed=5)
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
