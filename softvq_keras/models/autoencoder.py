"""The paper's MLP and CNN autoencoders around any bottleneck layer."""

import keras
from keras import layers, ops

from softvq_keras.layers.base import Bottleneck, Quantizer
from softvq_keras.models.subpixel import IMPLEMENTATIONS, SubPixelConv2DTranspose


@keras.saving.register_keras_serializable(package="softvq")
class CodebookUsage(keras.metrics.Metric):
    """Codebook usage and perplexity over all the batches seen.

    Counts, for every code of every stage, how many inputs picked it (the
    quantizer's `"indices"`: `(batch,)`, or `(batch, stages)` for a residual
    quantizer; -1, a stage dropped in training, counts nothing). Counting is a
    segment sum over the `sum(codes_per_stage)` codes, never a one-hot of the
    batch, so FSQ / LFQ codebooks of many codes cost one counter each.
    `codebook_usage` is the fraction of a stage's codes picked at least once
    and `perplexity` is `exp(H)` of a stage's pick histogram (K when all codes
    are used equally, 1 when one code takes all), both averaged over the
    stages.

    Args:
        codes_per_stage: the number of codes (an int), or a list of one per
            stage (a `Quantizer`'s `codes_per_stage`).
    """

    def __init__(self, codes_per_stage, name="codebook", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(codes_per_stage, int):
            codes_per_stage = [codes_per_stage]
        self.codes_per_stage = [int(k) for k in codes_per_stage]
        self.total_codes = sum(self.codes_per_stage)
        self.counts = self.add_variable(
            shape=(self.total_codes,), initializer="zeros", name="counts"
        )

    def update_state(self, indices, sample_weight=None):
        indices = ops.cast(indices, "int32")
        if len(indices.shape) == 1:
            indices = ops.expand_dims(indices, -1)
        offsets, start = [], 0
        for k in self.codes_per_stage:
            offsets.append(start)
            start += k
        ids = indices + ops.convert_to_tensor(offsets, dtype="int32")
        ids = ops.reshape(ops.where(indices < 0, self.total_codes, ids), (-1,))
        ones = ops.ones(ops.shape(ids), dtype="float32")
        picks = ops.segment_sum(ones, ids, num_segments=self.total_codes + 1)
        self.counts.assign(self.counts + picks[: self.total_codes])

    def result(self):
        counts = ops.convert_to_tensor(self.counts)
        usage, perplexity, start = 0.0, 0.0, 0
        for k in self.codes_per_stage:
            stage = counts[start : start + k]
            start += k
            p = stage / ops.maximum(ops.sum(stage), 1.0)
            entropy = -ops.sum(ops.where(p > 0, p * ops.log(ops.maximum(p, 1e-12)), 0.0))
            usage = usage + ops.mean(ops.cast(stage > 0, "float32"))
            perplexity = perplexity + ops.exp(entropy)
        stages = float(len(self.codes_per_stage))
        return {"codebook_usage": usage / stages, "perplexity": perplexity / stages}

    def reset_state(self):
        self.counts.assign(ops.zeros((self.total_codes,)))

    def get_config(self):
        return {**super().get_config(), "codes_per_stage": self.codes_per_stage}


@keras.saving.register_keras_serializable(package="softvq")
class Autoencoder(keras.Model):
    """A functional autoencoder that logs each loss term and codebook metrics.

    Its outputs are a dict: `reconstruction`, `latent` (the pre-quantization `z`)
    and what the bottleneck returns besides its output (`*_loss` terms per
    sample, `indices` and `code_probs` for quantizers). The training loss is
    `mean((x - reconstruction)^2) / pixel_variance` plus the bottleneck's
    `add_loss` terms; `fit(x)` needs no targets. Logged per epoch:
    `reconstruction_loss`, each bottleneck term, and for quantizers
    `codebook_usage` and `perplexity` (over the epoch's training inputs).
    """

    def __init__(self, *args, pixel_variance=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.pixel_variance = float(pixel_variance)
        names = [k for k in self.output if k.endswith("_loss")]
        self.term_trackers = {
            k: keras.metrics.Mean(name=k) for k in ["reconstruction_loss", *names]
        }
        self.codebook_metric = None
        quantizer = next((l for l in self.layers if isinstance(l, Quantizer)), None)
        if quantizer is not None and "indices" in self.output:
            self.codebook_metric = CodebookUsage(quantizer.codes_per_stage)
        elif "code_probs" in self.output:  # a model saved before "indices" existed
            self.codebook_metric = CodebookUsage(self.output["code_probs"].shape[-1])

    def reconstruction_loss(self, x, reconstruction):
        x = ops.cast(x, "float32")
        reconstruction = ops.cast(reconstruction, "float32")
        return ops.mean(ops.square(x - reconstruction)) / self.pixel_variance

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        total = self.reconstruction_loss(x, y_pred["reconstruction"])
        for loss in self.losses:
            total = total + ops.cast(ops.sum(loss), "float32")
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.term_trackers["reconstruction_loss"].update_state(
            self.reconstruction_loss(x, y_pred["reconstruction"])
        )
        for name, tracker in self.term_trackers.items():
            if name != "reconstruction_loss":
                tracker.update_state(ops.mean(y_pred[name]))
        if self.codebook_metric is not None:
            indices = y_pred.get("indices")
            if indices is None:
                indices = ops.argmax(y_pred["code_probs"], axis=-1)
            self.codebook_metric.update_state(indices)
        return self.get_metrics_result()

    def get_config(self):
        return {**super().get_config(), "pixel_variance": self.pixel_variance}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = _with_indices_output(dict(config))
        pixel_variance = config.pop("pixel_variance", 1.0)
        model = super().from_config(config, custom_objects=custom_objects)
        model.pixel_variance = float(pixel_variance)
        return model


#: Quantizers whose `call` gained `"indices"` after models were saved with them.
_INDEXED_BEFORE = ("VectorQuantizer", "SoftVectorQuantizer")
#: Where `"indices"` falls among their sorted output keys (code_probs,
#: codebook_loss, commitment_loss, indices, output): a saved tensor index at or
#: above it meant the key one further now.
_INDICES_POSITION = 3


def _with_indices_output(config):
    """The config of a model saved before the quantizers returned `"indices"`,
    rewired for today's layers.

    A functional config names each tensor by (layer, node, index in the
    layer's flattened, key-sorted output dict). `"indices"` sorts before
    `"output"`, so in a model saved earlier, index 3 of a `VectorQuantizer` /
    `SoftVectorQuantizer` meant `"output"`, which is index 4 now. A config
    whose outputs include `indices` is today's and is returned unchanged.
    """
    outputs = config.get("output_layers")
    if not isinstance(outputs, dict) or "indices" in outputs or "code_probs" not in outputs:
        return config
    names = {
        layer.get("config", {}).get("name")
        for layer in config.get("layers", [])
        if layer.get("class_name") in _INDEXED_BEFORE
    }

    def shift(history):
        if (isinstance(history, list) and len(history) == 3 and history[0] in names
                and isinstance(history[2], int) and history[2] >= _INDICES_POSITION):
            return [history[0], history[1], history[2] + 1]
        return history

    def walk(node):
        if isinstance(node, dict):
            return {k: shift(v) if k == "keras_history" else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    config = dict(config)
    config["layers"] = walk(config.get("layers", []))
    config["output_layers"] = {k: shift(v) for k, v in outputs.items()}
    return config


def _mlp_encoder(x, input_shape):
    h = x
    if len(input_shape) > 1:
        h = layers.Flatten(name="flatten")(h)
    for i, units in enumerate((500, 500, 2000)):
        h = layers.Dense(units, activation="relu", name=f"encoder_dense_{i}")(h)
    return h


def _mlp_decoder(t, input_shape, deconv="auto"):
    for i, units in enumerate((2000, 500, 500)):
        t = layers.Dense(units, activation="relu", name=f"decoder_dense_{i}")(t)
    size = 1
    for n in input_shape:
        size *= n
    t = layers.Dense(size, activation="sigmoid", name="decoder_output")(t)
    if len(input_shape) > 1:
        t = layers.Reshape(input_shape, name="reconstruction_reshape")(t)
    return t


def _cnn_encoder(x, input_shape):
    h = x
    for i, filters in enumerate((64, 128, 256, 512)):
        h = layers.Conv2D(
            filters, 3, strides=2, padding="same", activation="relu",
            name=f"encoder_conv_{i}",
        )(h)
    return layers.Flatten(name="flatten")(h)


def _cnn_decoder(t, input_shape, deconv="auto"):
    height, width = input_shape[0] // 16, input_shape[1] // 16
    t = layers.Dense(height * width * 512, activation="relu", name="decoder_dense")(t)
    t = layers.Reshape((height, width, 512), name="decoder_reshape")(t)
    for i, filters in enumerate((512, 256, 128)):
        t = SubPixelConv2DTranspose(
            filters, 3, strides=2, padding="same", activation="relu",
            implementation=deconv, name=f"decoder_deconv_{i}",
        )(t)
    return SubPixelConv2DTranspose(
        input_shape[-1], 3, strides=2, padding="same", implementation=deconv,
        name="decoder_output",
    )(t)


ARCHITECTURES = {
    "mlp": (_mlp_encoder, _mlp_decoder),
    "cnn": (_cnn_encoder, _cnn_decoder),
}


def build_autoencoder(
    bottleneck, input_shape, latent_dim, architecture="mlp", pixel_variance=1.0,
    deconv="auto",
):
    """Build the paper's autoencoder around `bottleneck`.

    - `"mlp"` (MNIST, digits): Dense 500-500-2000 ReLU, heads, Dense
      2000-500-500 ReLU, Dense sigmoid output (inputs in [0, 1]).
    - `"cnn"` (SVHN, CIFAR-10, any `(H, W, C)` whose sides are multiples of
      16): Conv2D 3x3 stride 2 with 64-128-256-512 filters, Flatten, heads,
      Dense to (H/16) x (W/16) x 512, Conv2DTranspose 512-256-128 ReLU and a
      linear C-channel output (inputs in [-0.5, 0.5]); 32x32 -> 2x2. The
      transposed convolutions are `SubPixelConv2DTranspose` layers: the same
      weights and outputs as `keras.layers.Conv2DTranspose`, computed as
      sub-pixel convolutions on JAX, where the CNN's train step is then 5.7x
      faster (`benchmarks/train_step.py --deconv transpose,subpixel`).

    The encoder's `z` head is `Dense(latent_dim, activation=
    bottleneck.latent_activation, name="z")`; the bottleneck gets `[z, h]`.

    Args:
        bottleneck: a `Bottleneck` layer (see `softvq_keras.make_bottleneck`).
        input_shape: shape of one input, e.g. `(784,)` or `(32, 32, 3)`.
        latent_dim: d.
        architecture: `"mlp"` or `"cnn"`.
        pixel_variance: the training-set pixel variance the reconstruction
            MSE is divided by.
        deconv: how the CNN decoder computes its transposed convolutions:
            `"auto"` (sub-pixel on JAX, the backend's own elsewhere),
            `"subpixel"` or `"transpose"` (see `SubPixelConv2DTranspose`).

    Returns:
        `(autoencoder, encoder)`: the trainable `Autoencoder`, and a plain
        `keras.Model` from the input to `z` made only of built-in layers (it
        loads with `keras.saving.load_model` without importing this package).
    """
    if not isinstance(bottleneck, Bottleneck):
        raise TypeError(f"bottleneck must be a Bottleneck layer; got {bottleneck!r}.")
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {architecture!r}; expected one of "
            f"{sorted(ARCHITECTURES)}."
        )
    if deconv not in IMPLEMENTATIONS:
        raise ValueError(f"deconv must be one of {IMPLEMENTATIONS}; got {deconv!r}.")
    input_shape = tuple(input_shape)
    if architecture == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"The CNN needs (H, W, C) inputs; got {input_shape}.")
        if input_shape[0] % 16 or input_shape[1] % 16:
            near = "x".join(str(max(16, 16 * int(s / 16 + 0.5))) for s in input_shape[:2])
            raise ValueError(
                f"The CNN needs sides that are multiples of 16 (four stride-2 "
                f"convolutions); got {input_shape[0]}x{input_shape[1]}, the nearest "
                f"valid size is {near}."
            )
    encode, decode = ARCHITECTURES[architecture]
    x = keras.Input(shape=input_shape, name="image")
    h = encode(x, input_shape)
    z = layers.Dense(latent_dim, activation=bottleneck.latent_activation, name="z")(h)
    quantized = bottleneck([z, h])
    reconstruction = decode(quantized["output"], input_shape, deconv=deconv)
    outputs = {"reconstruction": reconstruction, "latent": z}
    outputs.update({k: v for k, v in quantized.items() if k != "output"})
    autoencoder = Autoencoder(
        inputs=x, outputs=outputs, pixel_variance=pixel_variance, name="autoencoder"
    )
    encoder = keras.Model(x, z, name="encoder")
    return autoencoder, encoder
