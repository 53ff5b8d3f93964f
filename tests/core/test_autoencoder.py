"""The paper's MLP and CNN autoencoders around every bottleneck: shapes, an
encoder made of built-in layers only, and a short fit that learns and logs."""

import math

import numpy as np
import pytest

import keras

from softvq_keras import IdentityBottleneck, build_autoencoder, make_bottleneck

from softvq_keras.presets import MODEL_NAMES

from .conftest import to_numpy

NAMES = MODEL_NAMES
QUANTIZERS = ("vq", "softvq", "fsq", "lfq", "rvq")
TERMS = {"vae": ["kl_loss"], "betavae": ["kl_loss"], "infodropout": ["kl_loss"],
         "vq": ["codebook_loss", "commitment_loss"],
         "softvq": ["codebook_loss", "commitment_loss"],
         "lfq": ["entropy_loss", "commitment_loss"],
         "rvq": ["codebook_loss", "commitment_loss"]}
LATENT = 8


def autoencoder(name, input_shape=(64,), architecture="mlp", dataset="digits", **kw):
    bottleneck = make_bottleneck(name, dataset, seed=0)
    return build_autoencoder(bottleneck, input_shape, LATENT, architecture, **kw)


def expected_shapes(name, batch, input_shape, num_codes):
    shapes = {"reconstruction": (batch,) + tuple(input_shape), "latent": (batch, LATENT)}
    shapes.update({term: (batch,) for term in TERMS.get(name, [])})
    if name in ("vq", "softvq"):
        shapes["code_probs"] = (batch, num_codes)
    if name in QUANTIZERS:
        shapes["indices"] = (batch, 4) if name == "rvq" else (batch,)
    return shapes


@pytest.mark.parametrize("name", NAMES)
def test_mlp_output_shapes(name):
    model, encoder = autoencoder(name)
    x = np.random.default_rng(0).uniform(size=(3, 64)).astype("float32")
    out = to_numpy(model(x, training=False))
    assert {k: v.shape for k, v in out.items()} == expected_shapes(name, 3, (64,), 32)
    reconstruction = out["reconstruction"]
    assert (reconstruction > 0).all() and (reconstruction < 1).all()  # sigmoid output
    np.testing.assert_allclose(to_numpy(encoder(x)), out["latent"], rtol=1e-5, atol=1e-6)


def test_mlp_keeps_an_image_shaped_input_shape():
    model, encoder = autoencoder("softvq", input_shape=(8, 8))
    x = np.random.default_rng(0).uniform(size=(2, 8, 8)).astype("float32")
    out = to_numpy(model(x, training=False))
    assert out["reconstruction"].shape == (2, 8, 8)
    assert tuple(encoder.output.shape) == (None, LATENT)


def test_mlp_has_the_papers_layer_sizes():
    model, _ = autoencoder("ae", input_shape=(784,), dataset="mnist")
    dense = [l.units for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert dense == [500, 500, 2000, LATENT, 2000, 500, 500, 784]


@pytest.mark.parametrize("name", ["ae", "vae", "infodropout", "vq", "softvq"])
def test_cnn_output_shapes(name):
    model, encoder = autoencoder(name, input_shape=(32, 32, 3), architecture="cnn", dataset="svhn")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(2, 32, 32, 3)).astype("float32")
    out = to_numpy(model(x, training=False))
    num_codes = make_bottleneck(name, "svhn").get_config().get("num_codes")
    assert {k: v.shape for k, v in out.items()} == expected_shapes(name, 2, (32, 32, 3), num_codes)
    conv = [l.filters for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert conv == [64, 128, 256, 512]
    deconv = [l.filters for l in model.layers if isinstance(l, keras.layers.Conv2DTranspose)]
    assert deconv == [512, 256, 128, 3]
    assert model.get_layer("decoder_output").activation.__name__ == "linear"
    assert tuple(encoder.output.shape) == (None, LATENT)


def test_builder_rejects_bad_arguments():
    with pytest.raises(TypeError, match="must be a Bottleneck layer"):
        build_autoencoder(keras.layers.Dense(3), (64,), LATENT)
    with pytest.raises(ValueError, match="Unknown architecture 'rnn'"):
        build_autoencoder(IdentityBottleneck(), (64,), LATENT, "rnn")
    with pytest.raises(ValueError, match="multiples of 16.*got 28x28, the nearest valid size is 32x32"):
        build_autoencoder(IdentityBottleneck(), (28, 28, 1), LATENT, "cnn")
    with pytest.raises(ValueError, match="got 64x40, the nearest valid size is 64x48"):
        build_autoencoder(IdentityBottleneck(), (64, 40, 3), LATENT, "cnn")


@pytest.mark.parametrize("shape", [(16, 48, 1), (64, 32, 3)])
def test_cnn_takes_any_multiple_of_16(shape):
    """Non-square sizes and one channel: the decoder mirrors (H/16, W/16) and C."""
    model, encoder = build_autoencoder(IdentityBottleneck(), shape, LATENT, "cnn")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(2,) + shape).astype("float32")
    out = to_numpy(model(x, training=False))
    assert out["reconstruction"].shape == (2,) + shape
    assert tuple(model.get_layer("decoder_reshape").output.shape) == (
        None, shape[0] // 16, shape[1] // 16, 512,
    )
    assert tuple(encoder.output.shape) == (None, LATENT)


@pytest.mark.parametrize("name", ["infodropout", "softvq"])
def test_encoder_is_made_of_built_in_layers(name):
    _, encoder = autoencoder(name)
    modules = {type(l).__module__.split(".")[0] for l in encoder.layers}
    assert modules == {"keras"}
    assert encoder.get_layer("z").activation.__name__ == ("relu" if name == "infodropout" else "linear")


def test_encoders_load_safely_without_this_package(tmp_path, python_subprocess, keras_backend):
    """The saved encoders load with safe_mode=True in a process that never imports softvq_keras."""
    x = {
        "mlp": np.random.default_rng(1).uniform(size=(3, 64)).astype("float32"),
        "cnn": np.random.default_rng(2).uniform(-0.5, 0.5, size=(2, 32, 32, 3)).astype("float32"),
    }
    for arch, shape, dataset in (("mlp", (64,), "digits"), ("cnn", (32, 32, 3), "svhn")):
        _, encoder = autoencoder("softvq", shape, arch, dataset)
        encoder.save(tmp_path / f"{arch}.keras")
        np.save(tmp_path / f"{arch}_x.npy", x[arch])
        np.save(tmp_path / f"{arch}_z.npy", to_numpy(encoder(x[arch])))
    code = f"""
import sys, numpy as np, keras
for arch in ("mlp", "cnn"):
    enc = keras.saving.load_model({str(tmp_path)!r} + f"/{{arch}}.keras", safe_mode=True)
    z = keras.ops.convert_to_numpy(enc(np.load({str(tmp_path)!r} + f"/{{arch}}_x.npy")))
    np.save({str(tmp_path)!r} + f"/{{arch}}_z_loaded.npy", z)
print("softvq_keras imported:", any(m.startswith("softvq_keras") for m in sys.modules))
"""
    proc = python_subprocess(code, backend=keras_backend)
    assert "softvq_keras imported: False" in proc.stdout
    for arch in ("mlp", "cnn"):
        np.testing.assert_allclose(
            np.load(tmp_path / f"{arch}_z_loaded.npy"), np.load(tmp_path / f"{arch}_z.npy"),
            rtol=1e-5, atol=1e-6, err_msg=arch,
        )


@pytest.mark.parametrize("name", NAMES)
def test_short_fit_lowers_the_loss_and_logs_every_term(name, digits_splits):
    x = digits_splits.x_train[:512]
    model, _ = autoencoder(name, pixel_variance=digits_splits.pixel_variance)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, batch_size=64, epochs=3, verbose=0, shuffle=False).history
    # FSQ's 32 codes on two tanh-bounded channels learn more slowly in 3 epochs.
    factor = 0.99 if name == "fsq" else 0.9
    assert history["loss"][-1] < factor * history["loss"][0], history["loss"]
    assert history["reconstruction_loss"][-1] < history["reconstruction_loss"][0]
    terms = TERMS.get(name, [])
    expected = {"loss", "reconstruction_loss", *terms}
    if name in QUANTIZERS:
        expected |= {"codebook_usage", "perplexity"}
    assert set(history) == expected
    for key in expected:
        assert all(math.isfinite(v) for v in history[key]), key
    if name in QUANTIZERS:
        stages = model.codebook_metric.codes_per_stage
        assert stages == ([32] * 4 if name == "rvq" else [32])
        k = stages[0]
        assert all(0 < u <= 1 for u in history["codebook_usage"])
        assert all(1 <= p <= k for p in history["perplexity"])
        # The usage is the mean over stages of the fraction of codes picked.
        total = k * len(stages)
        assert history["codebook_usage"][-1] * total == pytest.approx(
            round(history["codebook_usage"][-1] * total), abs=1e-4
        )


def test_reconstruction_loss_is_mse_over_pixel_variance():
    model, _ = autoencoder("ae", pixel_variance=0.25)
    x = np.random.default_rng(3).uniform(size=(4, 64)).astype("float32")
    recon = to_numpy(model(x, training=False))["reconstruction"]
    loss = float(keras.ops.convert_to_numpy(model.reconstruction_loss(x, recon)))
    assert loss == pytest.approx(((x - recon) ** 2).mean() / 0.25, rel=1e-5)


def test_codebook_metric_counts_distinct_indices_per_stage():
    from softvq_keras import CodebookUsage

    metric = CodebookUsage([4, 2])
    # Stage 0 picks 0, 1, 0 (2 of 4 codes); stage 1 picks 1, 1 and a dropped -1.
    metric.update_state(np.array([[0, 1], [1, 1], [0, -1]], "int32"))
    result = {k: float(keras.ops.convert_to_numpy(v)) for k, v in metric.result().items()}
    assert result["codebook_usage"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    h0 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert result["perplexity"] == pytest.approx((math.exp(h0) + 1.0) / 2, rel=1e-5)
    assert keras.ops.convert_to_numpy(metric.counts).tolist() == [2, 1, 0, 0, 0, 2]


def test_codebook_metric_counts_argmax_picks():
    from softvq_keras import CodebookUsage

    metric = CodebookUsage(4)
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.8, 0.05, 0.05],
                      [0.6, 0.2, 0.1, 0.1], [0.9, 0.05, 0.05, 0.0]], "float32")
    metric.update_state(probs.argmax(-1))
    result = {k: float(keras.ops.convert_to_numpy(v)) for k, v in metric.result().items()}
    # picks: code 0 three times, code 1 once -> usage 2/4, perplexity exp(H(3/4, 1/4)).
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert result["codebook_usage"] == pytest.approx(0.5)
    assert result["perplexity"] == pytest.approx(math.exp(entropy), rel=1e-5)
    metric.reset_state()
    metric.update_state(np.arange(4))
    result = {k: float(keras.ops.convert_to_numpy(v)) for k, v in metric.result().items()}
    assert result == pytest.approx({"codebook_usage": 1.0, "perplexity": 4.0})
