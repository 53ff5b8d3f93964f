"""K-means for the evaluation protocol: k-means++ seeding and exact Lloyd with bounds.

`kmeans_restarts(x, n_clusters, n_init, seed)` runs `n_init` independent
restarts, each one k-means++ seeding (Arthur & Vassilvitskii 2007, with
scikit-learn's greedy `2 + log(k)` local trials) followed by Lloyd iterations
to convergence, and returns the centroids of the restart with the lowest
inertia. The Lloyd iterations are exact (the same assignments and centroids
as plain Lloyd) but skip distances with bounds: every point keeps an upper
bound on the distance to its centroid, Hamerly's (2010) lower bound on the
distance to all the other centroids, and Elkan's (2003) lower bound on the
distance to each one; a distance is computed only where the bounds no longer
prove the assignment. The bounds are stored against each centroid's
accumulated drift, so following the centroids costs nothing per point. The
restarts are compiled with numba (`nogil`, `softvq_keras.kmeans_kernels`) and
run on a pool of threads, one restart per task, so the cores share the
restarts and never wait on one another (no per-iteration barrier, unlike a
multi-threaded assignment step), and the result does not depend on the
thread count.

Convergence is scikit-learn's: stop when no label changes or when the summed
squared centroid shift is at most `tol` times the mean per-feature variance;
an empty cluster takes the point farthest from its centroid, as in
scikit-learn. Data are centred and cast to float32 first (centroids are kept
in float32 and their sums in float64); the bounds are kept in float64.

numba is imported on the first call, which compiles the kernels (about 5 s)
or loads them from numba's disk cache (about 0.5 s).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_KERNELS = None


def _compile():
    """The numba kernels (`softvq_keras.kmeans_kernels`), imported on first use."""
    global _KERNELS
    if _KERNELS is None:
        from softvq_keras import kmeans_kernels

        _KERNELS = (kmeans_kernels.kmeans_plusplus, kmeans_kernels.elkan,
                    kmeans_kernels.inertia_of)
    return _KERNELS


def usable_cores():
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def kmeans_restarts(x, n_clusters=10, n_init=100, seed=0, max_iter=300, tol=1e-4,
                    n_threads=None):
    """The best of `n_init` k-means++ + Lloyd restarts (see the module docstring).

    Args:
        x: `(N, D)` array (any float dtype; computed in float32 after centring).
        n_clusters: K.
        n_init: restarts; the one of lowest inertia is kept (ties: the first).
        seed: seeds every restart's k-means++ draws (one NumPy generator).
        max_iter: Lloyd iterations at most per restart (scikit-learn's 300).
        tol: relative tolerance on the summed squared centroid shift, times
            the mean per-feature variance (scikit-learn's convention).
        n_threads: threads sharing the restarts (default: the usable cores).
            The result does not depend on it.

    Returns:
        `(centers, n_iter)`: float64 `(K, D)` centroids in the input's
        coordinates, and the Lloyd iterations of the kept restart.
    """
    kmeans_plusplus, elkan, inertia_of = _compile()
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0)
    xc = np.ascontiguousarray(x64 - mean, dtype=np.float32)
    n = len(xc)
    scaled_tol = float(np.mean(np.var(x64, axis=0)) * tol)
    trials = 2 + int(np.log(n_clusters))
    rng = np.random.default_rng(seed)
    firsts = rng.integers(n, size=n_init)
    draws = rng.random((n_init, max(n_clusters - 1, 0), trials))

    def restart(r):
        init = kmeans_plusplus(xc, firsts[r], draws[r], n_clusters)
        centers, labels, n_iter = elkan(xc, init, max_iter, scaled_tol)
        return inertia_of(xc, centers, labels), centers, n_iter

    workers = max(1, min(n_threads or usable_cores(), n_init))
    if workers == 1:
        results = [restart(r) for r in range(n_init)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(restart, range(n_init)))
    best = min(range(n_init), key=lambda r: results[r][0])
    _, centers, n_iter = results[best]
    return centers.astype(np.float64) + mean, n_iter
