"""Gaussian (VAE / beta-VAE) bottleneck."""

import keras
from keras import ops

from softvq_keras.layers.base import Bottleneck


@keras.saving.register_keras_serializable(package="softvq")
class VariationalBottleneck(Bottleneck):
    """VAE / beta-VAE bottleneck (Kingma & Welling; Higgins et al.).

    The encoder's `z` head is the posterior mean `mu`; this layer adds the
    log-variance head `logvar = Dense(d)(features)` and samples
    `mu + exp(logvar / 2) * eps` while training (the mean at inference, so
    inference is deterministic). KL per sample:
    `-0.5 * sum(1 + logvar - mu^2 - exp(logvar))`.

    Loss added: `beta * mean_batch(KL) / reconstruction_size`. The notebooks
    weight `reconstruction_size * recon + beta * KL`; dividing by the number of
    reconstructed elements keeps the reconstruction term a mean over elements
    like every other bottleneck, with the same ratio between the two terms.

    Args:
        beta: KL weight (1 = plain VAE; the paper's beta-VAE: 20 on MNIST,
            100 on SVHN/CIFAR-10).
        reconstruction_size: number of elements of one input (784 for MNIST).
        seed: integer seed of the layer's `SeedGenerator`.

    Inputs `[z, features]`, `z: (batch, d)`, `features: (batch, F)`. Returns
    `{"output": (batch, d), "kl_loss": (batch,)}`; `kl_loss` is the summed KL
    of each sample.

    Example:

    >>> layer = VariationalBottleneck(beta=20.0, reconstruction_size=784)
    >>> out = layer([keras.ops.zeros((2, 4)), keras.ops.ones((2, 8))])
    >>> tuple(out["output"].shape), tuple(out["kl_loss"].shape)
    ((2, 4), (2,))
    """

    loss_terms = ("kl",)

    def __init__(self, beta=1.0, reconstruction_size=1, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.beta = float(beta)
        self.reconstruction_size = int(reconstruction_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.logvar_head = None

    def build(self, input_shape):
        z_shape, features_shape = self._shapes(input_shape)
        self.logvar_head = self._build_head("logvar", z_shape[-1], features_shape)

    def call(self, inputs, training=None):
        mu, features = self._split(inputs)
        self._require_features(features)
        logvar = self.logvar_head(features)
        kl = -0.5 * ops.sum(
            1.0 + logvar - ops.square(mu) - ops.exp(logvar), axis=-1
        )
        self.add_loss(self.beta * ops.mean(kl) / self.reconstruction_size)
        if training:
            eps = keras.random.normal(ops.shape(mu), seed=self.seed_generator)
            sample = mu + ops.exp(0.5 * logvar) * eps
        else:
            sample = mu
        return {"output": sample, "kl_loss": kl}


    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "reconstruction_size": self.reconstruction_size,
            "seed": self.seed,
        }
