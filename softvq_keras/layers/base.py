"""Shared pieces of the bottleneck layers."""

import keras
from keras import ops


class Bottleneck(keras.layers.Layer):
    """Base class of every bottleneck: `[z, features] -> dict`.

    The encoder ends in a plain `Dense` head that produces `z` (activation
    `latent_activation`), so that the exported encoder holds only built-in
    Keras layers. The bottleneck then receives `[z, features]`, where
    `features` is the encoder's last hidden layer, from which it builds any
    auxiliary head it needs (log-variance, dropout rate, codeword variances).

    `call` returns a dict with at least `"output"`, the decoder input, plus one
    `(batch,)` tensor per loss term (keys ending in `_loss`, unweighted, each the
    per-sample mean over elements). The weighted total is added with `add_loss`
    as the mean over the batch, so every bottleneck follows one convention:
    losses are means over elements, never sums that scale with the batch size.

    Quantizers (`Quantizer` subclasses) also return `"indices"`, int32
    `(batch,)` or `(batch, num_quantizers)` for a residual quantizer, and the
    codebook ones `"code_probs"` `(batch, num_codes)`.
    """

    #: activation of the encoder's `z` head.
    latent_activation = None
    #: names of the loss terms `call` returns (without the `_loss` suffix).
    loss_terms = ()
    #: whether `call` returns `"code_probs"` `(batch, num_codes)`.
    returns_code_probs = False
    #: `None` (no `"indices"`), `0` (`(batch,)`) or `n` (`(batch, n)`).
    index_columns = None

    def _split(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    f"{type(self).__name__} expects [z, features]; got "
                    f"{len(inputs)} tensors."
                )
            return inputs[0], inputs[1]
        return inputs, None

    def _shapes(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
            input_shape[0], (list, tuple)
        ):
            return tuple(input_shape[0]), tuple(input_shape[1])
        return tuple(input_shape), None

    def compute_output_spec(self, inputs, training=None):
        z, _ = self._split(inputs)
        batch, dtype = tuple(z.shape[:1]), self.compute_dtype
        spec = {"output": keras.KerasTensor(z.shape, dtype=dtype)}
        for term in self.loss_terms:
            spec[f"{term}_loss"] = keras.KerasTensor(batch, dtype=dtype)
        if self.returns_code_probs:
            spec["code_probs"] = keras.KerasTensor(batch + (self.num_codes,), dtype=dtype)
        if self.index_columns is not None:
            columns = (self.index_columns,) if self.index_columns else ()
            spec["indices"] = keras.KerasTensor(batch + columns, dtype="int32")
        return spec

    def _build_head(self, name, units, features_shape):
        """A `Dense(units)` head on the encoder features, built now."""
        self._require_features(features_shape)
        head = keras.layers.Dense(units, name=name, dtype=self.dtype_policy)
        head.build(features_shape)
        return head

    def _quantizer_outputs(self, z, quantized, code_probs, indices):
        """Losses and straight-through output of soft VQ.

        `codebook = mean((quantized - sg(z))^2)` and
        `commitment = mean((sg(quantized) - z)^2)` per sample; adds
        `loss_weight * (codebook + commitment_cost * commitment)` (batch
        means), with an EMA codebook too: the codebook then gets no gradient
        (it is not trainable), but the codebook term still trains `z` and the
        variance head through the posterior. The decoder gets
        `z + sg(quantized - z)`.
        """
        codebook = per_sample_mean(ops.square(quantized - ops.stop_gradient(z)))
        commitment = per_sample_mean(ops.square(ops.stop_gradient(quantized) - z))
        total = ops.mean(codebook) + self.commitment_cost * ops.mean(commitment)
        self.add_loss(self.loss_weight * total)
        return {
            "output": z + ops.stop_gradient(quantized - z),
            "codebook_loss": codebook,
            "commitment_loss": commitment,
            "code_probs": code_probs,
            "indices": ops.cast(indices, "int32"),
        }

    def _require_features(self, features):
        if features is None:
            raise ValueError(
                f"{type(self).__name__} needs the encoder's hidden features: "
                "call it on [z, features]."
            )


class Quantizer(Bottleneck):
    """A bottleneck with discrete codes: `call` also returns `"indices"`.

    Subclasses define `codes_per_stage` (a list of ints: the number of codes
    of each stage, one entry unless the quantizer is residual) and
    `decode_indices(indices)`: the `(batch, latent_dim)` tensor the decoder
    receives in inference for those codes.
    """

    index_columns = 0

    @property
    def codes_per_stage(self):
        return [self.num_codes]

    def decode_indices(self, indices):
        raise NotImplementedError


def squared_distances(z, codebook):
    """`||z - e_k||^2` for every row of `z` (batch, d) and codeword (K, d).

    One matmul: `||z||^2 - 2 z E^T + ||E||^2`, clipped at 0 against rounding.
    """
    z2 = ops.sum(ops.square(z), axis=-1, keepdims=True)
    e2 = ops.sum(ops.square(codebook), axis=-1)
    return ops.maximum(z2 - 2.0 * ops.matmul(z, ops.transpose(codebook)) + e2, 0.0)


def per_sample_mean(x):
    """Mean over every axis but the first: `(batch, ...) -> (batch,)`."""
    return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1)), axis=-1)


def make_codebook_initializer(name, latent_dim, seed=None):
    """The paper's codebook initializations for a `(K, d)` codebook.

    - `"uniform_unit_scaling"` (MNIST notebook): U(-sqrt(3/d), +sqrt(3/d)).
    - `"variance_scaling"` (SVHN notebook): fan-in variance scaling, scale 1,
      truncated normal, fan-in = d.
    """
    if name == "uniform_unit_scaling":
        limit = (3.0 / latent_dim) ** 0.5
        return keras.initializers.RandomUniform(-limit, limit, seed=seed)
    if name == "variance_scaling":
        # Keras' truncated-normal VarianceScaling divides by this constant.
        stddev = (1.0 / latent_dim) ** 0.5 / 0.87962566103423978
        return keras.initializers.TruncatedNormal(stddev=stddev, seed=seed)
    raise ValueError(
        f"Unknown codebook_initializer {name!r}; expected "
        "'uniform_unit_scaling' or 'variance_scaling'."
    )
