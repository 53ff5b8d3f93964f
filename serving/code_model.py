"""The run's quantizer, for `/codes` and `/decode`: images to code indices and back.

`CodeModel(reconstructor, max_batch)` reuses the autoencoder that
`serving.reconstruct.Reconstructor` loaded from `autoencoder.keras` (loaded
once, nothing read again) and finds its quantizer layer: a bottleneck with
`codes_per_stage` and `decode_indices` (`VectorQuantizer`,
`SoftVectorQuantizer`, `FiniteScalarQuantizer`, `LookupFreeQuantizer`,
`ResidualVectorQuantizer`). From the autoencoder's graph it cuts two models
that share its weights:

- `indices(x)`: scaled images `(N,) + input_shape` -> the layer's `"indices"`,
  int32 `(N,)` or `(N, stages)` (soft VQ: the most probable code);
- `decode(indices)`: the layer's `decode_indices` (the decoder input for those
  codes) -> the decoder -> images in the dataset's raw pixel range, shaped
  `(N,) + image_shape` (the inverse scaling of `Reconstructor.decode`).

For hard quantizers `decode(indices(x))` is the reconstruction of `x`: the
decoder gets `z + sg(zq - z)`, numerically `zq`, in the autoencoder too. Soft
VQ's autoencoder decodes the posterior mean of the codewords, so there the
round trip gives the decoding of the most probable codeword instead.

Under JAX both are `jax.jit`-compiled functions of the weights (padded to a
power of two up to `max_chunk` images, as `serving.runtime`); they compile on
first use of each batch size, so a server that never answers `/codes` pays
nothing at start-up. Other backends call the models directly. `available` is
False, with `reason` saying why (no autoencoder.keras, or a bottleneck without
codes: ae, vae, ...), when the run has no codes to serve.
"""

import numpy as np

from serving.codes import CodeLayout
from serving.run_folder import RunFolderError
from serving.runtime import DEFAULT_MAX_CHUNK, _bucket


def find_quantizer(model):
    """The layer of `model` that has codes (`codes_per_stage`, `decode_indices`), or None."""
    for layer in model.layers:
        if hasattr(layer, "decode_indices") and hasattr(layer, "codes_per_stage"):
            return layer
    return None


def _bottleneck_name(model):
    """The class name of the autoencoder's bottleneck layer, for messages."""
    from softvq_keras.layers.base import Bottleneck

    for layer in model.layers:
        if isinstance(layer, Bottleneck):
            return type(layer).__name__
    return "no bottleneck layer"


class CodeModel:
    """Code indices of images and images of code indices (see the module docstring)."""

    def __init__(self, reconstructor, max_batch, config=None, max_chunk=DEFAULT_MAX_CHUNK):
        self.available = False
        self.reason = None
        self.layout = None
        self.max_chunk = int(max_chunk)
        if not reconstructor.available:
            self.reason = ("no autoencoder: this run was served without autoencoder.keras, "
                           "so /codes and /decode are not available (store or pack the whole "
                           "run folder)")
            return
        import keras

        model = reconstructor.model
        model_name = str((config or {}).get("model") or "quantizer")
        layer = find_quantizer(model)
        if layer is None:
            self.reason = (
                f"no quantizer: this run's bottleneck ({model_name}, "
                f"{_bottleneck_name(model)}) has no discrete codes, so /codes and /decode "
                "are not available; they serve the quantizer runs (vq, softvq, fsq, lfq, rvq)")
            return
        self.spec = reconstructor.spec
        stages = tuple(int(k) for k in layer.codes_per_stage)
        columns = getattr(layer, "index_columns", None)
        columns = int(columns) if columns is not None else (0 if len(stages) == 1
                                                             else len(stages))
        self.layout = CodeLayout(stages, columns, int(max_batch), model_name)
        described = CodeLayout.from_config(config or {}, max_batch)
        if described is not None and (described.codes_per_stage, described.columns) != (
                stages, columns):
            raise RunFolderError(
                f"run folder {str(reconstructor.run_dir)!r} is inconsistent: config.json's "
                f"bottleneck settings give {list(described.codes_per_stage)} codes per stage "
                f"({described.columns or 'one'} index column(s)), autoencoder.keras's "
                f"{type(layer).__name__} has {list(stages)} ({columns or 'one'})")
        outputs = keras.tree.pack_sequence_as(
            layer.compute_output_spec(layer.input), keras.tree.flatten(layer.output))
        encoder = keras.Model(model.input, outputs["indices"], name="code_encoder")
        decoder = keras.Model(outputs["output"], model.output["reconstruction"],
                              name="code_decoder")
        variables = list(model.trainable_variables) + list(model.non_trainable_variables)
        self._indices, self._pad = _compile(
            lambda x: encoder(x, training=False), variables)
        self._decode, _ = _compile(
            lambda i: decoder(layer.decode_indices(i), training=False), variables)
        self.available = True

    def _chunked(self, forward, x):
        parts = []
        for start in range(0, len(x), self.max_chunk):
            chunk = x[start:start + self.max_chunk]
            n = len(chunk)
            size = _bucket(n, self.max_chunk)
            if self._pad and n != size:
                pad = np.zeros((size - n,) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            parts.append(np.asarray(forward(chunk))[:n])
        return np.concatenate(parts)

    def indices(self, x):
        """Scaled inputs `(N,) + input_shape` -> int32 indices `(N,) + per_image`."""
        x = np.asarray(x, dtype=np.float32)
        out = self._chunked(self._indices, x).astype(np.int32)
        return out.reshape((len(x),) + self.layout.per_image)

    def decode(self, indices):
        """Checked int32 indices `(N,) + per_image` -> raw-range images `(N,) + image_shape`."""
        indices = np.asarray(indices, dtype=np.int32)
        scaled = self._chunked(self._decode, indices).astype(np.float32)
        scaled = scaled.reshape((len(indices),) + tuple(self.spec.image_shape))
        raw = (scaled - np.float32(self.spec.offset)) * np.float32(self.spec.pixel_max)
        return np.clip(raw, 0.0, self.spec.pixel_max).astype(np.float32)


def _compile(fn, variables):
    """`(forward, pads)`: `fn` on NumPy input to NumPy, the fastest form per backend.

    Under JAX: one `jax.jit` of `fn` run in a `keras.StatelessScope` that maps
    `variables` to the values passed in (as `stateless_call` does), so the
    weights are arguments, not constants baked into the compiled function.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(values, x):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(x)

        jitted = jax.jit(stateless)

        def forward(x):
            return np.asarray(jitted([v.value for v in variables], x))

        return forward, True
    if backend == "torch":
        import torch

        def forward(x):
            with torch.inference_mode():
                return keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(x)))

        return forward, False

    def forward(x):
        return keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(x)))

    return forward, False
