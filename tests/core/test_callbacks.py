"""Codebook callbacks: the values they assign, and that training keeps them.

Under JAX the trainer holds the weights in a functional state; a value assigned
at the wrong moment is silently overwritten. Each test therefore checks the
codebook *after* `fit`, trained on with a learning rate too small to move it far.
"""

import numpy as np
import pytest

import keras
from keras import ops

from softvq_keras import SoftVectorQuantizer, VectorQuantizer, build_autoencoder
from softvq_keras.callbacks import CodebookKMeansInit, DeadCodeRestart

K, LATENT = 8, 4


def _model(bottleneck, lr=1e-7):
    model, _ = build_autoencoder(bottleneck, (64,), LATENT, "mlp")
    model.compile(optimizer=keras.optimizers.Adam(lr))
    return model


def _codebook(model):
    return ops.convert_to_numpy(model.get_layer("bottleneck").codebook).copy()


class Snapshot(keras.callbacks.Callback):
    """Records, at the start of epoch `at`, the codebook and the latents of `x`."""

    def __init__(self, x, at):
        super().__init__()
        self.x, self.at = x, at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            self.codebook = _codebook(self.model)
            self.outputs = self.model.predict(self.x, verbose=0)


@pytest.mark.parametrize("layer", [SoftVectorQuantizer, VectorQuantizer])
def test_kmeans_init_sets_centroids_that_training_keeps(digits_splits, layer):
    from sklearn.cluster import KMeans

    x = digits_splits.x_train[:256]
    model = _model(layer(num_codes=K, name="bottleneck"))
    init = CodebookKMeansInit(x, at_epoch=1, seed=3, batch_size=100)
    seen = Snapshot(x, at=1)
    before = _codebook(model)
    model.fit(x, epochs=2, batch_size=64, verbose=0, callbacks=[init, seen])

    expected = KMeans(K, n_init=1, random_state=3).fit(seen.outputs["latent"])
    np.testing.assert_allclose(seen.codebook, expected.cluster_centers_, atol=1e-5)
    assert init.epoch == 1 and init.inertia == pytest.approx(expected.inertia_, rel=1e-4)
    # Four steps at lr 1e-7 move nothing far: the trained codebook is the K-means one.
    np.testing.assert_allclose(_codebook(model), expected.cluster_centers_, atol=1e-4)
    assert np.abs(_codebook(model) - before).max() > 0.01


def test_kmeans_init_waits_for_its_epoch(digits_splits):
    x = digits_splits.x_train[:128]
    model = _model(SoftVectorQuantizer(num_codes=K, name="bottleneck"))
    before = _codebook(model)
    init = CodebookKMeansInit(x, at_epoch=3)
    model.fit(x, epochs=2, batch_size=64, verbose=0, callbacks=[init])
    assert init.epoch is None
    np.testing.assert_allclose(_codebook(model), before, atol=1e-4)


def test_dead_codes_move_onto_latents_and_live_codes_stay(digits_splits):
    x = digits_splits.x_train[:256]
    layer = VectorQuantizer(num_codes=K, name="bottleneck")
    model = _model(layer)
    # Codewords 1..7 far from every latent: only codeword 0 is ever picked.
    far = np.full((K, LATENT), 1e3, dtype="float32") * np.arange(K)[:, None]
    layer.codebook.assign(far)
    restart = DeadCodeRestart(x, every=1, noise=0.0, seed=0)
    seen = Snapshot(x, at=1)
    model.fit(x, epochs=2, batch_size=64, verbose=0, callbacks=[restart, seen])

    assert restart.restarts == [(1, K - 1)]
    latents = seen.outputs["latent"]
    np.testing.assert_allclose(seen.codebook[0], far[0], atol=1e-5)  # the live code stays
    for row in seen.codebook[1:]:  # each dead one now sits on a latent of the sample
        assert np.min(np.abs(latents - row).max(axis=1)) < 1e-5
    picks = np.bincount(seen.outputs["code_probs"].argmax(-1), minlength=K)
    assert (picks > 0).sum() > 1  # after the restart more than one code is used
    np.testing.assert_allclose(_codebook(model), seen.codebook, atol=1e-4)


def test_no_restart_when_every_code_is_used(digits_splits):
    x = digits_splits.x_train[:256]
    model = _model(VectorQuantizer(num_codes=2, name="bottleneck"))
    z = model.predict(x, verbose=0)["latent"]
    # One codeword on each side of the latents' first principal direction.
    centred = z - z.mean(0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    side = centred @ direction > 0
    model.get_layer("bottleneck").codebook.assign(
        np.stack([z[side].mean(0), z[~side].mean(0)]).astype("float32"))
    before = _codebook(model)
    restart = DeadCodeRestart(x, every=1)
    model.fit(x, epochs=2, batch_size=64, verbose=0, callbacks=[restart])
    assert restart.restarts == [(1, 0)]
    np.testing.assert_allclose(_codebook(model), before, atol=1e-4)


def test_callbacks_refuse_bad_settings_and_models(digits_splits):
    x = digits_splits.x_train[:64]
    with pytest.raises(ValueError, match="at_epoch must be >= 1"):
        CodebookKMeansInit(x, at_epoch=0)
    with pytest.raises(ValueError, match="every must be >= 1"):
        DeadCodeRestart(x, every=0)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        DeadCodeRestart(x, noise=-1.0)
    from softvq_keras import IdentityBottleneck

    model = _model(IdentityBottleneck(name="bottleneck"))
    with pytest.raises(ValueError, match="has no codebook"):
        model.fit(x, epochs=2, verbose=0, callbacks=[DeadCodeRestart(x)])
    small = _model(SoftVectorQuantizer(num_codes=K, name="bottleneck"))
    with pytest.raises(ValueError, match="at least 8 inputs"):
        small.fit(x, epochs=2, verbose=0, callbacks=[CodebookKMeansInit(x[:5])])


def test_kmeans_init_sets_every_residual_stage(digits_splits):
    """Residual VQ: stage s gets the K-means centroids of what stages < s leave."""
    from sklearn.cluster import KMeans

    from softvq_keras import build_autoencoder, make_bottleneck
    from softvq_keras.callbacks import CodebookKMeansInit

    x = digits_splits.x_train[:256]
    bottleneck = make_bottleneck("rvq", "digits", seed=0, num_quantizers=2, codebook_size=8)
    model, _ = build_autoencoder(bottleneck, (64,), 4, "mlp")
    model.compile(optimizer="adam")
    callback = CodebookKMeansInit(x, at_epoch=1, seed=0)
    callback.set_model(model)
    callback.on_epoch_begin(1)
    z = np.asarray(model.predict(x, verbose=0)["latent"], np.float32)
    first = KMeans(8, n_init=1, random_state=0).fit(z)
    residual = z - first.cluster_centers_[first.labels_]
    second = KMeans(8, n_init=1, random_state=0).fit(residual)
    stages = model.get_layer("bottleneck").stages
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stages[0].codebook),
                               first.cluster_centers_, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(stages[1].codebook),
                               second.cluster_centers_, atol=1e-4)
    assert callback.epoch == 1
