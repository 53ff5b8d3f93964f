"""`serving.code_model.CodeModel` on every quantizer, in process (no server).

Tiny untrained digits-shaped autoencoders (8x8 images, the MLP) around each
quantizer are saved as a run folder's `autoencoder.keras` and `config.json`,
loaded as the service loads them, and checked: the indices are the
autoencoder's own `"indices"`, the layout read from config.json (the OpenAPI
schema's) is the loaded layer's, and decoding the indices gives the
reconstruction for the hard quantizers, the codeword's decoding for soft VQ.
The real server is tested in test_http_codes.py.
"""

import json

import numpy as np
import pytest

from serving.codes import CodeLayout
from serving.run_folder import RunFolderError

pytestmark = pytest.mark.slow

CONFIG = {"image_shape": [8, 8], "input_shape": [64], "pixel_max": 16, "offset": 0.0,
          "latent_dim": 6, "labelled": True}


def _quantizer(model):
    from softvq_keras.layers import (
        FiniteScalarQuantizer, LookupFreeQuantizer, ResidualVectorQuantizer,
        SoftVectorQuantizer, VectorQuantizer)

    return {
        "vq": lambda: VectorQuantizer(num_codes=16, name="bottleneck"),
        "softvq": lambda: SoftVectorQuantizer(num_codes=16, name="bottleneck"),
        "fsq": lambda: FiniteScalarQuantizer(levels=[5, 4, 3], name="bottleneck"),
        "lfq": lambda: LookupFreeQuantizer(codebook_size=16, name="bottleneck"),
        "rvq": lambda: ResidualVectorQuantizer(num_quantizers=3, num_codes=8,
                                               name="bottleneck"),
        "ae": lambda: __import__("softvq_keras").make_bottleneck("ae"),
    }[model]()


def _run(tmp_path, model, config_overrides=None):
    import keras

    from softvq_keras import build_autoencoder

    keras.utils.set_random_seed(1)
    layer = _quantizer(model)
    autoencoder, _ = build_autoencoder(layer, (64,), CONFIG["latent_dim"])
    run = tmp_path / model
    run.mkdir()
    autoencoder.save(run / "autoencoder.keras")
    config = {**CONFIG, "model": model, "bottleneck": layer.get_config(),
              **(config_overrides or {})}
    (run / "config.json").write_text(json.dumps(config, default=str))
    return run, config


def _load(run, config):
    from serving.code_model import CodeModel
    from serving.reconstruct import Reconstructor
    from serving.validation import ImageSpec

    # One compiled shape for the reconstruction; 4-image chunks (padded) for the codes.
    reconstructor = Reconstructor(run, ImageSpec.from_config(config, 8), max_chunk=1)
    return reconstructor, CodeModel(reconstructor, 8, config, max_chunk=4)


@pytest.mark.parametrize("model, stages, columns", [
    ("vq", [16], 0), ("fsq", [60], 0), ("lfq", [16], 0), ("rvq", [8, 8, 8], 3),
])
def test_hard_quantizers_decode_their_indices_to_the_reconstruction(tmp_path, model,
                                                                    stages, columns):
    run, config = _run(tmp_path, model)
    reconstructor, codes = _load(run, config)
    assert codes.available and codes.reason is None
    assert list(codes.layout.codes_per_stage) == stages and codes.layout.columns == columns
    assert CodeLayout.from_config(config, 8) == codes.layout  # the schema's layout
    x = np.random.default_rng(0).uniform(0, 1, size=(11, 64)).astype(np.float32)  # 11: chunks
    indices = codes.indices(x)
    assert indices.dtype == np.int32 and indices.shape == (11,) + ((columns,) if columns else ())
    out = reconstructor.model(x, training=False)
    np.testing.assert_array_equal(indices, np.asarray(out["indices"]))
    assert indices.min() >= 0 and (indices < np.asarray(stages)).all()
    images = codes.decode(indices)
    assert images.shape == (11, 8, 8)
    np.testing.assert_allclose(images, reconstructor.decode(x).reshape(11, 8, 8), atol=1e-4)


def test_soft_vq_decodes_the_codeword_of_its_most_probable_code(tmp_path):
    run, config = _run(tmp_path, "softvq")
    reconstructor, codes = _load(run, config)
    x = np.random.default_rng(0).uniform(0, 1, size=(5, 64)).astype(np.float32)
    indices = codes.indices(x)
    out = reconstructor.model(x, training=False)
    np.testing.assert_array_equal(indices, np.argmax(np.asarray(out["code_probs"]), axis=1))
    model = reconstructor.model
    h = np.asarray(model.get_layer("bottleneck").codebook)[indices]
    for name in ("decoder_dense_0", "decoder_dense_1", "decoder_dense_2", "decoder_output"):
        h = model.get_layer(name)(h)
    expected = np.clip(np.asarray(h) * 16, 0, 16).reshape(5, 8, 8)
    np.testing.assert_allclose(codes.decode(indices), expected, atol=1e-4)


def test_runs_without_codes_say_why(tmp_path):
    run, config = _run(tmp_path, "ae")
    _, codes = _load(run, config)
    assert not codes.available and codes.layout is None
    assert codes.reason.startswith("no quantizer: this run's bottleneck (ae, "
                                   "IdentityBottleneck) has no discrete codes")
    (run / "autoencoder.keras").unlink()
    _, codes = _load(run, config)
    assert not codes.available
    assert codes.reason.startswith("no autoencoder: this run was served without "
                                   "autoencoder.keras")


def test_a_config_that_disagrees_with_the_layer_stops_the_load(tmp_path):
    run, config = _run(tmp_path, "vq")
    config["bottleneck"]["num_codes"] = 32
    with pytest.raises(RunFolderError, match=r"config.json's bottleneck settings give \[32\] "
                       r"codes per stage .* VectorQuantizer has \[16\]"):
        _load(run, config)
