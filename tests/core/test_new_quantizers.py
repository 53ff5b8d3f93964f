"""FSQ, LFQ and residual VQ on the current backend, beyond the reference
parity: bad arguments, quantizer dropout, per-stage EMA, the interface."""

import numpy as np
import pytest

import keras

from softvq_keras import (
    FiniteScalarQuantizer,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
)

from .conftest import to_numpy


def latents(batch=32, dim=4, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=(batch, dim))).astype("float32")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: FiniteScalarQuantizer((8, 1, 4)), "levels must be a list of integers >= 2"),
        (lambda: FiniteScalarQuantizer(()), "levels must be a list of integers >= 2"),
        (lambda: LookupFreeQuantizer(100), "codebook_size must be a power of two >= 2 for LFQ; got 100"),
        (lambda: LookupFreeQuantizer(1), "codebook_size must be a power of two"),
        (lambda: LookupFreeQuantizer(2**20), "entropy_loss_weight=0"),
        (lambda: ResidualVectorQuantizer(0, 16), "num_quantizers must be an integer >= 1; got 0"),
        (lambda: ResidualVectorQuantizer(2, 1), "num_codes must be at least 2"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        make()
    assert "\n" not in str(info.value)


def test_large_lfq_codebook_without_entropy_loss_works():
    layer = LookupFreeQuantizer(2**20, entropy_loss_weight=0.0)
    out = to_numpy(layer(latents(dim=20)))
    bits = (latents(dim=20) > 0).astype(np.int64)
    np.testing.assert_array_equal(out["indices"], bits @ (2 ** np.arange(19, -1, -1)))
    assert layer.codes_per_stage == [2**20]


def test_fsq_and_lfq_decode_indices_give_the_inference_output():
    z = latents(dim=6)
    for layer in (FiniteScalarQuantizer((8, 5, 5, 5)), LookupFreeQuantizer(64, entropy_loss_weight=0.0),
                  FiniteScalarQuantizer((7, 5, 5, 5, 5, 5))):
        out = to_numpy(layer(z))
        np.testing.assert_allclose(to_numpy(layer.decode_indices(out["indices"])),
                                   out["output"], atol=1e-6)
        assert out["indices"].dtype == np.int32
        assert 0 <= out["indices"].min() and out["indices"].max() < layer.codes_per_stage[0]


def test_rvq_stages_quantize_successive_residuals():
    layer = ResidualVectorQuantizer(3, 8)
    z = latents()
    out = to_numpy(layer(z))
    residual, total = z.astype(np.float64), 0.0
    for s, stage in enumerate(layer.stages):
        codebook = keras.ops.convert_to_numpy(stage.codebook).astype(np.float64)
        nearest = ((residual[:, None] - codebook[None]) ** 2).sum(-1).argmin(-1)
        np.testing.assert_array_equal(out["indices"][:, s], nearest)
        total = total + codebook[nearest]
        residual = residual - codebook[nearest]
    np.testing.assert_allclose(out["output"], total, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.decode_indices(out["indices"])), total, atol=1e-5)
    assert layer.codes_per_stage == [8, 8, 8]


def test_rvq_quantizer_dropout_keeps_a_prefix_in_training_only():
    layer = ResidualVectorQuantizer(4, 8, quantizer_dropout=True, seed=3)
    z = latents()
    full = to_numpy(layer(z))
    assert (full["indices"] >= 0).all()  # inference: every stage
    kept_counts = set()
    for _ in range(12):
        out = to_numpy(layer(z, training=True))
        kept = (out["indices"][0] >= 0).sum()
        kept_counts.add(int(kept))
        # A prefix, the same for every sample of the batch.
        assert (out["indices"][:, :kept] >= 0).all() and (out["indices"][:, kept:] == -1).all()
        np.testing.assert_array_equal(out["indices"][:, :kept], full["indices"][:, :kept])
        np.testing.assert_allclose(
            out["output"], to_numpy(layer.decode_indices(out["indices"])), atol=1e-5
        )
    assert len(kept_counts) >= 2 and kept_counts <= {1, 2, 3, 4}


def test_rvq_dropped_stages_keep_their_ema_statistics():
    layer = ResidualVectorQuantizer(
        3, 8, codebook_update="ema", quantizer_dropout=True, seed=0, decay=0.5
    )
    z = latents()
    layer(z)
    for _ in range(10):
        before = [keras.ops.convert_to_numpy(s.ema_cluster_size).copy() for s in layer.stages]
        out = to_numpy(layer(z, training=True))
        kept = int((out["indices"][0] >= 0).sum())
        after = [keras.ops.convert_to_numpy(s.ema_cluster_size) for s in layer.stages]
        for s in range(3):
            changed = not np.array_equal(before[s], after[s])
            assert changed == (s < kept), (s, kept)


def test_rvq_config_round_trip_and_stage_options():
    layer = ResidualVectorQuantizer(
        2, 16, codebook_update="ema", dead_code_threshold=0.5, rotation_trick=True, seed=4
    )
    assert all(s.rotation_trick and s.dead_code_threshold == 0.5 for s in layer.stages)
    assert [s.seed for s in layer.stages] == [5, 6]
    clone = ResidualVectorQuantizer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_latent_norm_batch_spreads_a_latent_with_a_shared_offset():
    # The paper's MLP drifts z to an offset shared by all samples (about -15 on
    # digits): the reference layer then gives every sample the same code.
    rng = np.random.default_rng(0)
    z = (-15.0 + 0.5 * rng.normal(size=(256, 3))).astype("float32")
    for make in (lambda norm: FiniteScalarQuantizer((8, 4, 4), latent_norm=norm),
                 lambda norm: LookupFreeQuantizer(8, latent_norm=norm)):
        assert len(np.unique(to_numpy(make(None)(z, training=True))["indices"])) == 1
        layer = make("batch")
        used = np.unique(to_numpy(layer(z, training=True))["indices"])
        assert len(used) >= 6, used
        mean = to_numpy(layer.norm.moving_mean)
        np.testing.assert_allclose(mean, 0.1 * z.mean(axis=0), rtol=1e-4)  # momentum 0.9


def test_latent_norm_config_round_trip_and_bad_value():
    for layer in (FiniteScalarQuantizer((8, 4), latent_norm="batch"),
                  LookupFreeQuantizer(16, latent_norm="batch")):
        layer(latents(dim=6))
        clone = type(layer).from_config(layer.get_config())
        assert clone.latent_norm == "batch" and layer.get_config()["latent_norm"] == "batch"
    assert FiniteScalarQuantizer((8, 4), latent_norm="none").latent_norm is None
    with pytest.raises(ValueError, match="latent_norm must be None or 'batch'; got 'layer'"):
        LookupFreeQuantizer(16, latent_norm="layer")
