"""Residual vector quantization (Zeghidour et al. 2021, SoundStream)."""

import keras
from keras import ops

from softvq_keras.layers.base import Quantizer
from softvq_keras.layers.vector_quantizer import VectorQuantizer


@keras.saving.register_keras_serializable(package="softvq")
class ResidualVectorQuantizer(Quantizer):
    """Stages of `VectorQuantizer` on the successive residuals.

    `r_0 = z`; stage `s` quantizes `r_s` to its nearest codeword `q_s` in its
    own codebook and passes on `r_{s+1} = r_s - sg(q_s)`. The decoder gets
    `sum_s q_s`, where each `q_s` is the stage's straight-through (or
    rotation-trick) output: the forward value is the sum of the codewords,
    and the gradient to `z` is the sum of the stages' (with straight-through,
    `num_quantizers` times the identity), as vector-quantize-pytorch 1.32's
    `ResidualVQ` computes it.

    Every stage takes the options of `VectorQuantizer` (gradient or EMA
    codebook, dead-code threshold, the rotation trick) and has its own
    codebook and EMA statistics. Loss terms per sample are the sums over the
    stages of each stage's `codebook` and `commitment` terms; the added loss
    is the sum of the stages' added losses.

    Quantizer dropout (SoundStream; `quantizer_dropout=True`, training only):
    each batch keeps a random prefix of `n` stages, `n` uniform in
    `1..num_quantizers`; the dropped stages add nothing to the output and the
    losses, their EMA statistics stay, and their indices are -1 (as the
    reference). The decoder thus learns to decode from fewer stages.

    Matches vector-quantize-pytorch 1.32's `ResidualVQ(dim=d,
    num_quantizers=S, codebook_size=K)` given the same codebooks (outputs and
    indices; `tests/core/test_reference_parity.py`). Deliberate differences:
    the reference's stages default to EMA codebooks (decay 0.8), commitment
    weight 1 and the rotation trick; here they default to `VectorQuantizer`'s
    (gradient codebook, commitment 0.25, straight-through).

    Args:
        num_quantizers: the number of stages S (>= 1).
        num_codes: K, the codebook size of every stage (>= 2).
        commitment_cost, loss_weight, codebook_initializer, codebook_update,
            decay, epsilon, dead_code_threshold, rotation_trick: passed to
            every stage's `VectorQuantizer`.
        quantizer_dropout: drop a random suffix of the stages in training.
        seed: integer seed: the dropout's `SeedGenerator`; stage `s` gets
            `seed + s + 1` for its dead-code choice.

    Inputs `[z, features]` (features ignored) or `z`, `z: (batch, d)`.
    Returns `{"output": (batch, d), "codebook_loss": (batch,),
    "commitment_loss": (batch,), "indices": (batch, S) int32}`.
    `codes_per_stage` is `[K] * S`; `decode_indices(indices)` gives the sum of
    the stages' codewords (an index of -1 contributes nothing).

    Example:

    >>> rvq = ResidualVectorQuantizer(num_quantizers=4, num_codes=16)
    >>> out = rvq(keras.ops.ones((2, 3)))
    >>> tuple(out["indices"].shape), rvq.codes_per_stage
    ((2, 4), [16, 16, 16, 16])

    Reference:
        Zeghidour, Luebs, Omran, Skoglund, Tagliasacchi, "SoundStream: An
        End-to-End Neural Audio Codec", IEEE/ACM TASLP 2021 (arXiv
        2107.03312), algorithm 1 and quantizer dropout.
    """

    loss_terms = ("codebook", "commitment")

    def __init__(
        self,
        num_quantizers,
        num_codes,
        commitment_cost=0.25,
        loss_weight=1.0,
        codebook_initializer="uniform_unit_scaling",
        codebook_update="gradient",
        decay=0.99,
        epsilon=1e-5,
        dead_code_threshold=0.0,
        rotation_trick=False,
        quantizer_dropout=False,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_quantizers) != num_quantizers or int(num_quantizers) < 1:
            raise ValueError(
                f"num_quantizers must be an integer >= 1; got {num_quantizers}."
            )
        self.num_quantizers = int(num_quantizers)
        self.num_codes = int(num_codes)
        self.quantizer_dropout = bool(quantizer_dropout)
        self.seed = seed
        self.stage_options = dict(
            commitment_cost=commitment_cost,
            loss_weight=loss_weight,
            codebook_initializer=codebook_initializer,
            codebook_update=codebook_update,
            decay=decay,
            epsilon=epsilon,
            dead_code_threshold=dead_code_threshold,
            rotation_trick=rotation_trick,
        )
        self.stages = [
            VectorQuantizer(
                num_codes,
                seed=None if seed is None else seed + s + 1,
                name=f"stage_{s}",
                dtype=self.dtype_policy,
                **self.stage_options,
            )
            for s in range(self.num_quantizers)
        ]
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if self.quantizer_dropout else None
        )

    @property
    def index_columns(self):
        return self.num_quantizers

    @property
    def codes_per_stage(self):
        return [self.num_codes] * self.num_quantizers

    def build(self, input_shape):
        z_shape, _ = self._shapes(input_shape)
        for stage in self.stages:
            stage.build(z_shape)

    def _kept_stages(self, training):
        """The number of stages kept this batch (a tensor), or None for all."""
        if not (training and self.quantizer_dropout and self.num_quantizers > 1):
            return None
        kept = keras.random.randint(
            (1,), 1, self.num_quantizers + 1, seed=self.seed_generator
        )
        return ops.reshape(kept, ())

    def call(self, inputs, training=None):
        z, _ = self._split(inputs)
        kept = self._kept_stages(training)
        residual, output = z, ops.zeros_like(z)
        codebook_loss = commitment_loss = added = 0.0
        all_indices = []
        for s, stage in enumerate(self.stages):
            active = None if kept is None else ops.less(s, kept)
            q, codebook, commitment, _, indices = stage.quantize_latent(
                residual, training, active
            )
            indices = ops.cast(indices, "int32")
            stage_loss = stage.weighted_loss(codebook, commitment)
            if active is not None:
                mask = ops.cast(active, z.dtype)
                q, codebook, commitment = q * mask, codebook * mask, commitment * mask
                stage_loss = stage_loss * mask
                indices = ops.where(active, indices, -1)
            residual = residual - ops.stop_gradient(q)
            output = output + q
            codebook_loss = codebook_loss + codebook
            commitment_loss = commitment_loss + commitment
            added = added + stage_loss
            all_indices.append(indices)
        self.add_loss(ops.mean(added))
        return {
            "output": output,
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "indices": ops.stack(all_indices, axis=-1),
        }

    def decode_indices(self, indices):
        indices = ops.cast(indices, "int32")
        total = 0.0
        for s, stage in enumerate(self.stages):
            column = indices[:, s]
            codes = stage.decode_indices(ops.maximum(column, 0))
            total = total + codes * ops.cast(column >= 0, codes.dtype)[:, None]
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "num_quantizers": self.num_quantizers,
            "num_codes": self.num_codes,
            **{k: self.stages[0].get_config()[k] for k in self.stage_options},
            "quantizer_dropout": self.quantizer_dropout,
            "seed": self.seed,
        }
