"""The new quantizers against vector-quantize-pytorch 1.32 on the current
backend: the same inputs, codebooks and projection weights in both, outputs to
1e-5, indices identical, LFQ's entropy loss, the rotation trick's gradient.

torch is imported inside the tests (it is installed with the test extra), so
that under JAX and TensorFlow it is loaded only when these tests run.
"""

import numpy as np
import pytest

from softvq_keras import (
    FiniteScalarQuantizer,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
)
from softvq_keras.layers.rotation import rotate_to

from .conftest import gradients, to_numpy

BATCH = 64


@pytest.fixture(scope="module")
def vqp():
    torch = pytest.importorskip("torch")
    module = pytest.importorskip("vector_quantize_pytorch")
    assert module.__version__ if hasattr(module, "__version__") else True
    return torch, module


def latents(dim, scale=1.5, seed=0, batch=BATCH):
    return (scale * np.random.default_rng(seed).normal(size=(batch, dim))).astype("float32")


def copy_projections(layer, reference, torch):
    """Our Dense kernels (in, out) from the reference's Linear weights (out, in)."""
    for ours, theirs in ((layer.project_in, reference.project_in),
                         (layer.project_out, reference.project_out)):
        ours.kernel.assign(theirs.weight.detach().numpy().T)
        ours.bias.assign(theirs.bias.detach().numpy())


def run_reference(module, z, torch):
    """The reference on `z (batch, d)` as one sequence `(1, batch, d)`."""
    with torch.no_grad():
        out = module(torch.from_numpy(z)[None])
    return out[0][0].numpy(), out[1][0].numpy()


@pytest.mark.parametrize("levels, dim", [((8, 5, 5, 5), 4), ((8, 4, 4), 6)])
def test_fsq_outputs_and_indices_match(vqp, levels, dim):
    torch, module = vqp
    torch.manual_seed(0)
    reference = module.FSQ(levels=list(levels), dim=dim).eval()
    layer = FiniteScalarQuantizer(levels)
    z = latents(dim)
    layer.build((None, dim))
    if dim != len(levels):
        copy_projections(layer, reference, torch)
    out = to_numpy(layer(z))
    want, want_indices = run_reference(reference, z, torch)
    np.testing.assert_allclose(out["output"], want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out["indices"], want_indices)
    assert len(np.unique(out["indices"])) > 20  # the test sees many codes
    # Decoding: the reference's indices_to_codes (projection included).
    with torch.no_grad():
        codes = reference.indices_to_codes(torch.from_numpy(want_indices.astype("int64")))
    np.testing.assert_allclose(
        to_numpy(layer.decode_indices(out["indices"])), codes.numpy(), atol=1e-5
    )


def test_fsq_level_two_is_accepted_and_takes_minus_one_and_zero():
    """Deliberate difference: the reference refuses L = 2 without preserve_symmetry."""
    layer = FiniteScalarQuantizer((2, 3))
    out = to_numpy(layer(latents(2, scale=3.0)))
    assert set(np.unique(out["output"][:, 0])) == {-1.0, 0.0}
    assert set(np.unique(out["output"][:, 1])) == {-1.0, 0.0, 1.0}
    level = out["output"] + 1  # level index: zhat * (L // 2) + L // 2
    np.testing.assert_array_equal(out["indices"], level[:, 0] + 2 * level[:, 1])


@pytest.mark.parametrize("codebook_size, dim, scale", [(16, 4, 0.05), (32, 7, 0.01)])
def test_lfq_outputs_indices_and_losses_match(vqp, codebook_size, dim, scale):
    torch, module = vqp
    torch.manual_seed(0)
    reference = module.LFQ(
        dim=dim, codebook_size=codebook_size, entropy_loss_weight=1.0,
        commitment_loss_weight=0.5, diversity_gamma=0.8,
    )
    layer = LookupFreeQuantizer(
        codebook_size, entropy_loss_weight=1.0, commitment_cost=0.5, diversity_gamma=0.8
    )
    z = latents(dim, scale=scale)  # small: the soft assignment is not one-hot
    layer.build((None, dim))
    if dim != int(np.log2(codebook_size)):
        reference.project_in.bias.data.mul_(0.01)  # else the bias alone decides the bits
        copy_projections(layer, reference, torch)
    out = to_numpy(layer(z, training=True))
    reference.train()
    with torch.no_grad():
        (quantized, indices, aux), breakdown = reference(
            torch.from_numpy(z)[None], return_loss_breakdown=True
        )
    np.testing.assert_allclose(out["output"], quantized[0].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out["indices"], indices[0].numpy())
    # The entropy loss: its batch mean is the reference's entropy_aux_loss.
    entropy_aux_loss = float(breakdown.per_sample_entropy - 0.8 * breakdown.batch_entropy)
    assert float(out["entropy_loss"].mean()) == pytest.approx(entropy_aux_loss, abs=1e-5)
    assert abs(entropy_aux_loss) > 1e-2
    assert float(out["commitment_loss"].mean()) == pytest.approx(
        float(breakdown.commitment), abs=1e-6
    )
    # The added loss is the reference's aux loss (entropy + 0.5 commitment).
    assert float(sum(to_numpy(l) for l in layer.losses)) == pytest.approx(float(aux), abs=1e-5)
    with torch.no_grad():
        codes = reference.indices_to_codes(indices[0])
    np.testing.assert_allclose(
        to_numpy(layer.decode_indices(out["indices"])), codes.numpy(), atol=1e-5
    )


def test_lfq_deliberate_differences_are_pinned():
    """Commitment weight 0.25 by default (reference: 0); losses also in inference."""
    layer = LookupFreeQuantizer(16)
    assert (layer.entropy_loss_weight, layer.commitment_cost) == (0.1, 0.25)
    z = latents(4, scale=0.5)
    train = to_numpy(layer(z, training=True))
    infer = to_numpy(layer(z, training=False))
    for key in ("entropy_loss", "commitment_loss", "output", "indices"):
        np.testing.assert_array_equal(train[key], infer[key])
    expected = 0.1 * infer["entropy_loss"].mean() + 0.25 * infer["commitment_loss"].mean()
    assert float(sum(to_numpy(l) for l in layer.losses)) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(
        infer["commitment_loss"], ((np.abs(z) - 1) ** 2).mean(-1), rtol=1e-5
    )


def test_rvq_outputs_and_indices_match(vqp):
    torch, module = vqp
    torch.manual_seed(0)
    stages, codes, dim = 3, 16, 4
    reference = module.ResidualVQ(dim=dim, num_quantizers=stages, codebook_size=codes).eval()
    layer = ResidualVectorQuantizer(stages, codes)
    layer.build((None, dim))
    rng = np.random.default_rng(1)
    for s, stage in enumerate(layer.stages):
        codebook = (rng.normal(size=(codes, dim)) / (2**s)).astype("float32")
        stage.codebook.assign(codebook)
        reference.layers[s]._codebook.embed.data.copy_(torch.from_numpy(codebook)[None])
    z = latents(dim, scale=1.0)
    out = to_numpy(layer(z))
    want, want_indices = run_reference(reference, z, torch)
    np.testing.assert_allclose(out["output"], want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out["indices"], want_indices)
    assert all(len(np.unique(out["indices"][:, s])) > 4 for s in range(stages))
    with torch.no_grad():
        codes_out = reference.get_output_from_indices(torch.from_numpy(want_indices.astype("int64"))[None])
    np.testing.assert_allclose(
        to_numpy(layer.decode_indices(out["indices"])), codes_out[0].numpy(), atol=1e-5
    )


def test_rotation_trick_gradient_matches_rotate_to(vqp):
    torch, module = vqp
    from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to as reference_rotate

    rng = np.random.default_rng(2)
    z, q, g = (rng.normal(size=(BATCH, 5)).astype("float32") for _ in range(3))
    import keras

    qt, gt = keras.ops.convert_to_tensor(q), keras.ops.convert_to_tensor(g)
    (ours,) = gradients(lambda zz: keras.ops.sum(rotate_to(zz, qt) * gt), z)
    zt = torch.from_numpy(z).requires_grad_(True)
    (reference_rotate(zt, torch.from_numpy(q)) * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(ours, zt.grad.numpy(), atol=1e-4)
    # Not the straight-through gradient (which would be g itself).
    assert np.abs(ours - g).max() > 0.1
    # Forward value: q (to float32 rounding of `rotated + sg(q - rotated)`).
    np.testing.assert_allclose(to_numpy(rotate_to(z, q)), q, atol=1e-6, rtol=0)


def test_vq_rotation_trick_layer_gradient_and_forward(vqp):
    torch, module = vqp
    from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to as reference_rotate
    import keras

    layer = VectorQuantizer(8, rotation_trick=True)
    plain = VectorQuantizer(8)
    z = latents(3, scale=1.0)
    g = latents(3, seed=5)
    out = to_numpy(layer(z))
    plain(z)
    plain.codebook.assign(keras.ops.convert_to_numpy(layer.codebook))
    plain_out = to_numpy(plain(z))
    np.testing.assert_array_equal(out["indices"], plain_out["indices"])
    codewords = to_numpy(layer.decode_indices(out["indices"]))
    # Forward values: the codewords, as straight-through gives (to rounding).
    np.testing.assert_allclose(out["output"], codewords, atol=1e-6, rtol=0)
    np.testing.assert_allclose(plain_out["output"], codewords, atol=1e-6, rtol=0)
    gt = keras.ops.convert_to_tensor(g)
    (ours,) = gradients(lambda zz: keras.ops.sum(layer(zz)["output"] * gt), z)
    zt = torch.from_numpy(z).requires_grad_(True)
    (reference_rotate(zt, torch.from_numpy(codewords)) * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(ours, zt.grad.numpy(), atol=1e-4)
    assert layer.get_config()["rotation_trick"] is True
