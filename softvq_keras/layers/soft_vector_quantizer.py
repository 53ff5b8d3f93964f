"""Soft vector quantizer (Wu & Flierl, AAAI 2020)."""

import keras
from keras import ops

from softvq_keras.layers.base import (
    Quantizer,
    make_codebook_initializer,
    squared_distances,
)
from softvq_keras.layers.ema import EMACodebookMixin
from softvq_keras.presets import SOFTVQ_WEIGHTINGS as WEIGHTINGS
VARIANCES = ("per_input", "per_code")


@keras.saving.register_keras_serializable(package="softvq")
class SoftVectorQuantizer(EMACodebookMixin, Quantizer):
    """Soft VQ: the decoder gets the posterior mean of the codewords.

    A second head on the encoder's last hidden layer gives one log standard
    deviation per codeword and per input, `s = Dense(K)(features)`
    (`sigma_k = exp(s_k)`, precision `lambda_k = exp(-2 s_k)`); with
    `variance="per_code"` `s` is instead a free weight of shape `(K,)`, one
    variance per codeword shared by all inputs (initialized to 0). With
    `D_k = ||z - e_k||^2`, the posterior weights are a softmax of logits:

    - `"mnist_code"` (default, the MNIST notebook):
      `p = softmax(-0.5 lambda D + s)`, `zhat = sum_k p_k e_k`;
    - `"svhn_code"` (the SVHN notebook): `p = softmax(-0.5 lambda D)`,
      `zhat = sum_k exp(s_k) p_k e_k` (weights no longer sum to 1);
    - `"gaussian"`: the isotropic Gaussian posterior,
      `p = softmax(-0.5 lambda D - d s)`, `zhat = sum_k p_k e_k`.

    Losses (means over elements): `codebook = mean((zhat - sg(z))^2)` trains
    the codebook, the `s` head and `z` through `D`;
    `commitment = mean((sg(zhat) - z)^2)`. Added loss:
    `loss_weight * (codebook + commitment_cost * commitment)`. The decoder gets
    `z + sg(zhat - z)` (straight-through). Distances and softmax are computed in
    float32 whatever the dtype policy.

    Args:
        num_codes: K (128 on MNIST, 32 on SVHN/CIFAR-10).
        commitment_cost: c (2.5 on MNIST, 7.5 on SVHN).
        loss_weight: w (3.0 on MNIST, 2.0 on SVHN).
        weighting: `"mnist_code"`, `"svhn_code"` or `"gaussian"`.
        latent_noise_stddev: if > 0, `z + N(0, stddev^2)` is quantized while
            training (the paper's abstract; 0.01 in a commented-out notebook
            line). Off by default; never at inference.
        codebook_initializer: `"uniform_unit_scaling"` (MNIST) or
            `"variance_scaling"` (SVHN).
        seed: integer seed of the noise `SeedGenerator`.
        variance: `"per_input"` (the notebooks: the `s` head) or
            `"per_code"` (a free log standard deviation per codeword; the
            layer then ignores `features`, but still takes them).
        codebook_update: `"gradient"` (the paper) or `"ema"`: the codebook
            follows exponential moving averages of the encoder outputs
            weighted by the posterior `p` (soft counts `sum_b p_bk`, see
            `softvq_keras.layers.ema`) and gets no gradient; both loss terms
            stay, since the codebook term also trains `z` and the variance
            head through the posterior.
        decay: EMA decay (0.99).
        epsilon: Laplace smoothing of the EMA cluster sizes (1e-5).
        dead_code_threshold: with EMA, a code whose EMA soft cluster size
            falls under this value is moved onto a random encoder output of
            the batch; 0 (default) turns it off.

    Inputs `[z, features]`, `z: (batch, d)`, `features: (batch, F)`. Returns
    `{"output": (batch, d), "codebook_loss": (batch,), "commitment_loss":
    (batch,), "code_probs": (batch, K), "indices": (batch,) int32}`, where
    `indices` is the most probable code `argmax_k p_k`. `codes_per_stage` is
    `[K]`; `decode_indices(indices)` gives the codewords `e_k` of those codes
    (the hard decision; the soft output `zhat` needs `z` itself).

    Example:

    >>> svq = SoftVectorQuantizer(num_codes=8)
    >>> out = svq([keras.ops.ones((2, 4)), keras.ops.ones((2, 3))])
    >>> tuple(out["output"].shape), tuple(out["code_probs"].shape)
    ((2, 4), (2, 8))
    """

    loss_terms = ("codebook", "commitment")
    returns_code_probs = True

    def __init__(
        self,
        num_codes,
        commitment_cost=2.5,
        loss_weight=3.0,
        weighting="mnist_code",
        latent_noise_stddev=0.0,
        codebook_initializer="uniform_unit_scaling",
        seed=None,
        variance="per_input",
        codebook_update="gradient",
        decay=0.99,
        epsilon=1e-5,
        dead_code_threshold=0.0,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_codes) < 2:
            raise ValueError(f"num_codes must be at least 2; got {num_codes}.")
        if weighting not in WEIGHTINGS:
            raise ValueError(
                f"Unknown weighting {weighting!r}; expected one of {WEIGHTINGS}."
            )
        if latent_noise_stddev < 0:
            raise ValueError(
                f"latent_noise_stddev must be >= 0; got {latent_noise_stddev}."
            )
        if variance not in VARIANCES:
            raise ValueError(
                f"Unknown variance {variance!r}; expected one of {VARIANCES}."
            )
        make_codebook_initializer(codebook_initializer, 1)  # validates the name
        self.num_codes = int(num_codes)
        self.commitment_cost = float(commitment_cost)
        self.loss_weight = float(loss_weight)
        self.weighting = weighting
        self.latent_noise_stddev = float(latent_noise_stddev)
        self.codebook_initializer = codebook_initializer
        self.seed = seed
        self.variance = variance
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._init_ema(codebook_update, decay, epsilon, dead_code_threshold)
        self.log_sigma_head = None
        self.log_sigma = None

    def build(self, input_shape):
        z_shape, features_shape = self._shapes(input_shape)
        self._require_features(features_shape)
        latent_dim = z_shape[-1]
        self._build_codebook(
            latent_dim, make_codebook_initializer(self.codebook_initializer, latent_dim)
        )
        if self.variance == "per_code":
            self.log_sigma = self.add_weight(
                shape=(self.num_codes,), initializer="zeros", name="log_sigma"
            )
        else:
            self.log_sigma_head = self._build_head(
                "log_sigma", self.num_codes, features_shape
            )

    def posterior(self, z, log_sigma):
        """Weights `p (batch, K)` and the soft output `zhat (batch, d)`."""
        codebook = self.codebook
        if self.uses_ema:
            # A copy: the EMA step assigns the codebook in place after this,
            # and torch's autograd needs the value used here for backward.
            codebook = ops.copy(ops.convert_to_tensor(codebook))
        distances = squared_distances(z, codebook)
        precision = ops.exp(-2.0 * log_sigma)
        logits = -0.5 * precision * distances
        if self.weighting == "mnist_code":
            logits = logits + log_sigma
        elif self.weighting == "gaussian":
            logits = logits - ops.cast(ops.shape(z)[-1], z.dtype) * log_sigma
        probs = ops.softmax(logits, axis=-1)
        mix = probs * ops.exp(log_sigma) if self.weighting == "svhn_code" else probs
        return probs, ops.matmul(mix, codebook)

    def call(self, inputs, training=None):
        z, features = self._split(inputs)
        self._require_features(features)
        if self.variance == "per_code":
            log_sigma = ops.broadcast_to(
                self.log_sigma, (ops.shape(z)[0], self.num_codes)
            )
        else:
            log_sigma = self.log_sigma_head(features)
        noisy = z
        if training and self.latent_noise_stddev > 0:
            noisy = z + self.latent_noise_stddev * keras.random.normal(
                ops.shape(z), seed=self.seed_generator
            )
        probs, zhat = self.posterior(noisy, log_sigma)
        if training and self.uses_ema:
            self._ema_update(z, probs)
        indices = ops.argmax(probs, axis=-1)
        return self._quantizer_outputs(z, zhat, probs, indices)

    def decode_indices(self, indices):
        """The codewords `e_k (batch, d)` of `indices (batch,)`.

        The hard decision: the decoder gets the codeword of the most probable
        code instead of the posterior mean (the soft output needs `z`).
        """
        return ops.take(self.codebook, ops.cast(indices, "int32"), axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "num_codes": self.num_codes,
            "commitment_cost": self.commitment_cost,
            "loss_weight": self.loss_weight,
            "weighting": self.weighting,
            "latent_noise_stddev": self.latent_noise_stddev,
            "codebook_initializer": self.codebook_initializer,
            "seed": self.seed,
            "variance": self.variance,
            **self._ema_config(),
        }
