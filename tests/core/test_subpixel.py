"""SubPixelConv2DTranspose: the same outputs, gradients and saved file as
keras.layers.Conv2DTranspose, computed as a sub-pixel convolution."""

import numpy as np
import pytest

import keras

from softvq_keras import IdentityBottleneck, SubPixelConv2DTranspose, build_autoencoder
from softvq_keras.models.subpixel import _phase_taps

from .conftest import BACKEND, gradients, to_numpy

# (kernel, stride): the paper's 3x3 stride 2, even kernels (padding split
# unevenly), a kernel smaller than the stride, stride 3 and 4.
CONFIGS = [(3, 2), (4, 2), (2, 2), (5, 2), (1, 2), (3, 3), (5, 3), (6, 4)]


def pair(kernel, stride, filters=5, channels=3, activation="relu", seed=0):
    """A Conv2DTranspose and a sub-pixel layer with the same (random) weights."""
    rng = np.random.default_rng(seed)
    shape = (2, 5, 4, channels)
    reference = keras.layers.Conv2DTranspose(
        filters, kernel, strides=stride, padding="same", activation=activation
    )
    reference.build(shape)
    reference.set_weights([
        rng.standard_normal(w.shape).astype("float32") for w in reference.get_weights()
    ])
    layer = SubPixelConv2DTranspose(
        filters, kernel, strides=stride, padding="same", activation=activation,
        implementation="subpixel",
    )
    layer.build(shape)
    layer.set_weights(reference.get_weights())
    return reference, layer, rng.standard_normal(shape).astype("float32")


@pytest.mark.parametrize("kernel,stride", CONFIGS)
def test_outputs_equal_conv2d_transpose(kernel, stride):
    reference, layer, x = pair(kernel, stride)
    assert layer.uses_subpixel
    expected = to_numpy(reference(x))
    got = to_numpy(layer(x))
    assert got.shape == expected.shape == (2, 5 * stride, 4 * stride, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride", [(3, 2), (4, 2), (3, 3)])
def test_gradients_equal_conv2d_transpose(kernel, stride):
    reference, layer, x = pair(kernel, stride, activation=None)
    kernel_value, bias = reference.get_weights()
    target = np.random.default_rng(1).standard_normal(
        (2, 5 * stride, 4 * stride, 5)).astype("float32")

    def loss_of(op):
        def loss(inputs, k, b):
            out = op(inputs, k) + b
            return keras.ops.sum((out - keras.ops.convert_to_tensor(target)) ** 2)
        return loss

    transpose = loss_of(lambda inputs, k: keras.ops.conv_transpose(
        inputs, k, strides=stride, padding="same"))

    expected = gradients(transpose, x, kernel_value, bias)
    got = gradients(loss_of(layer.subpixel_transpose), x, kernel_value, bias)
    for g, e, name in zip(got, expected, ("input", "kernel", "bias")):
        assert np.abs(e).max() > 1.0, name  # a real gradient, not zeros
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-3, err_msg=name)


def test_one_fit_step_matches_conv2d_transpose():
    """Inside model.fit (the backend's compiled train step), both layers move alike."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 4, 4, 6)).astype("float32")
    y = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    weights = None
    results = []
    for layer_class, kwargs in ((keras.layers.Conv2DTranspose, {}),
                                (SubPixelConv2DTranspose, {"implementation": "subpixel"})):
        inputs = keras.Input((4, 4, 6))
        outputs = layer_class(3, 3, strides=2, padding="same", **kwargs)(inputs)
        model = keras.Model(inputs, outputs)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
        results.append(model.get_weights())
    moved = np.abs(results[0][0] - weights[0]).max()
    assert moved > 1e-3
    for got, expected in zip(results[1], results[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_auto_uses_subpixel_on_jax_only_and_falls_back_where_it_does_not_apply():
    auto = SubPixelConv2DTranspose(4, 3, strides=2, padding="same")
    assert auto.uses_subpixel == (BACKEND == "jax")
    assert not SubPixelConv2DTranspose(
        4, 3, strides=2, padding="same", implementation="transpose").uses_subpixel
    for kwargs in ({"padding": "valid"}, {"strides": 1}, {"strides": (2, 1)},
                   {"output_padding": 1}):
        options = {"strides": 2, "padding": "same", **kwargs}
        layer = SubPixelConv2DTranspose(4, 3, implementation="subpixel", **options)
        assert not layer.uses_subpixel, kwargs
        reference = keras.layers.Conv2DTranspose(4, 3, **options)
        x = np.random.default_rng(3).standard_normal((1, 5, 5, 2)).astype("float32")
        reference.build(x.shape)
        layer.build(x.shape)
        layer.set_weights(reference.get_weights())
        np.testing.assert_allclose(to_numpy(layer(x)), to_numpy(reference(x)), atol=1e-6)
    with pytest.raises(ValueError, match="implementation must be one of"):
        SubPixelConv2DTranspose(4, 3, implementation="fast")


def test_phase_taps_cover_every_tap_once():
    for kernel, stride in CONFIGS:
        selection, first = _phase_taps(kernel, stride)
        # every kernel tap feeds exactly one (phase, offset)
        np.testing.assert_array_equal(selection.sum(axis=(0, 1)), np.ones(kernel))
        assert selection.shape[1] == stride
    selection, first = _phase_taps(3, 2)
    # the paper's layer: y[2m] = x[m-1] w[2] + x[m] w[0], y[2m+1] = x[m] w[1]
    assert first == -1 and selection.shape == (2, 2, 3)
    assert selection[0, 0, 2] == selection[1, 0, 0] == selection[1, 1, 1] == 1
    assert selection.sum() == 3


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((4, 4, 6))
    outputs = SubPixelConv2DTranspose(
        3, 3, strides=2, padding="same", activation="relu", implementation="subpixel",
        name="up")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(4).standard_normal((2, 4, 4, 6)).astype("float32")
    path = tmp_path / "up.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("up")
    assert type(layer) is SubPixelConv2DTranspose
    assert layer.implementation == "subpixel" and layer.strides == (2, 2)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)


def test_cnn_decoder_uses_it_and_weights_match_a_conv2d_transpose_decoder():
    sub, _ = build_autoencoder(IdentityBottleneck(), (32, 32, 3), 8, "cnn",
                               deconv="subpixel")
    plain, _ = build_autoencoder(IdentityBottleneck(), (32, 32, 3), 8, "cnn",
                                 deconv="transpose")
    deconvs = [l for l in sub.layers if isinstance(l, keras.layers.Conv2DTranspose)]
    assert [l.name for l in deconvs] == [
        "decoder_deconv_0", "decoder_deconv_1", "decoder_deconv_2", "decoder_output"]
    assert all(type(l) is SubPixelConv2DTranspose for l in deconvs)
    plain.set_weights(sub.get_weights())  # same variables, same order
    x = np.random.default_rng(5).uniform(-0.5, 0.5, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(sub(x)["reconstruction"]), to_numpy(plain(x)["reconstruction"]),
        rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="deconv must be one of"):
        build_autoencoder(IdentityBottleneck(), (32, 32, 3), 8, "cnn", deconv="fast")
