"""EMA codebook training (`codebook_update="ema"`) of both quantizers on the
current backend: one step against numpy, dead-code replacement, `.keras`
round trip of the statistics, and a codebook that moves inside `model.fit`."""

import numpy as np
import pytest

import keras
from keras import ops

from softvq_keras import (
    SoftVectorQuantizer,
    VectorQuantizer,
    build_autoencoder,
    make_bottleneck,
)

from .conftest import added_loss, to_numpy

DECAY, EPS = 0.9, 1e-3


def ema_reference(z, weights, size, total, decay=DECAY, eps=EPS):
    """One EMA step in numpy: new (cluster sizes, codeword sums, codebook)."""
    size = decay * size + (1 - decay) * weights.sum(axis=0)
    total = decay * total + (1 - decay) * weights.T @ z
    n = size.sum()
    smoothed = (size + eps) / (n + len(size) * eps) * n
    return size, total, total / smoothed[:, None]


def state(layer):
    return (
        ops.convert_to_numpy(layer.ema_cluster_size).astype(np.float64),
        ops.convert_to_numpy(layer.ema_codeword_sum).astype(np.float64),
        ops.convert_to_numpy(layer.codebook).astype(np.float64),
    )


def inputs(batch=16, latent=3, features=5, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(batch, latent)).astype("float32"),
        rng.normal(size=(batch, features)).astype("float32"),
    )


def test_vq_ema_step_matches_numpy():
    layer = VectorQuantizer(6, codebook_update="ema", decay=DECAY, epsilon=EPS)
    z, h = inputs()
    layer([z, h], training=False)
    size0, total0, codebook0 = state(layer)
    # Initial state: N = 1, m = codebook.
    np.testing.assert_array_equal(size0, np.ones(6))
    np.testing.assert_allclose(total0, codebook0, rtol=1e-6)
    nearest = ((z[:, None, :] - codebook0[None]) ** 2).sum(-1).argmin(-1)
    one_hot = np.eye(6)[nearest]
    for _ in range(2):  # two steps: the second starts from updated statistics
        out = to_numpy(layer([z, h], training=True))
        size0, total0, expected = ema_reference(z, one_hot, size0, total0)
        size, total, codebook = state(layer)
        np.testing.assert_allclose(size, size0, rtol=1e-5)
        np.testing.assert_allclose(total, total0, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(codebook, expected, rtol=1e-5, atol=1e-6)
        one_hot = np.eye(6)[((z[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(-1)]
    # The codebook moved toward the means of its assigned latents.
    assert np.abs(codebook - codebook0).max() > 0.01
    # Only the commitment term is added; the codebook term is reported.
    commitment = out["commitment_loss"].mean()
    assert added_loss(layer) == pytest.approx(layer.loss_weight * layer.commitment_cost * commitment, rel=1e-5)
    assert out["codebook_loss"].mean() == pytest.approx(commitment, rel=1e-5)


def test_inference_leaves_the_statistics_alone():
    layer = VectorQuantizer(6, codebook_update="ema", dead_code_threshold=2.0, seed=1)
    z, h = inputs()
    layer([z, h], training=False)
    before = state(layer)
    layer([z, h], training=False)
    for a, b in zip(before, state(layer)):
        np.testing.assert_array_equal(a, b)


def test_ema_codebook_is_not_trainable_and_gradient_mode_is_unchanged():
    z, h = inputs()
    ema = VectorQuantizer(6, codebook_update="ema")
    ema([z, h])
    assert ema.trainable_weights == []
    assert [w.name for w in ema.non_trainable_weights] == [
        "codebook", "ema_cluster_size", "ema_codeword_sum"
    ]
    plain = VectorQuantizer(6)
    plain([z, h])
    assert [w.name for w in plain.weights] == ["codebook"]
    assert plain.trainable_weights[0] is plain.codebook


def test_softvq_ema_step_uses_the_posterior_as_soft_counts():
    layer = SoftVectorQuantizer(
        5, codebook_update="ema", decay=DECAY, epsilon=EPS, weighting="mnist_code"
    )
    z, h = inputs()
    layer([z, h], training=False)
    size0, total0, _ = state(layer)
    probs = to_numpy(layer([z, h], training=False))["code_probs"].astype(np.float64)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    out = to_numpy(layer([z, h], training=True))
    np.testing.assert_allclose(out["code_probs"], probs, rtol=1e-5, atol=1e-7)
    expected = ema_reference(z, probs, size0, total0)
    for got, want in zip(state(layer), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # Both terms stay: the codebook term also trains z and the variance head.
    w, c = layer.loss_weight, layer.commitment_cost
    want = w * (out["codebook_loss"].mean() + c * out["commitment_loss"].mean())
    assert added_loss(layer) == pytest.approx(want, rel=1e-5)
    assert all(w is not layer.codebook for w in layer.trainable_weights)


def test_dead_codes_move_onto_batch_latents():
    # 4 codes; every latent sits near code 0 or code 1, codes 2 and 3 are dead.
    codebook = np.array([[1, 0], [-1, 0], [0, 5], [0, -5]], dtype="float32")
    z = np.array([[1.1, 0.1], [0.9, -0.1], [-1.0, 0.2], [-1.2, 0.0]], dtype="float32")
    layer = VectorQuantizer(
        4, codebook_update="ema", decay=DECAY, epsilon=EPS,
        dead_code_threshold=0.95, seed=7,
    )
    layer([z, z], training=False)
    layer.set_codebook(codebook)
    size0, total0, _ = state(layer)
    layer([z, z], training=True)
    size, total, new = state(layer)
    one_hot = np.eye(4)[[0, 0, 1, 1]]
    ref_size, ref_total, ref_codebook = ema_reference(z, one_hot, size0, total0)
    # Live codes follow the EMA; after the step N = (0.9 + 0.2, ..., 0.9, 0.9).
    np.testing.assert_allclose(new[:2], ref_codebook[:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(size[:2], ref_size[:2], rtol=1e-6)
    assert np.all(ref_size[2:] < 0.95)
    # Dead codes: each is now one of the batch's latents, N = threshold.
    for k in (2, 3):
        assert np.abs(z - new[k]).sum(-1).min() < 1e-6, new[k]
    np.testing.assert_allclose(size[2:], 0.95, rtol=1e-6)
    np.testing.assert_allclose(total[2:], new[2:] * 0.95, rtol=1e-5, atol=1e-7)
    # The moved codes take latents at the next step: nothing is dead any more.
    picks = to_numpy(layer([z, z], training=False))["code_probs"].sum(0)
    assert (picks > 0).sum() >= 3


def test_set_codebook_resets_the_sums_consistently():
    layer = VectorQuantizer(4, codebook_update="ema", decay=DECAY, epsilon=EPS)
    z, h = inputs(latent=2)
    layer([z, h], training=True)
    values = np.arange(8, dtype="float32").reshape(4, 2)
    layer.set_codebook(values)
    size, total, codebook = state(layer)
    np.testing.assert_array_equal(codebook, values)
    n = size.sum()
    smoothed = (size + EPS) / (n + 4 * EPS) * n
    np.testing.assert_allclose(total / smoothed[:, None], values, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"codebook_update": "kmeans"}, "Unknown codebook_update 'kmeans'"),
        ({"codebook_update": "ema", "decay": 1.0}, "decay must be in (0, 1)"),
        ({"codebook_update": "ema", "epsilon": 0.0}, "epsilon must be > 0"),
        ({"codebook_update": "ema", "dead_code_threshold": -1}, "dead_code_threshold must be >= 0"),
        ({"dead_code_threshold": 0.1}, "dead_code_threshold needs codebook_update='ema'"),
    ],
)
@pytest.mark.parametrize("cls", [VectorQuantizer, SoftVectorQuantizer])
def test_bad_ema_options_raise_clear_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls(4, **kwargs)


def ema_autoencoder(name, **overrides):
    bottleneck = make_bottleneck(
        name, "digits", seed=0, codebook_update="ema", codebook_size=8, **overrides
    )
    model, _ = build_autoencoder(bottleneck, (64,), 4, "mlp", pixel_variance=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


@pytest.mark.parametrize("name", ["vq", "softvq"])
def test_codebook_moves_inside_fit(name, digits_splits):
    """The assignments made in the traced train step survive (JAX included)."""
    x = digits_splits.x_train[:256]
    model = ema_autoencoder(name, dead_code_threshold=0.05, decay=0.9)
    layer = model.get_layer("bottleneck")
    before = state(layer)
    model.fit(x, batch_size=32, epochs=2, verbose=0, shuffle=False)
    size, total, codebook = state(layer)
    assert np.abs(codebook - before[2]).max() > 1e-3
    # 16 EMA steps of batch 32: the cluster sizes sum to ~32 (from K = 8 at the start).
    assert size.sum() == pytest.approx(32 + (8 - 32) * 0.9**16, rel=0.05)
    # The codebook is the smoothed ratio of the statistics the step left behind.
    n = size.sum()
    smoothed = (size + layer.epsilon) / (n + len(size) * layer.epsilon) * n
    np.testing.assert_allclose(codebook, total / smoothed[:, None], rtol=1e-4, atol=1e-5)
    # Codewords sit among the latents they summarize (not left at the init).
    latents = model.predict(x, verbose=0)["latent"]
    assert np.abs(codebook).max() < 2 * np.abs(latents).max() + 1e-3


def test_statistics_survive_a_keras_round_trip(digits_splits, tmp_path):
    x = digits_splits.x_train[:128]
    model = ema_autoencoder("vq", dead_code_threshold=0.05)
    model.fit(x, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "ema.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for got, want in zip(state(loaded.get_layer("bottleneck")), state(model.get_layer("bottleneck"))):
        np.testing.assert_array_equal(got, want)
    assert loaded.get_layer("bottleneck").get_config() == model.get_layer("bottleneck").get_config()
    np.testing.assert_array_equal(
        loaded.predict(x[:8], verbose=0)["reconstruction"],
        model.predict(x[:8], verbose=0)["reconstruction"],
    )


def test_keras_free_option_lists_match_the_layers():
    from softvq_keras.layers.ema import CODEBOOK_UPDATES
    from softvq_keras.layers.information_dropout import WEIGHTINGS
    from softvq_keras.presets import CODEBOOK_UPDATES as cli_updates
    from softvq_keras.presets import INFODROPOUT_WEIGHTINGS

    assert cli_updates == CODEBOOK_UPDATES
    assert INFODROPOUT_WEIGHTINGS == WEIGHTINGS


def test_registry_passes_the_ema_options_and_refuses_them_elsewhere():
    vq = make_bottleneck(
        "vq", "mnist", codebook_update="ema", decay=0.9, ema_epsilon=1e-4,
        dead_code_threshold=0.1,
    )
    assert (vq.codebook_update, vq.decay, vq.epsilon, vq.dead_code_threshold) == (
        "ema", 0.9, 1e-4, 0.1
    )
    assert make_bottleneck("vq", "mnist").codebook_update == "gradient"
    assert make_bottleneck("softvq", "mnist", codebook_update="ema").uses_ema
    with pytest.raises(ValueError, match="Unknown bottleneck settings: \\['codebook_update'\\]"):
        make_bottleneck("ae", "mnist", codebook_update="ema")
    with pytest.raises(ValueError, match="infodropout_weighting"):
        make_bottleneck("vq", "mnist", infodropout_weighting="notebook")


def test_dead_code_replacements_are_distinct_rows():
    """K = 512, batch 256, threshold 2: every code is dead after the first step;
    256 of them move onto the 256 distinct latents, the rest wait (512 distinct)."""
    layer = VectorQuantizer(512, codebook_update="ema", dead_code_threshold=2.0, seed=0)
    z = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    layer([z, z], training=False)
    layer([z, z], training=True)
    codebook = ops.convert_to_numpy(layer.codebook)
    assert len(np.unique(codebook, axis=0)) == 512
    on_latents = (np.abs(codebook[:, None] - z[None]).sum(-1) < 1e-6)
    assert on_latents.any(-1).sum() == 256  # at most one code per batch row
    assert on_latents.sum(0).max() == 1
    size = ops.convert_to_numpy(layer.ema_cluster_size)
    assert (size == 2.0).sum() == 256
    layer([z, z], training=True)  # the other 256 move at the next step
    codebook = ops.convert_to_numpy(layer.codebook)
    assert len(np.unique(codebook, axis=0)) == 512
