"""Hard vector quantizer (VQ-VAE, van den Oord et al. 2017)."""

import keras
from keras import ops

from softvq_keras.layers.base import (
    Quantizer,
    make_codebook_initializer,
    per_sample_mean,
    squared_distances,
)
from softvq_keras.layers.ema import EMACodebookMixin
from softvq_keras.layers.rotation import rotate_to


@keras.saving.register_keras_serializable(package="softvq")
class VectorQuantizer(EMACodebookMixin, Quantizer):
    """Nearest-codeword quantizer with a straight-through gradient.

    `k* = argmin_k ||z - e_k||^2`, `zq = e_{k*}`. Losses (means over elements):
    `codebook = mean((zq - sg(z))^2)` trains the codebook,
    `commitment = mean((sg(zq) - z)^2)` pulls `z` to its codeword. Added loss:
    `loss_weight * (codebook + commitment_cost * commitment)`. The decoder gets
    `z + sg(zq - z)`: `zq` forward, identity gradient to `z`; with
    `rotation_trick=True` it gets `zq` through the rotation trick instead
    (`softvq_keras.layers.rotation`: the gradient to `z` is rotated and
    rescaled by the map taking `z` onto `zq`; forward values unchanged).

    Args:
        num_codes: codebook size K (128 on MNIST, 512 on SVHN/CIFAR-10).
        commitment_cost: c (0.25 in van den Oord et al.; the paper's notebooks
            reuse the soft-VQ values, 2.5 on MNIST and 7.5 on SVHN).
        loss_weight: w, the weight of the whole VQ loss.
        codebook_initializer: `"uniform_unit_scaling"` or `"variance_scaling"`.
        codebook_update: `"gradient"` (the paper: the codebook loss trains the
            codebook) or `"ema"` (van den Oord et al., appendix A.1: the
            codebook follows exponential moving averages of the encoder
            outputs assigned to each code, see `softvq_keras.layers.ema`; the
            codebook is then a non-trainable weight and only
            `loss_weight * commitment_cost * commitment` is added, the
            codebook term is still returned for logging).
        decay: EMA decay (0.99), with `codebook_update="ema"`.
        epsilon: Laplace smoothing of the EMA cluster sizes (1e-5).
        dead_code_threshold: with EMA, a code whose EMA cluster size (expected
            picks per batch) falls under this value is moved onto a random
            encoder output of the batch; 0 (default) turns it off.
        seed: integer seed of the dead-code choice's `SeedGenerator`.
        rotation_trick: pass `zq` to the decoder with the rotation trick
            (Fifty et al. 2024) instead of straight-through. Off by default
            here; vector-quantize-pytorch turns it on by default.

    Inputs `[z, features]` (features ignored), `z: (batch, d)`. Returns
    `{"output": (batch, d), "codebook_loss": (batch,), "commitment_loss":
    (batch,), "code_probs": (batch, K), "indices": (batch,) int32}` where
    `code_probs` is the one-hot assignment and `indices` its argmax `k*`.
    `codes_per_stage` is `[K]`; `decode_indices(indices)` gives the codewords
    `e_k` (what the decoder receives in inference).

    Example:

    >>> vq = VectorQuantizer(num_codes=8)
    >>> out = vq([keras.ops.ones((2, 4)), keras.ops.ones((2, 3))])
    >>> tuple(out["code_probs"].shape), tuple(out["indices"].shape)
    ((2, 8), (2,))
    >>> tuple(vq.decode_indices(out["indices"]).shape), vq.codes_per_stage
    ((2, 4), [8])
    >>> ema = VectorQuantizer(num_codes=8, codebook_update="ema")
    >>> out = ema([keras.ops.ones((2, 4)), keras.ops.ones((2, 3))], training=True)
    >>> [w.name for w in ema.non_trainable_weights][:3]
    ['codebook', 'ema_cluster_size', 'ema_codeword_sum']

    Reference:
        van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation
        Learning", NeurIPS 2017 (EMA updates: appendix A.1). Fifty et al.,
        "Restructuring Vector Quantization with the Rotation Trick", ICLR
        2025 (arXiv 2410.06424).
    """

    loss_terms = ("codebook", "commitment")
    returns_code_probs = True

    def __init__(
        self,
        num_codes,
        commitment_cost=0.25,
        loss_weight=1.0,
        codebook_initializer="uniform_unit_scaling",
        codebook_update="gradient",
        decay=0.99,
        epsilon=1e-5,
        dead_code_threshold=0.0,
        seed=None,
        rotation_trick=False,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_codes) < 2:
            raise ValueError(f"num_codes must be at least 2; got {num_codes}.")
        self.num_codes = int(num_codes)
        self.commitment_cost = float(commitment_cost)
        self.loss_weight = float(loss_weight)
        self.codebook_initializer = codebook_initializer
        make_codebook_initializer(codebook_initializer, 1)  # validates the name
        self._init_ema(codebook_update, decay, epsilon, dead_code_threshold)
        self.seed = seed
        self.rotation_trick = bool(rotation_trick)
        # Only dead-code replacement draws random numbers.
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if self.dead_code_threshold > 0 else None
        )

    def build(self, input_shape):
        z_shape, _ = self._shapes(input_shape)
        latent_dim = z_shape[-1]
        self._build_codebook(
            latent_dim, make_codebook_initializer(self.codebook_initializer, latent_dim)
        )

    def nearest_codes(self, z):
        """Indices `(batch,)` and codewords `(batch, d)` nearest to `z`."""
        indices = ops.argmin(squared_distances(z, self.codebook), axis=-1)
        return indices, ops.take(self.codebook, indices, axis=0)

    def quantize_latent(self, z, training=False, active=None):
        """Quantize `z (batch, d)`; the EMA step too when training.

        Returns `(output, codebook_loss, commitment_loss, one_hot, indices)`,
        the losses per sample and unweighted; adds nothing with `add_loss`
        (`call` does; `ResidualVectorQuantizer` calls this once per stage).
        `active` is passed to the EMA step (see `EMACodebookMixin`).
        """
        indices, zq = self.nearest_codes(z)
        one_hot = ops.one_hot(indices, self.num_codes, dtype=z.dtype)
        if training and self.uses_ema:
            self._ema_update(z, one_hot, active)
        codebook = per_sample_mean(ops.square(zq - ops.stop_gradient(z)))
        commitment = per_sample_mean(ops.square(ops.stop_gradient(zq) - z))
        if self.rotation_trick:
            output = rotate_to(z, zq)
        else:
            output = z + ops.stop_gradient(zq - z)
        return output, codebook, commitment, one_hot, indices

    def weighted_loss(self, codebook, commitment):
        """`loss_weight * (codebook + commitment_cost * commitment)` per sample
        (without the codebook term under EMA)."""
        total = self.commitment_cost * commitment
        if not self.uses_ema:
            total = codebook + total
        return self.loss_weight * total

    def call(self, inputs, training=None):
        z, _ = self._split(inputs)
        output, codebook, commitment, one_hot, indices = self.quantize_latent(z, training)
        self.add_loss(ops.mean(self.weighted_loss(codebook, commitment)))
        return {
            "output": output,
            "codebook_loss": codebook,
            "commitment_loss": commitment,
            "code_probs": one_hot,
            "indices": ops.cast(indices, "int32"),
        }

    def decode_indices(self, indices):
        """The codewords `(batch, d)` of `indices (batch,)`."""
        return ops.take(self.codebook, ops.cast(indices, "int32"), axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "num_codes": self.num_codes,
            "commitment_cost": self.commitment_cost,
            "loss_weight": self.loss_weight,
            "codebook_initializer": self.codebook_initializer,
            **self._ema_config(),
            "seed": self.seed,
            "rotation_trick": self.rotation_trick,
        }
