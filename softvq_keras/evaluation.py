"""Downstream metrics of a representation (the paper's Tables 1 and 2).

Clustering: K-means with `n_init` restarts keeping the lowest inertia
(`fit_kmeans`: k-means++ and Lloyd with the restarts batched into matrix
products, compiled, shared among the cores; `softvq_keras.kmeans`),
scored by Hungarian-matched accuracy
(`scipy.optimize.linear_sum_assignment`) and NMI (scikit-learn, arithmetic
normalization). Classification: a linear softmax probe, `Dense(10)` trained
with Adam (lr 0.01, batch 128) on the training latents.
"""

import numbers

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import confusion_matrix, normalized_mutual_info_score


def cluster_label_map(y_true, clusters, n_clusters=None):
    """Hungarian map `cluster id -> label` maximizing the matched count.

    Returns an int array of length `n_clusters`; clusters left unmatched (more
    clusters than labels) get the majority label of their members (or -1).
    """
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    clusters = np.asarray(clusters).astype(np.int64).reshape(-1)
    if y_true.shape != clusters.shape:
        raise ValueError(
            f"y_true and clusters differ in length: {y_true.size} vs {clusters.size}."
        )
    n_clusters = int(n_clusters or clusters.max() + 1)
    n_labels = int(max(y_true.max() + 1, 1))
    counts = confusion_matrix(
        clusters, y_true, labels=np.arange(max(n_clusters, n_labels))
    )[:n_clusters, :n_labels]
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.full(n_clusters, -1, dtype=np.int64)
    mapping[rows] = cols
    for c in np.where(mapping < 0)[0]:
        if counts[c].sum():
            mapping[c] = int(np.argmax(counts[c]))
    return mapping


def cluster_accuracy(y_true, clusters):
    """Accuracy of the best one-to-one matching of clusters to labels."""
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    clusters = np.asarray(clusters).astype(np.int64).reshape(-1)
    if y_true.shape != clusters.shape:
        raise ValueError(
            f"y_true and clusters differ in length: {y_true.size} vs {clusters.size}."
        )
    if y_true.size == 0:
        raise ValueError("cluster_accuracy needs at least one sample.")
    n = int(max(clusters.max(), y_true.max()) + 1)
    counts = confusion_matrix(clusters, y_true, labels=np.arange(n))
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y_true.size)


def nmi(y_true, clusters):
    """Normalized mutual information, 2 I / (H(y) + H(c))."""
    return float(normalized_mutual_info_score(y_true, clusters))


class KMeansResult:
    """What `fit_kmeans` returns: scikit-learn's fitted-attribute names.

    Attributes (and `predict(x)`, the nearest centroid of each row):
        cluster_centers_: `(n_clusters, D)` float64 centroids.
        labels_: `(N,)` int64 index of each row's nearest centroid.
        inertia_: float, the sum of squared distances of the rows to their
            centroids, computed in float64.
        n_clusters, n_init: the protocol it was fitted with.
    """

    def __init__(self, cluster_centers, labels, inertia, n_init):
        self.cluster_centers_ = cluster_centers
        self.labels_ = labels
        self.inertia_ = inertia
        self.n_clusters = len(cluster_centers)
        self.n_init = n_init

    def predict(self, x):
        """Index of the nearest centroid (squared Euclidean, float64) of every row of `x`."""
        return _nearest(np.asarray(x, dtype=np.float64), self.cluster_centers_)


def _nearest(x64, centers):
    distances = (
        np.sum(x64**2, axis=1, keepdims=True) - 2.0 * x64 @ centers.T
        + np.sum(centers**2, axis=1)
    )
    return np.argmin(distances, axis=1).astype(np.int64)


def fit_kmeans(latents, n_clusters=10, n_init=100, seed=0, n_threads=None):
    """K-means with `n_init` k-means++ initializations; keeps the lowest inertia.

    The paper's protocol (k-means++ seeding, Lloyd iterations to convergence,
    the best of `n_init`), with scikit-learn's conventions (greedy k-means++
    with `2 + log K` local trials, tolerance 1e-4 of the mean variance on the
    summed squared centroid shift, empty clusters take the farthest point).
    The restarts run together: each Lloyd assignment step scores a chunk of
    rows against the centres of a whole batch of restarts as one matrix
    product (BLAS sgemm), compiled with numba, one batch per thread
    (`softvq_keras.kmeans`). Side by side on this project's 2-core CPU it is
    8-12x faster than scikit-learn's KMeans at its best thread count, at the
    same inertia (`benchmarks/evaluation.py`, docs/RESULTS.md). numba comes
    with the `train` extra; without it this falls back to scikit-learn's
    Elkan KMeans on float32 (about 6x slower), with a warning.

    Deterministic for a given `seed` and `n_threads` (another thread count
    batches the restarts differently, which can change the last bits of the
    centres; `softvq_keras.kmeans`). The returned
    inertia and labels are recomputed in float64 from the centroids.

    Args:
        latents: `(N, D)` array.
        n_clusters: K.
        n_init: initializations; the one of lowest inertia is kept.
        seed: seeds the k-means++ draws.
        n_threads: threads sharing the restarts (default: the usable cores).

    Returns:
        A `KMeansResult` (`cluster_centers_`, `labels_`, `inertia_`).
    """
    if not all(isinstance(v, numbers.Integral) and v >= 1 for v in (n_init, n_clusters)):
        raise ValueError(f"fit_kmeans needs n_init >= 1 and n_clusters >= 1 (whole numbers); "
                         f"got n_init={n_init!r}, n_clusters={n_clusters!r}.")
    x = np.asarray(latents)
    if x.ndim != 2 or len(x) < n_clusters:
        raise ValueError(
            f"fit_kmeans needs an (N, D) array with N >= n_clusters={n_clusters}; "
            f"got shape {x.shape}."
        )
    try:
        from softvq_keras.kmeans import kmeans_restarts

        centers, _ = kmeans_restarts(x, n_clusters, n_init, seed, n_threads=n_threads)
    except ImportError:  # numba missing (Python shows this warning once per process)
        import warnings

        warnings.warn("numba is not installed: fit_kmeans runs scikit-learn's Elkan KMeans "
                      "(about 6x slower); pip install 'softvq-keras[train]' (or numba)",
                      stacklevel=2)
        centers = KMeans(
            n_clusters=n_clusters, n_init=n_init, random_state=seed, algorithm="elkan"
        ).fit(x.astype(np.float32)).cluster_centers_
    centers = np.asarray(centers, dtype=np.float64)
    x64 = x.astype(np.float64)
    labels = _nearest(x64, centers)
    inertia = float(np.sum((x64 - centers[labels]) ** 2))
    return KMeansResult(centers, labels, inertia, n_init)


def probe_schedule(num_train, epochs=20, batch_size=128, min_updates=2000):
    """`(repeats, updates_per_epoch)` of `linear_probe`: the training set is
    repeated `repeats` times within an epoch so that `epochs` epochs make at
    least `min_updates` Adam steps."""
    updates = int(epochs) * -(-int(num_train) // batch_size)
    repeats = max(1, -(-int(min_updates) // max(updates, 1)))
    return repeats, -(-int(num_train) * repeats // batch_size)


def linear_probe(
    z_train, y_train, z_test=None, y_test=None, epochs=20, learning_rate=0.01,
    batch_size=128, seed=0, num_classes=10, verbose=0, min_updates=2000, callbacks=None,
):
    """Train a softmax `Dense(num_classes)` on `z_train`; return (model, test acc).

    Trains `epochs` epochs of at least `min_updates / epochs` Adam steps each:
    a small training set is repeated within an epoch (20 epochs of MNIST are
    9,380 steps, but 20 epochs of the 1,500 digits only 240, too few for the
    probe to converge; many tiny epochs would cost their per-epoch overhead
    instead). The accuracy is None when no test split is given. `callbacks`
    go to `model.fit` (e.g. to score the probe along the way).
    """
    import keras

    keras.utils.set_random_seed(seed)
    z_train = np.asarray(z_train, dtype=np.float32)
    y_train = np.asarray(y_train)
    repeats, _ = probe_schedule(len(z_train), epochs, batch_size, min_updates)
    if repeats > 1:
        z_train, y_train = np.tile(z_train, (repeats, 1)), np.tile(y_train, repeats)
    model = keras.Sequential(
        [
            keras.Input((z_train.shape[1],), name="latent"),
            keras.layers.Dense(num_classes, activation="softmax", name="softmax"),
        ],
        name="classifier",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        z_train, y_train, epochs=epochs, batch_size=batch_size,
        verbose=verbose, shuffle=True, callbacks=callbacks,
    )
    accuracy = None
    if z_test is not None:
        probs = model.predict(np.asarray(z_test, np.float32), batch_size=4096, verbose=0)
        accuracy = float(np.mean(np.argmax(probs, axis=-1) == np.asarray(y_test)))
    return model, accuracy


def clustering_scores(latents, y_true, n_clusters=10, n_init=100, seed=0):
    """The paper's protocol: K-means fitted and scored on the same latents."""
    km = fit_kmeans(latents, n_clusters, n_init, seed)
    return {
        "clustering_accuracy": cluster_accuracy(y_true, km.labels_),
        "nmi": nmi(y_true, km.labels_),
    }
