"""Helpers of the core-library tests: per-backend gradients, layers as pure
functions, and small real data.

Gradients are taken with the backend's own machinery (`tf.GradientTape`,
`jax.grad`, `torch.autograd.grad`) so that the straight-through and
stop-gradient paths are checked exactly as training would see them.
"""

import numpy as np
import pytest

import keras
from keras import ops

BACKEND = keras.backend.backend()


def gradients(fn, *args):
    """Gradients of the scalar `fn(*tensors)` with respect to each argument.

    `args` are array-likes; `fn` receives them as backend tensors (float32).
    Returns one float32 numpy array per argument (zeros where `fn` does not
    depend on it).
    """
    args = [np.asarray(a, dtype=np.float32) for a in args]
    if BACKEND == "jax":
        import jax

        grads = jax.grad(lambda xs: fn(*xs))([jax.numpy.asarray(a) for a in args])
        return [np.asarray(g, dtype=np.float32) for g in grads]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
    elif BACKEND == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        value = fn(*tensors)
        if not value.requires_grad:  # depends on none of the arguments
            return [np.zeros_like(a) for a in args]
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
    else:  # pragma: no cover - numpy/openvino backends cannot differentiate
        pytest.skip(f"no gradients on the {BACKEND} backend")
    return [
        np.zeros_like(a) if g is None else ops.convert_to_numpy(g).astype(np.float32)
        for a, g in zip(args, grads)
    ]


def pure_layer(layer, training=False):
    """`layer` as a pure function `f(inputs, *trainable_values) -> (outputs, loss)`.

    `inputs` is the list `[z, features]`; arrays and tensors are both accepted.

    `loss` is the sum of what the layer adds with `add_loss` in that call.
    Uses `Layer.stateless_call`, so gradients can be taken with respect to the
    weights' values on every backend.
    """
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def f(inputs, *trainable_values):
        outputs, _, losses = layer.stateless_call(
            [ops.convert_to_tensor(v) for v in trainable_values],
            non_trainable,
            [ops.convert_to_tensor(x) for x in inputs],
            training=training,
            return_losses=True,
        )
        total = sum((ops.sum(l) for l in losses), ops.convert_to_tensor(0.0))
        return outputs, total

    return f


def trainable_values(layer):
    """Current values of `layer.trainable_variables` as numpy arrays."""
    return [ops.convert_to_numpy(v) for v in layer.trainable_variables]


def added_loss(layer):
    """Sum of `layer.losses` (what its last call added) as a float."""
    return float(sum(float(ops.convert_to_numpy(l)) for l in layer.losses))


def to_numpy(tree):
    """Convert a tensor or a dict of tensors to numpy."""
    if isinstance(tree, dict):
        return {k: ops.convert_to_numpy(v) for k, v in tree.items()}
    return ops.convert_to_numpy(tree)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global seed (NumPy, Python, backend)."""
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def digits_splits():
    """scikit-learn's digits, scaled by `softvq_keras.data.load` (no download)."""
    from softvq_keras.data import load

    return load("digits")
