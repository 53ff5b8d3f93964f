"""Request checks, the batcher and run-folder loading, in process (no server)."""

import asyncio
import io
import shutil

import numpy as np
import pytest

from serving.batching import MicroBatcher
from serving.validation import ImageSpec, InvalidInput, image_from_png, images_from_json

MNIST = ImageSpec(image_shape=(28, 28), input_shape=(784,), pixel_max=255.0, offset=0.0,
                  max_batch=8)
CIFAR = ImageSpec(image_shape=(32, 32, 3), input_shape=(32, 32, 3), pixel_max=255.0,
                  offset=-0.5, max_batch=8)


def test_mnist_shapes_are_scaled_like_training():
    from softvq_keras.data import preprocess

    raw = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28))
    expected = preprocess("mnist", raw)
    for images in (raw, raw.reshape(3, 784)):
        x = images_from_json(images.tolist(), MNIST)
        assert x.dtype == np.float32 and x.shape == (3, 784)
        np.testing.assert_allclose(x, expected, atol=1e-7)


def test_cifar_offset_and_flat_input():
    from softvq_keras.data import preprocess

    raw = np.random.default_rng(1).integers(0, 256, size=(2, 32, 32, 3))
    x = images_from_json(raw.reshape(2, -1).tolist(), CIFAR)
    assert x.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(x, preprocess("cifar10", raw), atol=1e-7)
    assert x.min() >= -0.5 and x.max() <= 0.5


@pytest.mark.parametrize(
    "images, status, message",
    [
        (None, 400, 'missing "images"'),
        ({"a": 1}, 422, '"images" must be a list of images, got an object'),
        ([], 422, '"images" is empty'),
        ([[0] * 784] * 9, 422, "batch too large: 9 images, the limit is 8"),
        ([[0] * 783], 422, "got 1 image(s), each shaped [783]"),
        ([[0] * 784, [0] * 783], 422,
         "images is ragged: images[0] has 784 items but images[1] has 783 items"),
        ([[0] * 783 + ["x"]], 422, "images[0][783] is a string ('x')"),
        ([[0] * 783 + [256]], 422, "images[0, 783] is 256"),
        ([[0] * 783 + [float("nan")]], 422, "is nan"),
        ([[0] * 783 + [10**40]], 422, "is 1e+40"),
    ],
)
def test_bad_json_images(images, status, message):
    with pytest.raises(InvalidInput) as raised:
        images_from_json(images, MNIST)
    assert raised.value.status == status
    assert message in raised.value.message
    assert "[28, 28] or [784]" in raised.value.message  # the expected shape


def _png(array, mode):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_png_greyscale_and_colour_conversion():
    pixels = np.random.default_rng(2).integers(0, 256, size=(28, 28))
    x = image_from_png(_png(pixels, "L"), MNIST)
    np.testing.assert_allclose(x, pixels.reshape(1, 784) / 255.0, atol=1e-7)
    rgb = np.random.default_rng(3).integers(0, 256, size=(32, 32, 3))
    x = image_from_png(_png(rgb, "RGB"), CIFAR)
    np.testing.assert_allclose(x[0], rgb / 255.0 - 0.5, atol=1e-7)


def test_png_refusals():
    with pytest.raises(InvalidInput, match="16-bit samples"):
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.zeros((28, 28), dtype=np.uint16)).save(buffer, "PNG")
        image_from_png(buffer.getvalue(), MNIST)
    with pytest.raises(InvalidInput, match="the PNG is 32x32 pixels"):
        image_from_png(_png(np.zeros((32, 32, 3)), "RGB"), MNIST)
    with pytest.raises(InvalidInput, match="no file uploaded"):
        image_from_png(b"", MNIST)


def test_batcher_merges_concurrent_requests_and_splits_answers():
    calls = []

    def double(batch):
        calls.append(len(batch))
        return (batch * 2, batch.sum(axis=1))

    batcher = MicroBatcher(double, max_batch=8)

    async def main():
        alone = await batcher(np.ones((1, 4)))  # an idle model runs a request at once
        inputs = [np.full((i % 3 + 1, 4), float(i)) for i in range(20)]
        answers = await asyncio.gather(*(batcher(x) for x in inputs))
        return alone, inputs, answers

    alone, inputs, answers = asyncio.run(main())
    batcher.close()
    np.testing.assert_array_equal(alone[0], np.full((1, 4), 2.0))
    for x, (twice, sums) in zip(inputs, answers):
        np.testing.assert_array_equal(twice, x * 2)
        np.testing.assert_array_equal(sums, x.sum(axis=1))
    assert calls[0] == 1
    merged = calls[1:]
    assert sum(merged) == sum(len(x) for x in inputs) == 39
    assert max(merged) <= 8 and len(merged) < 20  # merged, within max_batch
    assert len(merged) == 6  # greedy packing of the 1,2,3,1,2,3... sizes into 8s


def test_batcher_error_reaches_every_waiter_and_it_keeps_working():
    def fails_on_negative(batch):
        if (batch < 0).any():
            raise ValueError("negative input")
        return (batch + 1,)

    batcher = MicroBatcher(fails_on_negative, max_batch=8)

    async def main():
        bad = await asyncio.gather(batcher(np.array([[-1.0]])), return_exceptions=True)
        good = await batcher(np.array([[1.0], [2.0]]))
        return bad, good

    bad, good = asyncio.run(main())
    batcher.close()
    assert isinstance(bad[0], ValueError)
    np.testing.assert_array_equal(good[0], [[2.0], [3.0]])


def test_run_model_refuses_incomplete_and_inconsistent_folders(tmp_path):
    from serving.run_folder import RunFolderError
    from serving.runtime import RunModel

    with pytest.raises(RunFolderError, match="config.json does not exist"):
        RunModel(tmp_path)
    (tmp_path / "config.json").write_text(
        '{"image_shape": [8, 8], "input_shape": [64], "pixel_max": 16, "offset": 0, '
        '"latent_dim": 16}'
    )
    with pytest.raises(RunFolderError, match="lacks encoder.keras, classifier.keras, kmeans.npz"):
        RunModel(tmp_path)


@pytest.mark.slow
def test_run_model_matches_keras_and_rejects_mismatched_centroids(digits_run, reference,
                                                                  digits_images, tmp_path):
    from serving.run_folder import RunFolderError
    from serving.runtime import RunModel

    raw, _ = digits_images
    model = RunModel(digits_run, max_chunk=8)
    x = reference._preprocess(raw[:19])  # 19 = 8 + 8 + 3: padded last chunk
    latents, probabilities = model.predict(x)
    np.testing.assert_allclose(latents, reference.latents(raw[:19]), atol=1e-5)
    np.testing.assert_allclose(probabilities, reference.probabilities(raw[:19]), atol=1e-5)

    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy)
    np.savez(copy / "kmeans.npz", centroids=np.zeros((10, 3), np.float32),
             cluster_to_label=np.arange(10))
    with pytest.raises(RunFolderError, match=r"centroids are \(10, 3\), expected \(clusters, 16\)"):
        RunModel(copy)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_run_model_forward_pass_on_other_backends(digits_run, python_subprocess, backend):
    """The tf.function and torch paths give what the loaded Keras models give."""
    code = f"""
import numpy as np
from serving.runtime import RunModel
model = RunModel({str(digits_run)!r}, max_chunk=8)
x = np.random.default_rng(0).random((19, 64)).astype("float32")
latents, probabilities = model.predict(x)
# Loaded the ordinary way (initializers run), not as the service loads them.
import keras
encoder = keras.saving.load_model({str(digits_run / "encoder.keras")!r})
classifier = keras.saving.load_model({str(digits_run / "classifier.keras")!r})
expected = encoder.predict(x, verbose=0)
assert latents.shape == (19, 16) and probabilities.shape == (19, 10)
assert np.abs(latents - expected).max() < 1e-5, np.abs(latents - expected).max()
assert np.abs(probabilities - classifier.predict(expected, verbose=0)).max() < 1e-5
print("ok", __import__("keras").backend.backend())
"""
    proc = python_subprocess(code, backend=backend)
    assert proc.stdout.split() == ["ok", backend]


@pytest.mark.slow
def test_fast_load_gives_every_weight_and_answer_of_an_ordinary_load(digits_run):
    """serving/fastload.py skips the initializers; the loaded models are the same."""
    import keras

    from serving.fastload import load_model
    from softvq_keras import Autoencoder  # noqa: F401 - registers the layers

    hook = keras.Variable._initialize_with_initializer
    x = np.random.default_rng(0).random((5, 64)).astype("float32")
    for name in ("encoder.keras", "classifier.keras", "autoencoder.keras"):
        fast = load_model(digits_run / name)
        ordinary = keras.saving.load_model(digits_run / name, safe_mode=True)
        assert len(fast.variables) == len(ordinary.variables) > 0
        for a, b in zip(fast.variables, ordinary.variables):  # same order; names get suffixes
            assert a.shape == b.shape, a.path
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b), err_msg=a.path)
        inputs = x if name != "classifier.keras" else x[:, :16]
        out_fast, out_ordinary = fast(inputs, training=False), ordinary(inputs, training=False)
        if isinstance(out_fast, dict):
            out_fast, out_ordinary = out_fast["reconstruction"], out_ordinary["reconstruction"]
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out_fast),
                                      keras.ops.convert_to_numpy(out_ordinary))
    assert keras.Variable._initialize_with_initializer is hook  # the patch is undone
    fresh = keras.Variable("glorot_uniform", shape=(3, 3))
    assert keras.ops.convert_to_numpy(fresh).any()  # initializers run again


def test_keras_imports_without_its_optional_extras(python_subprocess):
    """import_keras() leaves scikit-learn and matplotlib unimported, and importable."""
    code = """
import sys
from serving.fastload import import_keras
keras = import_keras()
assert keras.ops.sum(keras.ops.ones((2,))) == 2
print(sorted(m for m in ("sklearn", "matplotlib") if m in sys.modules))
import sklearn, matplotlib
print("importable")
"""
    proc = python_subprocess(code, backend="jax")
    assert proc.stdout.split("\n")[:2] == ["[]", "importable"]
