"""The shared part of the quantizers whose codebook is implicit (FSQ, LFQ).

Their codes live in a small space of `code_channels` channels (FSQ: one per
level; LFQ: one per bit). `ImplicitCodebookQuantizer` holds what both do
around their own rounding rule: a `Dense` projection in (and back out) when
the latent size differs from `code_channels`, the optional latent norm before
the bound (`softvq_keras.layers.latent_norm`), `codes_per_stage` and
`decode_indices`. Subclasses set `codebook_size`, define `code_channels` and
`indices_to_codes(indices)` (the code vectors, before the projection out).
"""

import keras
from keras import ops

from softvq_keras.layers.base import Quantizer
from softvq_keras.layers.latent_norm import build_latent_norm, check_latent_norm


class ImplicitCodebookQuantizer(Quantizer):
    """Base of `FiniteScalarQuantizer` and `LookupFreeQuantizer`; see the module docstring."""

    def __init__(self, latent_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.latent_norm = check_latent_norm(latent_norm)
        self.norm = None
        self.project_in = None
        self.project_out = None

    @property
    def code_channels(self):
        raise NotImplementedError

    @property
    def codes_per_stage(self):
        return [self.codebook_size]

    def build(self, input_shape):
        z_shape, _ = self._shapes(input_shape)
        latent_dim, channels = z_shape[-1], self.code_channels
        if latent_dim != channels:
            self.project_in = keras.layers.Dense(
                channels, name="project_in", dtype=self.dtype_policy
            )
            self.project_in.build(z_shape)
            self.project_out = keras.layers.Dense(
                latent_dim, name="project_out", dtype=self.dtype_policy
            )
            self.project_out.build(z_shape[:-1] + (channels,))
        self.norm = build_latent_norm(self.latent_norm, channels, self.dtype_policy)

    def to_code_space(self, inputs, training=None):
        """`z` of `inputs` in float32, projected in and normalized: `(batch, code_channels)`."""
        z, _ = self._split(inputs)
        z = ops.cast(z, "float32")
        if self.project_in is not None:
            z = self.project_in(z)
        if self.norm is not None:
            z = self.norm(z, training=training)
        return z

    def from_code_space(self, codes):
        """Code-space vectors `(batch, code_channels)` to the latent size (projection out)."""
        return codes if self.project_out is None else self.project_out(codes)

    def decode_indices(self, indices):
        return self.from_code_space(self.indices_to_codes(indices))

    def get_config(self):
        return {**super().get_config(), "latent_norm": self.latent_norm}
