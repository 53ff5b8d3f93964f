"""Batch normalization of a quantizer's latent before its bound (FSQ, LFQ).

Why: on the paper's MLP (Dense 500-500-2000 ReLU, then the `z` head) the
encoder's `z` starts almost constant over samples (spread ~0.05 after FSQ's
projection on digits) and Adam moves the 2000-input `z` head's output
coherently, so within one epoch the projected latent drifts to an offset
shared by every sample (about -15 on digits). FSQ's tanh bound then
saturates (no gradient comes back) and LFQ's signs freeze: one code is used.
Standardizing each channel over the batch (zero mean, unit variance; moving
statistics in inference) removes the shared offset and spreads the samples
over the levels / signs.
"""

import keras

#: The values of the quantizers' `latent_norm` argument.
LATENT_NORMS = (None, "batch")
#: Momentum of the moving mean / variance used in inference (Keras' default is
#: 0.99; 0.9 follows the drifting latent of short runs, e.g. digits' 24 steps
#: per epoch).
MOMENTUM = 0.9


def check_latent_norm(latent_norm):
    """`latent_norm` validated (`None` or `"batch"`); "none" reads as None."""
    if latent_norm in ("none", "None"):
        latent_norm = None
    if latent_norm not in LATENT_NORMS:
        raise ValueError(
            f"latent_norm must be None or 'batch'; got {latent_norm!r}."
        )
    return latent_norm


def build_latent_norm(latent_norm, channels, dtype_policy):
    """A built `BatchNormalization` over `channels`, or None when `latent_norm` is None.

    No learned scale or shift (`center=False, scale=False`): the quantizer's
    levels / signs set the scale, a learned shift could drift again.
    """
    if latent_norm is None:
        return None
    norm = keras.layers.BatchNormalization(
        center=False, scale=False, momentum=MOMENTUM, name="latent_norm",
        dtype=dtype_policy,
    )
    norm.build((None, channels))
    return norm
