"""K-means for the evaluation protocol: k-means++ seeding, Lloyd batched over the restarts.

`kmeans_restarts(x, n_clusters, n_init, seed)` runs `n_init` independent
restarts, each one k-means++ seeding (Arthur & Vassilvitskii 2007, with
scikit-learn's greedy `2 + log(k)` local trials) followed by Lloyd iterations
to convergence, and returns the centroids of the restart with the lowest
inertia.

The restarts run together. Each thread holds a batch of restart slots; one
Lloyd iteration advances every slot of the batch, and its assignment step is
one matrix product of a chunk of rows by the centres of all the slots
(`x.c - |c|^2 / 2`, the nearest centre scores highest; BLAS sgemm, then an
argmax that vectorizes over the rows), so the distances run at the speed of
a dense GEMM instead of one centre at a time. A restart that converges gives
its slot to the next restart of the thread (k-means++ seeds it), so the
batch stays full until the restarts run out. The cluster sums follow the
label changes (float64), so the update step costs O(K D) per slot.
Restart `r` runs on thread `r % n_threads` and each thread fills its slots
in order, so a seed and a thread count give one result. Other thread counts
give other batch shapes; BLAS may round a product of another shape
differently in the last bit (measured with scipy's OpenBLAS: never at this
chunk size on MNIST, but with chunks under ~100 rows), which can send a
near-tie point, and then a restart, elsewhere: the kept inertia stays the
same to a small fraction of a percent, the centres need not be bit-identical.

Convergence is scikit-learn's: stop when no label changes or when the summed
squared centroid shift is at most `tol` times the mean per-feature variance;
an empty cluster takes the point farthest from its centre, as in
scikit-learn. Data are centred and cast to float32 first (centroids are kept
in float32 and their sums in float64); the inertia that picks the best
restart is recomputed exactly from the final centres.

The kernels are compiled with numba (`nogil`, `softvq_keras.kmeans_kernels`),
on the first call (about 5 s) or loaded from numba's disk cache (about 0.5 s).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_KERNELS = None


def _compile():
    """The numba kernels module (`softvq_keras.kmeans_kernels`), imported on first use."""
    global _KERNELS
    if _KERNELS is None:
        import scipy.linalg.cython_blas  # noqa: F401  (numba's BLAS; loaded before limiting it)

        from softvq_keras import kmeans_kernels

        _KERNELS = kmeans_kernels
    return _KERNELS


def usable_cores():
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def batched_lloyd(xc, n_clusters, initial_centers, n_restarts, max_iter, tol, n_threads=1,
                  chunk=1024):
    """Lloyd to convergence for `n_restarts` restarts, batched (module docstring).

    Args:
        xc: `(N, D)` float32, C-contiguous.
        n_clusters: K.
        initial_centers: `r -> (K, D)` float32 starting centres of restart `r`
            (called on the thread that runs the restart).
        n_restarts: restarts `0 .. n_restarts - 1`.
        max_iter: Lloyd iterations (update + assignment) at most per restart.
        tol: absolute bound on the summed squared centroid shift.
        n_threads: threads; restart `r` runs on thread `r % n_threads`.
        chunk: rows per matrix product.

    Returns:
        `[(inertia, centers (K, D) float32, n_iter)]` per restart (the labels
        are each row's nearest centre).
    """
    kernels = _compile()
    n, d = xc.shape
    k = n_clusters
    results = [None] * n_restarts

    def run(thread):
        queue = list(range(thread, n_restarts, n_threads))[::-1]
        # Slots: up to 32, at most ~512 stacked centres, labels <= 64 MB.
        n_slots = max(1, min(32, len(queue), 512 // k, 2**24 // n))
        centers = np.zeros((n_slots, k, d), np.float32)
        sums = np.zeros((n_slots, k, d), np.float64)
        counts = np.zeros((n_slots, k), np.int64)
        labels = np.zeros((n_slots, n), np.int32)
        active = np.zeros(n_slots, np.bool_)
        fresh = np.zeros(n_slots, np.bool_)
        owner = np.zeros(n_slots, np.int64)
        n_iter = np.zeros(n_slots, np.int64)
        shift = np.zeros(n_slots, np.float64)
        changed = np.zeros(n_slots, np.int64)
        while True:
            for s in range(n_slots):
                if not active[s] and queue:
                    owner[s] = queue.pop()
                    centers[s] = initial_centers(owner[s])
                    sums[s], counts[s], labels[s] = 0.0, 0, -1
                    active[s], fresh[s], n_iter[s] = True, True, 0
            if not active.any():
                return
            kernels.lloyd_iteration(xc, centers, sums, counts, labels, active, fresh, chunk,
                                    shift, changed)
            for s in np.flatnonzero(active):
                if fresh[s]:  # its first assignment; Lloyd iterations start now
                    fresh[s] = False
                    continue
                n_iter[s] += 1
                if changed[s] == 0 or shift[s] <= tol or n_iter[s] >= max_iter:
                    # scikit-learn's test: the labels belong to the final centres.
                    inertia = kernels.inertia_of(xc, centers[s], labels[s])
                    results[owner[s]] = (inertia, centers[s].copy(), int(n_iter[s]))
                    active[s] = False

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # one BLAS thread per batch
        if n_threads == 1:
            run(0)
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(run, range(n_threads)))
    return results


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
            A seed and a thread count give one result (module docstring).

    Returns:
        `(centers, n_iter)`: float64 `(K, D)` centroids in the input's
        coordinates, and the Lloyd iterations of the kept restart.
    """
    kernels = _compile()
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0)
    xc = np.ascontiguousarray(x64 - mean, dtype=np.float32)
    n = len(xc)
    scaled_tol = float(np.mean(np.var(x64, axis=0)) * tol)
    trials = 2 + int(np.log(n_clusters))
    rng = np.random.default_rng(seed)
    firsts = rng.integers(n, size=n_init)
    draws = rng.random((n_init, max(n_clusters - 1, 0), trials))

    def seeding(r):
        return kernels.kmeans_plusplus(xc, firsts[r], draws[r], n_clusters)

    workers = max(1, min(n_threads or usable_cores(), n_init))
    results = batched_lloyd(xc, n_clusters, seeding, n_init, max_iter, scaled_tol, workers)
    best = min(range(n_init), key=lambda r: results[r][0])
    _, centers, n_iter = results[best]
    return centers.astype(np.float64) + mean, n_iter
