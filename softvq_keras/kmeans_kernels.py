"""The compiled kernels of `softvq_keras.kmeans` (numba; imported on first use).

Module-level functions, so that numba's disk cache (`cache=True`) serves the
next process instead of compiling again.
"""

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=True)


@_jit
def sq_dist(x, i, c, j):
    # Squared distance of row i of x to row j of c (float32 sum, returned as float64).
    total = np.float32(0.0)
    for f in range(x.shape[1]):
        diff = x[i, f] - c[j, f]
        total += diff * diff
    return np.float64(total)


@_jit
def kmeans_plusplus(x, first, draws, n_clusters):
    """Greedy k-means++ (scikit-learn's): `first` the first centre's row,
    `draws` (n_clusters - 1, trials) uniforms in [0, 1). Returns (k, D)."""
    n, d = x.shape
    trials = draws.shape[1]
    centers = np.empty((n_clusters, d), dtype=x.dtype)
    centers[0] = x[first]
    closest = np.empty(n, dtype=np.float64)
    cumulative = np.empty(n, dtype=np.float64)
    candidate_dist = np.empty((trials, n), dtype=np.float64)
    candidates = np.empty(trials, dtype=np.int64)
    for i in range(n):
        closest[i] = sq_dist(x, i, x, first)
    for c in range(1, n_clusters):
        running = 0.0
        for i in range(n):
            running += closest[i]
            cumulative[i] = running
        for t in range(trials):
            target = draws[c - 1, t] * running
            pick = np.searchsorted(cumulative, target)
            candidates[t] = min(pick, n - 1)
        best_t = 0
        best_potential = np.inf
        for t in range(trials):
            potential = 0.0
            for i in range(n):
                dist = min(closest[i], sq_dist(x, i, x, candidates[t]))
                candidate_dist[t, i] = dist
                potential += dist
            if potential < best_potential:
                best_potential = potential
                best_t = t
        closest[:] = candidate_dist[best_t]
        centers[c] = x[candidates[best_t]]
    return centers


@_jit
def lloyd_iteration(x, centers, sums, counts, labels, active, fresh, chunk, shift, changed):
    """One Lloyd iteration of every active restart slot, in place.

    `centers` (S, k, D) float32, `sums` (S, k, D) float64 and `counts` (S, k)
    the running cluster sums and sizes, `labels` (S, N) int32 (-1: none yet),
    `active` and `fresh` (S,) booleans (a fresh slot holds its k-means++
    centres and no labels: it skips the update step). Writes each slot's
    summed squared centroid shift to `shift` and its changed labels to
    `changed`. The assignment step scores every row against the centres of
    all active slots at once, x.c - |c|^2 / 2 (the nearest centre scores
    highest), as one matrix product per `chunk` rows (BLAS sgemm)."""
    n, d = x.shape
    n_slots, k, _ = centers.shape
    # Update step; an empty cluster takes the point farthest from its centre.
    for s in range(n_slots):
        shift[s] = 0.0
        changed[s] = 0
        if not active[s] or fresh[s]:
            continue
        for j in range(k):
            if counts[s, j] == 0:
                relocate_farthest(x, centers[s], sums[s], counts[s], labels[s], j)
        total = 0.0
        for j in range(k):
            if counts[s, j] > 0:
                for f in range(d):
                    value = np.float32(sums[s, j, f] / counts[s, j])
                    diff = np.float64(value) - np.float64(centers[s, j, f])
                    total += diff * diff
                    centers[s, j, f] = value
        shift[s] = total
    # Assignment step.
    slots = np.flatnonzero(active)
    m = len(slots) * k
    stacked = np.empty((m, d), dtype=np.float32)
    half_sq = np.empty(m, dtype=np.float32)
    for a in range(len(slots)):
        for j in range(k):
            total = np.float32(0.0)
            for f in range(d):
                value = centers[slots[a], j, f]
                stacked[a * k + j, f] = value
                total += value * value
            half_sq[a * k + j] = np.float32(0.5) * total
    scores = np.empty(m * chunk, dtype=np.float32)
    best = np.empty(chunk, dtype=np.float32)
    best_j = np.empty(chunk, dtype=np.int32)
    for i0 in range(0, n, chunk):
        width = min(n, i0 + chunk) - i0
        block = scores[:m * width].reshape((m, width))
        np.dot(stacked, x[i0:i0 + width].T, block)
        for a in range(len(slots)):
            s = slots[a]
            row = a * k
            # Centre by centre, so the comparisons vectorize over the rows.
            h = half_sq[row]
            for t in range(width):
                best[t] = block[row, t] - h
                best_j[t] = 0
            for j in range(1, k):
                h = half_sq[row + j]
                for t in range(width):
                    value = block[row + j, t] - h
                    if value > best[t]:
                        best[t] = value
                        best_j[t] = j
            for t in range(width):
                new = best_j[t]
                i = i0 + t
                old = labels[s, i]
                if new != old:
                    changed[s] += 1
                    labels[s, i] = new
                    counts[s, new] += 1
                    if old >= 0:
                        counts[s, old] -= 1
                        for f in range(d):
                            sums[s, old, f] -= x[i, f]
                    for f in range(d):
                        sums[s, new, f] += x[i, f]


@_jit
def relocate_farthest(x, centers, sums, counts, labels, empty):
    """Move the point farthest from its centre (in a cluster of two or more)
    into the empty cluster `empty` (scikit-learn's rule)."""
    far = -1
    far_dist = -1.0
    for i in range(x.shape[0]):
        if counts[labels[i]] > 1:
            dist = sq_dist(x, i, centers, labels[i])
            if dist > far_dist:
                far_dist = dist
                far = i
    if far < 0:
        return
    old = labels[far]
    counts[old] -= 1
    counts[empty] += 1
    for f in range(x.shape[1]):
        sums[old, f] -= x[far, f]
        sums[empty, f] += x[far, f]
    labels[far] = empty


@_jit
def inertia_of(x, centers, labels):
    total = 0.0
    for i in range(x.shape[0]):
        total += sq_dist(x, i, centers, labels[i])
    return total
