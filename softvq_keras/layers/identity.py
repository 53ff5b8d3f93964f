"""Plain autoencoder bottleneck: z passes through unchanged."""

import keras

from softvq_keras.layers.base import Bottleneck


@keras.saving.register_keras_serializable(package="softvq")
class IdentityBottleneck(Bottleneck):
    """The plain autoencoder's bottleneck (`ae`): the decoder gets `z` itself.

    Adds no loss. Inputs `[z, features]` (features ignored) with `z` of shape
    `(batch, d)`; returns `{"output": z}`.

    Example:

    >>> layer = IdentityBottleneck()
    >>> out = layer([keras.ops.ones((2, 4)), keras.ops.ones((2, 8))])
    >>> tuple(out["output"].shape)
    (2, 4)
    """

    def call(self, inputs, training=None):
        z, _ = self._split(inputs)
        return {"output": z}

