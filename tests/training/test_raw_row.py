"""`training.raw_row`: the raw-pixel row computed once per dataset fingerprint."""

import json

import pytest

from training import raw_row
from training.data import open_data


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTVQ_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "raw-rows"


def test_computed_once_then_read_back_with_its_protocol(cache, capsys):
    data = open_data("digits")
    first = raw_row.raw_scores(data, kmeans_init=2, probe_epochs=1)
    assert first["cached"] is False
    assert first["sample"] == {"train": 1500, "test": 297, "whole": True}
    (path,) = cache.iterdir()
    stored = json.loads(path.read_text())
    assert path.name == f"digits-{stored['fingerprint']}.json"
    protocol = stored["computed_from"]["protocol"]
    assert (protocol["kmeans_init"], protocol["probe_epochs"], protocol["seed"]) == (2, 1, 0)
    assert len(stored["computed_from"]["data_sha256"]) == 64
    again = raw_row.raw_scores(open_data("digits"), kmeans_init=2, probe_epochs=1, say=print)
    assert again["cached"] is True
    assert "Raw-pixel baseline: reusing" in capsys.readouterr().out
    for key in ("clustering_accuracy", "nmi", "classification_accuracy"):
        assert again[key] == first[key]
    assert first["classification_accuracy"] > 0.5 and first["clustering_accuracy"] > 0.4


def test_fingerprint_follows_data_preprocessing_and_protocol():
    data = open_data("digits")
    options = dict(kmeans_init=100, probe_epochs=20, n_clusters=10, sample=None)
    key, description = raw_row.fingerprint(data, **options)
    assert raw_row.fingerprint(open_data("digits"), **options)[0] == key
    assert raw_row.fingerprint(data, **{**options, "kmeans_init": 10})[0] != key
    assert raw_row.fingerprint(data, **{**options, "probe_epochs": 5})[0] != key
    x, y = data.source.arrays["test"]
    changed = x.copy()
    changed.flat[0] = changed.flat[0] + 1
    data.source.arrays["test"] = (changed, y)
    assert raw_row.fingerprint(data, **options)[0] != key
    data.source.arrays["test"] = (x, y)
    data.info.offset = -0.5  # another preprocessing
    assert raw_row.fingerprint(data, **options)[0] != key
    assert description["preprocessing"]["split"] == "given"
