"""Hard vector quantizer (VQ-VAE, van den Oord et al. 2017)."""

import keras
from keras import ops

from softvq_keras.layers.base import (
    Bottleneck,
    make_codebook_initializer,
    squared_distances,
)


@keras.saving.register_keras_serializable(package="softvq")
class VectorQuantizer(Bottleneck):
    """Nearest-codeword quantizer with a straight-through gradient.

    `k* = argmin_k ||z - e_k||^2`, `zq = e_{k*}`. Losses (means over elements):
    `codebook = mean((zq - sg(z))^2)` trains the codebook,
    `commitment = mean((sg(zq) - z)^2)` pulls `z` to its codeword. Added loss:
    `loss_weight * (codebook + commitment_cost * commitment)`. The decoder gets
    `z + sg(zq - z)`: `zq` forward, identity gradient to `z`.

    Args:
        num_codes: codebook size K (128 on MNIST, 512 on SVHN/CIFAR-10).
        commitment_cost: c (0.25 in van den Oord et al.; the paper's notebooks
            reuse the soft-VQ values, 2.5 on MNIST and 7.5 on SVHN).
        loss_weight: w, the weight of the whole VQ loss.
        codebook_initializer: `"uniform_unit_scaling"` or `"variance_scaling"`.

    Inputs `[z, features]` (features ignored), `z: (batch, d)`. Returns
    `{"output": (batch, d), "codebook_loss": (batch,), "commitment_loss":
    (batch,), "code_probs": (batch, K)}` where `code_probs` is the one-hot
    assignment (codebook usage and perplexity are computed from it).

    Example:

    >>> vq = VectorQuantizer(num_codes=8)
    >>> out = vq([keras.ops.ones((2, 4)), keras.ops.ones((2, 3))])
    >>> tuple(out["code_probs"].shape)
    (2, 8)
    """

    loss_terms = ("codebook", "commitment")

    def __init__(
        self,
        num_codes,
        commitment_cost=0.25,
        loss_weight=1.0,
        codebook_initializer="uniform_unit_scaling",
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

    def build(self, input_shape):
        z_shape, _ = self._shapes(input_shape)
        latent_dim = z_shape[-1]
        self.codebook = self.add_weight(
            shape=(self.num_codes, latent_dim),
            initializer=make_codebook_initializer(self.codebook_initializer, latent_dim),
            name="codebook",
        )

    def nearest_codes(self, z):
        """Indices `(batch,)` and codewords `(batch, d)` nearest to `z`."""
        indices = ops.argmin(squared_distances(z, self.codebook), axis=-1)
        return indices, ops.take(self.codebook, indices, axis=0)

    def call(self, inputs, training=None):
        z, _ = self._split(inputs)
        indices, zq = self.nearest_codes(z)
        return self._quantizer_outputs(
            z, zq, ops.one_hot(indices, self.num_codes, dtype=z.dtype)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_codes": self.num_codes,
            "commitment_cost": self.commitment_cost,
            "loss_weight": self.loss_weight,
            "codebook_initializer": self.codebook_initializer,
        }
