"""Information dropout bottleneck (Achille & Soatto)."""

import keras
from keras import ops

from softvq_keras.layers.base import Bottleneck

WEIGHTINGS = ("safe", "notebook")


@keras.saving.register_keras_serializable(package="softvq")
class InformationDropout(Bottleneck):
    """Information dropout: multiplicative log-normal noise with learned rate.

    The encoder's `z` head is `f(x)` with a ReLU. This layer adds the head
    `alpha = 0.001 + max_alpha * sigmoid(Dense(d)(features))` and, while
    training, returns `f(x) * exp(alpha * eps)`, `eps ~ N(0, 1)`; at inference
    it returns `f(x)` (no noise). KL per sample:
    `sum_units -log(alpha / (max_alpha + 0.001))`.

    Loss added: `beta * mean_batch(KL) / reconstruction_size` (the notebooks'
    `D * recon + beta * KL`, divided by `D`; see `VariationalBottleneck`).

    `weighting="notebook"` follows the authors' MNIST notebook instead: `f` is
    the linear `z` head (no ReLU) and the per-sample cost is the MEAN over
    units `mean_units -log(alpha / max_alpha + 0.001)` (the notebook's
    `-reduce_mean(log(alpha/0.7 + 0.001))` over batch and units), i.e. d
    times weaker than the default sum. The notebook's noise scale itself,
    `0.7 * h` of a linear head with no sigmoid and no floor, is not offered:
    `h <= -0.001` makes the log NaN, and for `h > 1` the cost falls without
    bound as the noise grows. Both weightings keep the safe
    `alpha = 0.001 + max_alpha * sigmoid(h)`.

    Args:
        beta: KL weight (0.5 in the soft-VQ notebooks).
        max_alpha: the largest noise scale (0.7).
        reconstruction_size: number of elements of one input.
        seed: integer seed of the layer's `SeedGenerator`.
        weighting: `"safe"` (default: ReLU `f`, KL summed over units) or
            `"notebook"` (linear `f`, the notebook's mean over units).

    Inputs `[z, features]`; returns `{"output": (batch, d), "kl_loss": (batch,)}`.

    Example:

    >>> layer = InformationDropout(beta=0.5, reconstruction_size=784)
    >>> out = layer([keras.ops.ones((2, 4)), keras.ops.ones((2, 8))])
    >>> tuple(out["output"].shape)
    (2, 4)

    Reference:
        Achille & Soatto, "Information Dropout: Learning Optimal
        Representations Through Noisy Computation", TPAMI 2018.
    """

    latent_activation = "relu"
    loss_terms = ("kl",)

    def __init__(
        self,
        beta=0.5,
        max_alpha=0.7,
        reconstruction_size=1,
        seed=None,
        weighting="safe",
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if weighting not in WEIGHTINGS:
            raise ValueError(
                f"Unknown weighting {weighting!r}; expected one of {WEIGHTINGS}."
            )
        self.weighting = weighting
        if weighting == "notebook":
            self.latent_activation = None  # the notebook's linear f
        self.beta = float(beta)
        self.max_alpha = float(max_alpha)
        self.reconstruction_size = int(reconstruction_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.alpha_head = None

    def build(self, input_shape):
        z_shape, features_shape = self._shapes(input_shape)
        self.alpha_head = self._build_head("alpha", z_shape[-1], features_shape)

    def call(self, inputs, training=None):
        f, features = self._split(inputs)
        self._require_features(features)
        alpha = 0.001 + self.max_alpha * ops.sigmoid(self.alpha_head(features))
        if self.weighting == "notebook":
            kl = ops.mean(-ops.log(alpha / self.max_alpha + 0.001), axis=-1)
        else:
            kl = ops.sum(-ops.log(alpha / (self.max_alpha + 0.001)), axis=-1)
        self.add_loss(self.beta * ops.mean(kl) / self.reconstruction_size)
        if training:
            eps = keras.random.normal(ops.shape(f), seed=self.seed_generator)
            out = f * ops.exp(alpha * eps)
        else:
            out = f
        return {"output": out, "kl_loss": kl}

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "max_alpha": self.max_alpha,
            "reconstruction_size": self.reconstruction_size,
            "seed": self.seed,
            "weighting": self.weighting,
        }
