"""The modern quantizers use their codes on the paper's MLP (issue 24).

Without `latent_norm="batch"` (the presets' setting) FSQ and LFQ collapse on
digits: the encoder's projected latent drifts to an offset shared by every
sample, and 2 epochs end on 1 of 32 codes.
"""

import json

import pytest

from training.fit import run

SHORT = dict(epochs=2, kmeans_init=1, probe_epochs=1, raw_baseline=False, verbose=0, seed=0)


@pytest.mark.parametrize("model", ["fsq", "lfq"])
def test_fsq_and_lfq_use_their_codes_on_digits(tmp_path, model):
    folder = run("digits", model, out=tmp_path / model, **SHORT)
    metrics = json.loads((folder / "metrics.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["bottleneck"]["latent_norm"] == "batch"
    assert metrics["codes_per_stage"] == [32]
    # Measured (2 epochs, seed 0): fsq 31 of 32 codes (perplexity 24.4), lfq 24
    # (16.5); with latent_norm="none" (the reference layer) 1 code.
    assert metrics["codebook_usage"] >= 0.5, metrics["codebook_usage"]
    assert metrics["perplexity"] >= 10.0, metrics["perplexity"]


def test_rvq_starts_from_kmeans_and_the_reference_layers_stay_the_default():
    # rvq's stages collapse to one code from the random codebook (digits, 10
    # epochs: usage 3 %); K-means after epoch 1 is its training.fit default.
    from softvq_keras import FiniteScalarQuantizer, LookupFreeQuantizer
    from training.settings import FitSettings

    assert FitSettings("digits", "rvq").codebook_init == "kmeans"
    assert FitSettings("digits", "vq").codebook_init == "random"
    assert FitSettings("digits", "rvq", codebook_init="random").codebook_init == "random"
    # The layers keep the reference's behaviour (parity) unless asked.
    assert FiniteScalarQuantizer((8, 4)).latent_norm is None
    assert LookupFreeQuantizer(32).latent_norm is None
