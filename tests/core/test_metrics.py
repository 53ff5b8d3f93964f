"""Clustering accuracy, NMI, the cluster-to-label map, K-means and the linear
probe against cases whose answers are known by hand."""

import numpy as np
import pytest

from softvq_keras.evaluation import (
    cluster_accuracy,
    cluster_label_map,
    clustering_scores,
    fit_kmeans,
    linear_probe,
    nmi,
    probe_schedule,
)

LABELS = np.repeat(np.arange(10), 7)  # 70 samples, 10 classes


def test_a_permuted_labelling_scores_one():
    permutation = np.random.default_rng(0).permutation(10)
    clusters = permutation[LABELS]
    assert not np.array_equal(clusters, LABELS)
    assert cluster_accuracy(LABELS, clusters) == 1.0
    assert nmi(LABELS, clusters) == pytest.approx(1.0)


def test_hungarian_accuracy_of_a_known_confusion():
    # Three clusters x three labels, counts (rows = cluster, cols = label):
    #   c0: [5, 3, 0]    The best one-to-one matching is c0->l1 (3)? No:
    #   c1: [4, 0, 1]    candidates: c0->l0, c1->l2, c2->l1: 5+1+6 = 12
    #   c2: [0, 6, 2]               c0->l1, c1->l0, c2->l2: 3+4+2 = 9
    #                               c0->l0, c1->l1, c2->l2: 5+0+2 = 7 ...
    # The maximum is 12 (c0->l0, c1->l2, c2->l1): accuracy 12 / 21.
    counts = np.array([[5, 3, 0], [4, 0, 1], [0, 6, 2]])
    clusters, labels = [], []
    for c in range(3):
        for l in range(3):
            clusters += [c] * counts[c, l]
            labels += [l] * counts[c, l]
    assert cluster_accuracy(labels, clusters) == pytest.approx(12 / 21)
    # A greedy majority vote would map c1 to l0 too (counts 4): Hungarian must not.
    np.testing.assert_array_equal(cluster_label_map(labels, clusters), [0, 2, 1])


def test_accuracy_with_more_labels_than_clusters():
    # Labels 0..3, only two clusters: at most two labels can be matched.
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    clusters = [0, 0, 0, 0, 1, 1, 1, 1]
    assert cluster_accuracy(labels, clusters) == pytest.approx(4 / 8)


def test_nmi_of_independent_labelling_is_zero_and_of_a_merge_known():
    labels = np.array([0, 0, 1, 1])
    assert nmi(labels, [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # Merging two of four equal classes: I = H(c) = ln 2, H(y) = ln 4:
    # NMI = 2 ln2 / (ln4 + ln2) = 2/3.
    assert nmi([0, 1, 2, 3] * 3, [0, 0, 1, 1] * 3) == pytest.approx(2 / 3)


def test_cluster_label_map_with_extra_clusters_uses_the_majority():
    labels = [0, 0, 0, 1, 1, 1, 1]
    clusters = [2, 2, 0, 1, 1, 1, 0]
    # Hungarian: c2->0 (2), c1->1 (3); c0 (one 0, one 1) is left over and gets
    # its majority (tie -> the lowest label, 0).
    np.testing.assert_array_equal(cluster_label_map(labels, clusters), [0, 1, 0])


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        cluster_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        cluster_label_map([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="at least one sample"):
        cluster_accuracy([], [])


def blobs(n_per_class=30, classes=4, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    x = centers[y] + rng.normal(scale=0.3, size=(len(y), dim))
    return x.astype("float32"), y


def test_kmeans_recovers_well_separated_blobs():
    x, y = blobs()
    km = fit_kmeans(x, n_clusters=4, n_init=10, seed=0)
    assert km.n_init == 10 and km.n_clusters == 4
    assert cluster_accuracy(y, km.labels_) == 1.0
    scores = clustering_scores(x, y, n_clusters=4, n_init=10)
    assert scores == pytest.approx({"clustering_accuracy": 1.0, "nmi": 1.0})


def test_kmeans_defaults_to_the_papers_protocol():
    x, _ = blobs(n_per_class=12)
    km = fit_kmeans(x)
    assert (km.n_clusters, km.n_init) == (10, 100)


def test_linear_probe_separates_separable_latents():
    # min_updates=0: these 20 epochs (80 steps) suffice.
    # Class c sits at 3 * e_c (plus noise) in 16-D: linearly separable.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, size=600)
    x = (3.0 * np.eye(16)[y] + rng.normal(scale=0.4, size=(600, 16))).astype("float32")
    model, accuracy = linear_probe(
        x[:450], y[:450], x[450:], y[450:], epochs=20, min_updates=0
    )
    assert accuracy > 0.95
    assert [type(l).__name__ for l in model.layers] == ["Dense"]
    assert model.layers[0].units == 10
    assert model.layers[0].activation.__name__ == "softmax"
    _, none = linear_probe(x[:100], y[:100], epochs=1, min_updates=0)
    assert none is None


def test_linear_probe_is_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, size=600)
    x = (3.0 * np.eye(16)[y] + rng.normal(scale=0.4, size=(600, 16))).astype("float32")
    _, accuracy = linear_probe(
        x[:450], rng.permutation(y[:450]), x[450:], y[450:], epochs=5, min_updates=0
    )
    assert accuracy < 0.3


def test_linear_probe_trains_at_least_min_updates():
    x = np.random.default_rng(4).normal(size=(300, 4)).astype("float32")
    y = np.arange(300) % 10
    # 300 samples at batch 128: 3 steps per epoch. 2 epochs = 6 steps < 20,
    # so the data is repeated ceil(20 / 6) = 4 times: 1,200 samples, 10 steps
    # per epoch, 2 epochs = 20 steps.
    model, _ = linear_probe(x, y, epochs=2, min_updates=20)
    assert int(model.optimizer.iterations) == 20
    model, _ = linear_probe(x, y, epochs=2, min_updates=0)
    assert int(model.optimizer.iterations) == 6


def test_probe_schedule_matches_the_steps_linear_probe_takes():
    # MNIST: 60,000 / 128 = 469 steps per epoch, 20 epochs = 9,380 >= 2,000.
    assert probe_schedule(60_000, 20) == (1, 469)
    # digits' 1,500: 12 steps per epoch, 240 in 20 epochs -> repeated 9 times.
    assert probe_schedule(1_500, 20) == (9, 106)
    x = np.random.default_rng(5).normal(size=(300, 4)).astype("float32")
    repeats, per_epoch = probe_schedule(300, 2, min_updates=20)
    model, _ = linear_probe(x, np.arange(300) % 10, epochs=2, min_updates=20)
    assert (repeats, 2 * per_epoch) == (4, int(model.optimizer.iterations))
