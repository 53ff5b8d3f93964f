"""The rotation trick (Fifty et al., ICLR 2025): a gradient path through VQ.

Straight-through sends the decoder's gradient to `z` unchanged
(`z + sg(q - z)`). The rotation trick instead passes `q` to the decoder as
`sg(lambda R) z`, where `R` is the rotation taking `z / ||z||` onto
`q / ||q||` and `lambda = ||q|| / ||z||`: the forward value is `q`, and the
gradient reaching `z` is rotated and rescaled like `z` itself, so two inputs
in the same Voronoi cell get different gradients. With `u = z / ||z||`,
`v = q / ||q||` and `w = sg((u + v) / ||u + v||)` (Householder form, section
4.2 of the paper):

    R z = z - 2 (z . w) w + 2 (z . sg(u)) sg(v)

This is vector-quantize-pytorch 1.32's `rotate_to` (the same `1e-6` guards on
the norms), with one difference: the result is corrected to `q`,
`rotated + sg(q - rotated)`, so the forward value is `q` to float32 rounding
(the rotation alone drifts from it by a few ulps of `||q||`); the gradient is
unchanged.
"""

from keras import ops

_EPS = 1e-6


def _safe_div(num, den):
    return num / ops.maximum(den, _EPS)


def rotate_to(z, q):
    """`q` forward, the rotation trick's gradient to `z`; both `(batch, d)`."""
    z = ops.convert_to_tensor(z)
    q = ops.stop_gradient(ops.convert_to_tensor(q, dtype=z.dtype))
    norm_z = ops.sqrt(ops.sum(ops.square(z), axis=-1, keepdims=True))
    norm_q = ops.sqrt(ops.sum(ops.square(q), axis=-1, keepdims=True))
    u = ops.stop_gradient(_safe_div(z, norm_z))
    v = _safe_div(q, norm_q)
    w = u + v
    w = ops.stop_gradient(_safe_div(w, ops.sqrt(ops.sum(ops.square(w), axis=-1, keepdims=True))))
    rotated = (
        z
        - 2.0 * ops.sum(z * w, axis=-1, keepdims=True) * w
        + 2.0 * ops.sum(z * u, axis=-1, keepdims=True) * v
    )
    rotated = rotated * ops.stop_gradient(_safe_div(norm_q, norm_z))
    return rotated + ops.stop_gradient(q - rotated)
