"""Lookup-free quantization (Yu et al. 2023, MAGVIT-v2)."""

import math

import keras
from keras import ops

from softvq_keras.layers.base import per_sample_mean
from softvq_keras.layers.implicit_codebook import ImplicitCodebookQuantizer

#: Largest codebook whose entropy loss is computed exactly (a (batch, K) softmax).
MAX_EXACT_ENTROPY_CODES = 2**16


def _entropy(probs):
    """`-sum p log p` over the last axis, `log` clamped at 1e-5 (as the reference)."""
    return -ops.sum(probs * ops.log(ops.maximum(probs, 1e-5)), axis=-1)


@keras.saving.register_keras_serializable(package="softvq")
class LookupFreeQuantizer(ImplicitCodebookQuantizer):
    """Lookup-free quantization: the sign of each channel, `K = 2^c` codes.

    With `c = log2(codebook_size)` channels (a `Dense(c)` in and a `Dense(d)`
    out when the latent size `d` differs from `c`), each channel is quantized
    to `+s` or `-s` (`s = codebook_scale`), `zhat = where(z > 0, s, -s)`, and
    the decoder gets `z + sg(zhat - z)` (straight-through). The index is the
    bits `z_j > 0`, most significant first: `sum_j [z_j > 0] 2^(c-1-j)`.

    Loss terms (per sample): the entropy auxiliary loss over the soft
    assignment to all `2^c` corners `e_k`, `p(k|z) = softmax_k(2 tau z . e_k)`
    (the squared distance up to terms that do not depend on `k`;
    `tau = inverse_temperature`, 100), `entropy = H(p(.|z_b)) -
    diversity_gamma * H(mean_b p(.|z_b))`, confident per sample and diverse
    over the batch (its batch mean is vector-quantize-pytorch's
    `entropy_aux_loss`), and `commitment = mean((z - sg(zhat))^2)`. Added
    loss: `entropy_loss_weight * entropy + commitment_cost * commitment`
    (batch means). Entropies use `log(max(p, 1e-5))`, as the reference.

    The entropy term needs a `(batch, K)` softmax: it is computed exactly up to
    `K = 2^16`; a larger codebook needs `entropy_loss_weight=0`.

    Matches vector-quantize-pytorch 1.32's `LFQ(dim=d, codebook_size=K)`
    (outputs, indices, `entropy_aux_loss`;
    `tests/core/test_reference_parity.py`). Deliberate differences: the
    commitment weight defaults to 0.25 (the reference's to 0), and the loss
    terms are computed in inference too (the reference returns 0 outside
    training; they are deterministic, and the evaluation reports them).
    The parity holds with `latent_norm=None` (the default here).

    With `latent_norm="batch"`, the projected `z` is standardized per channel
    over the batch (`BatchNormalization` without scale or shift; moving
    statistics in inference) before the sign, the losses and the
    straight-through output. Without it, the paper's MLP uses one code (its
    `z` drifts to one shared sign pattern; see
    `softvq_keras/layers/latent_norm.py`). `make_bottleneck("lfq", ...)` (and
    `training.fit`) turns it on.

    Args:
        codebook_size: K, a power of two >= 2 (`c = log2 K` bits per code).
        entropy_loss_weight: weight of the entropy term (0.1).
        commitment_cost: weight of the commitment term (0.25).
        diversity_gamma: weight of the batch entropy in the entropy term (1).
        inverse_temperature: tau of the soft assignment (100).
        codebook_scale: s, the magnitude of the code values (1).
        latent_norm: None (the reference) or `"batch"`: standardize each
            channel of the projected `z` over the batch before the sign.

    Inputs `[z, features]` (features ignored) or `z`, `z: (batch, d)`.
    Returns `{"output": (batch, d), "entropy_loss": (batch,),
    "commitment_loss": (batch,), "indices": (batch,) int32}`.
    `codes_per_stage` is `[K]`; `decode_indices(indices)` gives the code
    vectors of `indices` (through the out-projection when there is one).

    Example:

    >>> lfq = LookupFreeQuantizer(codebook_size=8)
    >>> out = lfq(keras.ops.convert_to_tensor([[0.3, -0.2, 0.1]]))
    >>> keras.ops.convert_to_numpy(out["indices"]).tolist()
    [5]
    >>> keras.ops.convert_to_numpy(out["output"]).tolist()
    [[1.0, -1.0, 1.0]]

    Reference:
        Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to
        Visual Generation", ICLR 2024 (arXiv 2310.05737).
    """

    loss_terms = ("entropy", "commitment")

    def __init__(
        self,
        codebook_size,
        entropy_loss_weight=0.1,
        commitment_cost=0.25,
        diversity_gamma=1.0,
        inverse_temperature=100.0,
        codebook_scale=1.0,
        latent_norm=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(latent_norm=latent_norm, **kwargs)
        size = int(codebook_size)
        if size != codebook_size or size < 2 or size & (size - 1):
            raise ValueError(
                f"codebook_size must be a power of two >= 2 for LFQ; got {codebook_size}."
            )
        if float(entropy_loss_weight) > 0 and size > MAX_EXACT_ENTROPY_CODES:
            raise ValueError(
                f"codebook_size {size} is above {MAX_EXACT_ENTROPY_CODES}, where the "
                "entropy loss is computed exactly: set entropy_loss_weight=0."
            )
        if float(codebook_scale) <= 0:
            raise ValueError(f"codebook_scale must be > 0; got {codebook_scale}.")
        self.codebook_size = size
        self.bits = int(math.log2(size))
        self.entropy_loss_weight = float(entropy_loss_weight)
        self.commitment_cost = float(commitment_cost)
        self.diversity_gamma = float(diversity_gamma)
        self.inverse_temperature = float(inverse_temperature)
        self.codebook_scale = float(codebook_scale)

    @property
    def code_channels(self):
        return self.bits

    def _mask(self):
        return ops.convert_to_tensor(
            [2 ** (self.bits - 1 - j) for j in range(self.bits)], dtype="int32"
        )

    def indices_to_codes(self, indices):
        """Code vectors `(batch, c)` of `indices (batch,)` (no projection)."""
        indices = ops.cast(indices, "int32")[:, None]
        bits = ops.cast(ops.mod(ops.floor_divide(indices, self._mask()), 2), "float32")
        return (2.0 * bits - 1.0) * self.codebook_scale

    def entropy_terms(self, z):
        """Per-sample entropy `(batch,)` and the batch codebook entropy (scalar)."""
        corners = self.indices_to_codes(ops.arange(self.codebook_size))
        logits = 2.0 * self.inverse_temperature * ops.matmul(z, ops.transpose(corners))
        probs = ops.softmax(logits, axis=-1)
        return _entropy(probs), _entropy(ops.mean(probs, axis=0))

    def call(self, inputs, training=None):
        z = self.to_code_space(inputs, training)
        positive = z > 0
        zhat = ops.where(positive, self.codebook_scale, -self.codebook_scale)
        indices = ops.sum(ops.cast(positive, "int32") * self._mask(), axis=-1)
        per_sample, batch_entropy = self.entropy_terms(z)
        entropy = per_sample - self.diversity_gamma * batch_entropy
        commitment = per_sample_mean(ops.square(z - ops.stop_gradient(zhat)))
        self.add_loss(
            self.entropy_loss_weight * ops.mean(entropy)
            + self.commitment_cost * ops.mean(commitment)
        )
        return {
            "output": self.from_code_space(z + ops.stop_gradient(zhat - z)),
            "entropy_loss": entropy,
            "commitment_loss": commitment,
            "indices": indices,
        }

    def get_config(self):
        return {
            **super().get_config(),
            "codebook_size": self.codebook_size,
            "entropy_loss_weight": self.entropy_loss_weight,
            "commitment_cost": self.commitment_cost,
            "diversity_gamma": self.diversity_gamma,
            "inverse_temperature": self.inverse_temperature,
            "codebook_scale": self.codebook_scale,
        }
