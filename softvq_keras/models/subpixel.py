"""A `Conv2DTranspose` that runs as a sub-pixel convolution where that is faster."""

import keras
import numpy as np
from keras import ops

IMPLEMENTATIONS = ("auto", "subpixel", "transpose")


def _phase_taps(kernel_size, stride):
    """Which kernel tap feeds which output phase, from which input offset.

    A stride-`s`, "same" transposed convolution (TensorFlow's and Keras'
    convention: the gradient of a "same" strided convolution, whose padding
    before is `max(k - s, 0) // 2`) writes output `o = s*m + r` as
    `sum_t x[m + d(r, t)] * w[t]` over the taps `t` with
    `(r + pad_before - t) % s == 0`, where `d(r, t) = (r + pad_before - t) / s`.

    Returns `(selection, first_offset)`: `selection[j, r, t] = 1` when tap `t`
    feeds phase `r` from input offset `first_offset + j`.
    """
    k, s = int(kernel_size), int(stride)
    pad_before = max(k - s, 0) // 2
    pairs = [
        (r, t, (r + pad_before - t) // s)
        for r in range(s) for t in range(k) if (r + pad_before - t) % s == 0
    ]
    offsets = [d for _, _, d in pairs]
    first, last = min(offsets), max(offsets)
    selection = np.zeros((last - first + 1, s, k), dtype="float32")
    for r, t, d in pairs:
        selection[d - first, r, t] = 1.0
    return selection, first


@keras.saving.register_keras_serializable(package="softvq")
class SubPixelConv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose`, computed as a sub-pixel convolution.

    A stride-`s` "same" transposed convolution is `s * s` ordinary stride-1
    convolutions of the undilated input (one per output phase) interleaved
    by depth-to-space (Shi et al., 2016). This layer has the same weights,
    the same configuration and the same outputs (up to float rounding) as
    `Conv2DTranspose`; with `implementation="subpixel"` it gathers the
    `(k, k, filters, C)` kernel into a `(k', k', C, s*s*filters)` one
    (`k' = ceil(k / s)` plus one where phases need it; 2 for the paper's 3x3
    stride 2), runs one stride-1 "valid" convolution on the input padded by
    one pixel, and moves the `s*s` channel groups to their output pixels.

    Why: XLA on the CPU (JAX) runs the gradients of `lhs_dilation`
    convolutions, which is how `Conv2DTranspose` is computed there, 5-15x
    slower than those of ordinary convolutions
    (`benchmarks/jax_conv_transpose.py`). TensorFlow's and PyTorch's
    transposed convolutions have no such gap, so `implementation="auto"` (the
    default) uses the sub-pixel form on JAX only.

    The sub-pixel form covers `padding="same"`, equal strides of 2 or more,
    no dilation, `output_padding=None` and `data_format="channels_last"`; any
    other configuration runs `Conv2DTranspose.call` whatever `implementation`
    says. The sub-pixel form does 16/9 of the multiply-adds of a direct 3x3
    stride-2 transposed convolution (the zero taps of the gathered kernel).

    Args:
        implementation: `"auto"` (sub-pixel on the JAX backend, the built-in
            transposed convolution elsewhere), `"subpixel"` or `"transpose"`.
        **kwargs: the arguments of `keras.layers.Conv2DTranspose` (`filters`,
            `kernel_size`, `strides`, `padding`, `activation`, ...).

    Call arguments:
        inputs: `(batch, H, W, C)`.

    Returns:
        `(batch, s*H, s*W, filters)` for "same" padding and stride `s`.

    Example:

    >>> layer = SubPixelConv2DTranspose(8, 3, strides=2, padding="same")
    >>> layer(np.zeros((2, 4, 4, 16), "float32")).shape
    (2, 8, 8, 8)

    Reference:
        Shi et al., "Real-Time Single Image and Video Super-Resolution Using
        an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016.
    """

    def __init__(self, *args, implementation="auto", **kwargs):
        super().__init__(*args, **kwargs)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}."
            )
        self.implementation = implementation

    @property
    def subpixel_applies(self):
        """Whether this configuration can run as a sub-pixel convolution."""
        s_h, s_w = self.strides
        return (
            self.padding == "same"
            and s_h == s_w
            and s_h >= 2
            and tuple(self.dilation_rate) == (1, 1)
            and self.output_padding is None
            and self.data_format == "channels_last"
        )

    @property
    def uses_subpixel(self):
        """Whether `call` computes the sub-pixel form."""
        if not self.subpixel_applies or self.implementation == "transpose":
            return False
        return self.implementation == "subpixel" or keras.backend.backend() == "jax"

    def subpixel_kernel(self, kernel):
        """The `(k'_h, k'_w, C, s*s*filters)` kernel of the sub-pixel form."""
        (k_h, k_w), s = self.kernel_size, self.strides[0]
        select_h, first_h = _phase_taps(k_h, s)
        select_w, first_w = _phase_taps(k_w, s)
        select_h = ops.convert_to_tensor(select_h, dtype=kernel.dtype)
        select_w = ops.convert_to_tensor(select_w, dtype=kernel.dtype)
        # kernel: (k_h, k_w, filters, C) -> (k'_h, k'_w, C, s_h, s_w, filters)
        gathered = ops.einsum("prt,qsu,tuoi->pqirso", select_h, select_w, kernel)
        shape = (select_h.shape[0], select_w.shape[0], kernel.shape[3], s * s * self.filters)
        return ops.reshape(gathered, shape), (first_h, first_w)

    def subpixel_transpose(self, inputs, kernel):
        """`conv_transpose(inputs, kernel)` (no bias) as a sub-pixel convolution."""
        s = self.strides[0]
        kernel, (first_h, first_w) = self.subpixel_kernel(kernel)
        span_h, span_w = kernel.shape[0], kernel.shape[1]
        # Input offsets first..first+span-1 around each output block: pad so
        # that a "valid" stride-1 convolution gives exactly H x W blocks.
        pad = [
            [0, 0],
            [max(-first_h, 0), max(first_h + span_h - 1, 0)],
            [max(-first_w, 0), max(first_w + span_w - 1, 0)],
            [0, 0],
        ]
        x = ops.pad(inputs, pad)
        start_h, start_w = first_h + pad[1][0], first_w + pad[2][0]
        if start_h or start_w:
            x = x[:, start_h:, start_w:, :]
        blocks = ops.conv(x, kernel, strides=1, padding="valid", data_format="channels_last")
        height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
        blocks = ops.reshape(blocks, (-1, height, width, s, s, self.filters))
        blocks = ops.transpose(blocks, (0, 1, 3, 2, 4, 5))
        return ops.reshape(blocks, (-1, height * s, width * s, self.filters))

    def call(self, inputs):
        if not self.uses_subpixel:
            return super().call(inputs)
        outputs = self.subpixel_transpose(inputs, self.kernel)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config["implementation"] = self.implementation
        return config
