"""The run's whole autoencoder, for `/reconstruct`: images in, decoded images out.

`Reconstructor(run_dir, spec)` loads `autoencoder.keras` (a
`softvq_keras.Autoencoder`, so `softvq_keras` is imported for its registered
layers; nothing from `training/`) with `safe_mode=True`, and maps scaled
inputs `(N,) + input_shape` to the decoded images back in the dataset's
stored pixel range: `raw = (reconstruction - offset) * pixel_max`, clipped to
`0..pixel_max` (the inverse of `scaled = raw / pixel_max + offset`).

Under JAX the forward pass is one `jax.jit` of the model's `stateless_call`,
with batches padded to a power of two (1 ... 64) and every shape compiled
ahead of requests, as in `serving.runtime` (`warm="first"`: batch size 1 now,
the rest with `warm_up()`); other backends call the model directly.
A run folder without `autoencoder.keras` (bentos built before `/reconstruct`
existed) is served without it: `available` is False and the route answers 404.
"""

from pathlib import Path

import numpy as np

from serving.runtime import DEFAULT_MAX_CHUNK, _bucket, batch_sizes

FILE = "autoencoder.keras"


class Reconstructor:
    """Decode images with the run's autoencoder (see the module docstring)."""

    def __init__(self, run_dir, spec, max_chunk=DEFAULT_MAX_CHUNK, warm="all"):
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.max_chunk = int(max_chunk)
        path = self.run_dir / FILE
        self.available = path.is_file()
        if not self.available:
            return
        # Registers the Autoencoder and every layer, also when softvq_keras was
        # imported before Keras (then a plain `import softvq_keras` registers nothing).
        from softvq_keras import Autoencoder, make_bottleneck  # noqa: F401
        from serving.fastload import load_model

        self.model = load_model(path)
        self._forward, self._pad = self._compile()
        self.warm_up(batch_sizes(self.max_chunk, self._pad)[:1] if warm == "first" else None)

    def warm_up(self, sizes=None):
        """Compile the batch `sizes` (default: every one) now, so no request pays for it."""
        if not self.available:
            return
        for n in batch_sizes(self.max_chunk, self._pad) if sizes is None else sizes:
            self._forward(np.zeros((n,) + tuple(self.spec.input_shape), np.float32))

    def _compile(self):
        import keras

        model = self.model
        if keras.backend.backend() == "jax":
            import jax

            def stateless(variables, x):
                outputs, _ = model.stateless_call(*variables, x, training=False)
                return outputs["reconstruction"]

            jitted = jax.jit(stateless)

            def forward(x):
                variables = ([v.value for v in model.trainable_variables],
                             [v.value for v in model.non_trainable_variables])
                return np.asarray(jitted(variables, x))

            return forward, True

        def forward(x):
            if keras.backend.backend() == "torch":
                import torch

                with torch.inference_mode():
                    out = model(x, training=False)["reconstruction"]
            else:
                out = model(x, training=False)["reconstruction"]
            return keras.ops.convert_to_numpy(out)

        return forward, False

    def decode(self, x):
        """Scaled inputs `(N,) + input_shape` -> raw-range float32 `(N,) + input_shape`."""
        x = np.asarray(x, dtype=np.float32)
        parts = []
        for start in range(0, len(x), self.max_chunk):
            chunk = x[start:start + self.max_chunk]
            n = len(chunk)
            if self._pad and n != _bucket(n, self.max_chunk):
                pad = np.zeros((_bucket(n, self.max_chunk) - n,) + chunk.shape[1:], np.float32)
                chunk = np.concatenate([chunk, pad])
            parts.append(self._forward(chunk)[:n])
        scaled = np.concatenate(parts).reshape((len(x),) + tuple(self.spec.input_shape))
        raw = (scaled - np.float32(self.spec.offset)) * np.float32(self.spec.pixel_max)
        return np.clip(raw, 0.0, self.spec.pixel_max).astype(np.float32)


def per_image_shape(images):
    """The per-image shape of an already validated nested list (its first item's)."""
    shape = []
    item = images[0]
    while isinstance(item, (list, tuple)):
        shape.append(len(item))
        item = item[0] if item else None
    return tuple(shape)
