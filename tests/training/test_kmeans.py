"""`softvq_keras.evaluation.fit_kmeans` against scikit-learn's default KMeans.

Backend-independent (NumPy and scikit-learn only), so it runs once, here.
"""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from softvq_keras.evaluation import cluster_accuracy, fit_kmeans


@pytest.fixture(scope="module")
def mnist_latents(shared_data_dir):
    """Real MNIST test images projected on 32 principal components (latent-like)."""
    from sklearn.decomposition import PCA

    path = shared_data_dir / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"no mnist.npz in {shared_data_dir}")
    with np.load(path) as d:
        x = d["x_test"].reshape(len(d["x_test"]), -1).astype(np.float32) / 255.0
        y = d["y_test"].reshape(-1).astype(np.int64)
    return PCA(32, random_state=0).fit_transform(x[:6000]), y[:6000]


def test_inertia_and_accuracy_match_scikit_learn_on_mnist(mnist_latents):
    z, y = mnist_latents
    with threadpool_limits(limits=1):
        ours = fit_kmeans(z, 10, n_init=10, seed=0)
        ref = KMeans(10, n_init=10, random_state=0).fit(z.astype(np.float64))
    assert ours.cluster_centers_.shape == (10, 32) and ours.labels_.shape == (6000,)
    assert ours.inertia_ <= 1.001 * ref.inertia_
    assert ours.inertia_ >= 0.99 * ref.inertia_  # a real inertia, not a shortcut
    np.testing.assert_array_equal(ours.predict(z), ours.labels_)
    gaps = z - ours.cluster_centers_[ours.labels_]
    assert ours.inertia_ == pytest.approx(float(np.sum(gaps.astype(np.float64) ** 2)), rel=1e-9)
    assert abs(cluster_accuracy(y, ours.labels_) - cluster_accuracy(y, ref.labels_)) <= 0.005


def test_same_seed_same_labels_other_seed_other_draws(mnist_latents):
    z, _ = mnist_latents
    z = z[:2000]
    with threadpool_limits(limits=1):
        a = fit_kmeans(z, 10, n_init=3, seed=7)
        b = fit_kmeans(z, 10, n_init=3, seed=7)
        c = fit_kmeans(z, 10, n_init=1, seed=8)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_accuracy_on_a_saved_runs_latents_matches_scikit_learn(finished_run):
    """The training latents of the session's finished digits run."""
    import keras
    from sklearn.datasets import load_digits

    from training.data import open_data

    data = open_data("digits")
    encoder = keras.saving.load_model(finished_run / "encoder.keras")
    z = data.predict(encoder, "train")
    y = data.labels("train")
    with threadpool_limits(limits=1):
        ours = fit_kmeans(z, 10, n_init=20, seed=0)
        ref = KMeans(10, n_init=20, random_state=0).fit(np.asarray(z, np.float64))
    assert len(z) == len(load_digits().target) - 297
    assert ours.inertia_ <= 1.001 * ref.inertia_
    assert abs(cluster_accuracy(y, ours.labels_) - cluster_accuracy(y, ref.labels_)) <= 0.005


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match=r"needs an \(N, D\) array with N >= n_clusters=10; got shape \(5, 2\)"):
        fit_kmeans(np.zeros((5, 2)), 10)
    with pytest.raises(ValueError, match=r"needs n_init >= 1 .*got n_init=0, n_clusters=3"):
        fit_kmeans(np.zeros((5, 2)), 3, n_init=0)
    with pytest.raises(ValueError, match=r"got n_init=10, n_clusters=None"):
        fit_kmeans(np.zeros((5, 2)), None, n_init=10)


def test_the_thread_count_keeps_the_inertia(mnist_latents):
    """Other thread counts batch the restarts differently (BLAS may round the
    other product shapes differently in the last bit): the same inertia."""
    z, _ = mnist_latents
    one = fit_kmeans(z[:3000], 10, n_init=6, seed=3, n_threads=1)
    two = fit_kmeans(z[:3000], 10, n_init=6, seed=3, n_threads=2)
    assert two.inertia_ == pytest.approx(one.inertia_, rel=1e-3)
    assert abs(cluster_accuracy(one.labels_, two.labels_) - 1.0) <= 0.01


def test_the_result_is_a_lloyd_fixed_point(mnist_latents):
    """Converged: every point at its nearest centroid, every centroid (nearly) the
    mean of its points (scikit-learn's tolerance: shift^2 <= 1e-4 x mean variance)."""
    z, _ = mnist_latents
    z = z.astype(np.float64)
    km = fit_kmeans(z, 10, n_init=2, seed=0)
    means = np.stack([z[km.labels_ == c].mean(axis=0) for c in range(10)])
    shift = np.sum((means - km.cluster_centers_) ** 2)
    assert shift <= 1e-4 * np.mean(np.var(z, axis=0))


def test_duplicate_points_and_empty_clusters():
    """Three distinct points, five clusters: k-means++ draws duplicates, Lloyd
    relocates the empty clusters; every point ends on a centroid (inertia 0)."""
    z = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]), 20, axis=0)
    km = fit_kmeans(z, 5, n_init=4, seed=0)
    assert km.inertia_ == pytest.approx(0.0, abs=1e-9)
    assert len(np.unique(km.labels_)) == 3


def test_without_numba_it_falls_back_to_scikit_learn(mnist_latents, monkeypatch):
    import sys

    from softvq_keras import kmeans

    z, _ = mnist_latents
    z = z[:2000]
    monkeypatch.setattr(kmeans, "_KERNELS", None)
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.setitem(sys.modules, "softvq_keras.kmeans_kernels", None)
    monkeypatch.delattr(sys.modules["softvq_keras"], "kmeans_kernels", raising=False)
    with pytest.warns(UserWarning, match="numba is not installed"):
        without = fit_kmeans(z, 10, n_init=4, seed=0)
    ref = KMeans(10, n_init=4, random_state=0, algorithm="elkan").fit(z.astype(np.float32))
    np.testing.assert_allclose(without.cluster_centers_, ref.cluster_centers_, rtol=1e-6)
    assert without.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)


@pytest.mark.parametrize("n_clusters", [1, 2])
def test_one_dimension_and_a_single_cluster(n_clusters):
    """K = 1: the centroid is the mean. D = 1, K = 2 on two clumps: their means."""
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-5.0, 0.1, 300), rng.normal(5.0, 0.1, 200)])[:, None]
    km = fit_kmeans(z, n_clusters, n_init=3, seed=0)
    if n_clusters == 1:
        np.testing.assert_allclose(km.cluster_centers_, [[z.mean()]], atol=1e-5)
        assert km.inertia_ == pytest.approx(float(np.sum((z - z.mean()) ** 2)), rel=1e-6)
    else:
        centers = np.sort(km.cluster_centers_[:, 0])
        np.testing.assert_allclose(centers, [z[:300].mean(), z[300:].mean()], atol=1e-5)
        assert np.bincount(km.labels_).tolist() in ([300, 200], [200, 300])


def test_an_empty_cluster_takes_the_farthest_point():
    """Lloyd from centres where one gets no point: it moves onto the point farthest
    from its centre (scikit-learn's rule) and the two clumps end apart. Without
    the relocation it would stay empty, far away, and the inertia would be the
    single cluster's."""
    from softvq_keras.kmeans import batched_lloyd

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-5.0, 0.1, (300, 2)), rng.normal(5.0, 0.1, (200, 2))])
    x = x.astype(np.float32)
    init = np.array([[0.0, 0.0], [1000.0, 1000.0]], dtype=np.float32)
    [(_, centers, _)] = batched_lloyd(x, 2, lambda r: init, 1, 300, 1e-8)
    labels = np.argmin(((x[:, None, :] - centers[None]) ** 2).sum(axis=2), axis=1)
    np.testing.assert_allclose(np.sort(centers[:, 0]), [x[:300, 0].mean(), x[300:, 0].mean()],
                               atol=1e-4)
    assert sorted(np.bincount(labels).tolist()) == [200, 300]


def test_a_restart_is_the_same_alone_in_a_batch_and_in_any_chunking(mnist_latents):
    """Batching is only a speed-up: restart r reaches the same inertia (to 0.1 %:
    other product shapes may round a near-tie differently) alone, in a batch of
    five, and with a chunk size that leaves a ragged last chunk; the same call
    twice is bit-identical; and it stops at max_iter when asked to."""
    from softvq_keras.kmeans import batched_lloyd

    z, _ = mnist_latents
    x = np.ascontiguousarray(z[:3000] - z[:3000].mean(axis=0), dtype=np.float32)
    starts = [x[np.random.default_rng(r).choice(len(x), 10, replace=False)] for r in range(5)]
    together = batched_lloyd(x, 10, lambda r: starts[r], 5, 300, 1e-6)
    again = batched_lloyd(x, 10, lambda r: starts[r], 5, 300, 1e-6)
    ragged = batched_lloyd(x, 10, lambda r: starts[r], 5, 300, 1e-6, chunk=7)
    for r in range(5):
        [alone] = batched_lloyd(x, 10, lambda _: starts[r], 1, 300, 1e-6)
        np.testing.assert_array_equal(together[r][1], again[r][1])
        for other in (together[r], ragged[r]):
            assert other[0] == pytest.approx(alone[0], rel=1e-3)
            assert other[2] > 3
            # The inertia is the returned centres' own (each row at its nearest).
            gaps = ((x[:, None, :] - other[1][None]) ** 2).sum(axis=2).min(axis=1)
            assert other[0] == pytest.approx(float(gaps.sum()), rel=1e-4)
    [capped] = batched_lloyd(x, 10, lambda _: starts[0], 1, 3, 1e-6)
    assert capped[2] == 3 and capped[0] > together[0][0]
