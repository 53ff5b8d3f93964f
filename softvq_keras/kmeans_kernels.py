"""The compiled kernels of `softvq_keras.kmeans` (numba; imported on first use).

Module-level functions, so that numba's disk cache (`cache=True`) serves the
next process instead of compiling again.
"""

import math

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
def elkan(x, centers_init, max_iter, tol):
    """Lloyd to convergence from `centers_init` with Hamerly's and Elkan's bounds.
    Returns (centers float32 (k, D), labels, n_iter)."""
    n, d = x.shape
    k = centers_init.shape[0]
    centers = centers_init.copy()
    labels = np.empty(n, dtype=np.int64)
    upper = np.empty(n, dtype=np.float64)
    lower = np.empty((n, k), dtype=np.float64)
    sums = np.zeros((k, d), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    shift = np.zeros(k, dtype=np.float64)
    drift = np.zeros(k, dtype=np.float64)
    drift_max = 0.0
    second = np.empty(n, dtype=np.float64)
    half_cc = np.empty((k, k), dtype=np.float64)
    half_gap = np.empty(k, dtype=np.float64)
    new_centers = np.empty((k, d), dtype=np.float32)
    for i in range(n):
        best = 0
        for j in range(k):
            dist = math.sqrt(sq_dist(x, i, centers, j))
            lower[i, j] = dist
            if dist < lower[i, best]:
                best = j
        labels[i] = best
        upper[i] = lower[i, best]
        nearest_other = np.inf
        for j in range(k):
            if j != best:
                nearest_other = min(nearest_other, lower[i, j])
        second[i] = nearest_other
        counts[best] += 1
        for f in range(d):
            sums[best, f] += x[i, f]
    n_iter = 0
    for it in range(max_iter):
        n_iter = it + 1
        # M-step; an empty cluster takes the point farthest from its centre.
        for j in range(k):
            if counts[j] == 0:
                far = -1
                far_dist = -1.0
                for i in range(n):
                    if counts[labels[i]] > 1:
                        dist = sq_dist(x, i, centers, labels[i])
                        if dist > far_dist:
                            far_dist = dist
                            far = i
                if far < 0:
                    continue
                old = labels[far]
                counts[old] -= 1
                counts[j] += 1
                for f in range(d):
                    sums[old, f] -= x[far, f]
                    sums[j, f] += x[far, f]
                labels[far] = j
                upper[far] = np.inf
        total_shift = 0.0
        for j in range(k):
            moved = 0.0
            if counts[j] > 0:
                for f in range(d):
                    value = np.float32(sums[j, f] / counts[j])
                    diff = np.float64(value) - np.float64(centers[j, f])
                    moved += diff * diff
                    new_centers[j, f] = value
            else:
                for f in range(d):
                    new_centers[j, f] = centers[j, f]
            shift[j] = math.sqrt(moved)
            total_shift += moved
        for j in range(k):
            for f in range(d):
                centers[j, f] = new_centers[j, f]
        for j in range(k):
            half_cc[j, j] = 0.0
            for m in range(j + 1, k):
                h = 0.5 * math.sqrt(sq_dist(centers, j, centers, m))
                half_cc[j, m] = h
                half_cc[m, j] = h
        for j in range(k):
            gap = np.inf
            for m in range(k):
                if m != j and half_cc[j, m] < gap:
                    gap = half_cc[j, m]
            half_gap[j] = gap
        # E-step: a distance is computed only where the bounds no longer
        # prove the assignment. Bounds are stored against the centres'
        # accumulated drift, so following the centres costs nothing per
        # point: upper = stored_upper + drift[label], lower = stored - drift.
        largest = 0.0
        for j in range(k):
            drift[j] += shift[j]
            largest = max(largest, shift[j])
        drift_max += largest
        changed = 0
        for i in range(n):
            a = labels[i]
            u = upper[i] + drift[a]
            # Hamerly's test: one bound for all the other centres.
            bound = max(half_gap[a], second[i] - drift_max)
            if u <= bound:
                continue
            u = math.sqrt(sq_dist(x, i, centers, a))
            lower[i, a] = u + drift[a]
            if u <= bound:
                upper[i] = u - drift[a]
                continue
            # Elkan's tests, one bound per centre (u is exact here). A
            # centre pruned by the centre-centre distance also gets the
            # triangle inequality's bound d(x, c_j) >= d(c_a, c_j) - u,
            # so its stored bound does not go stale.
            start = a
            for j in range(k):
                if j == a:
                    continue
                bound_j = lower[i, j] - drift[j]
                if u <= bound_j:
                    continue
                if u <= half_cc[a, j]:
                    lower[i, j] = 2.0 * half_cc[a, j] - u + drift[j]
                    continue
                dist = math.sqrt(sq_dist(x, i, centers, j))
                lower[i, j] = dist + drift[j]
                if dist < u:
                    a = j
                    u = dist
            nearest_other = np.inf
            for j in range(k):
                if j != a:
                    nearest_other = min(nearest_other, lower[i, j] - drift[j])
            upper[i] = u - drift[a]
            second[i] = nearest_other + drift_max
            if a != start:
                changed += 1
                labels[i] = a
                counts[start] -= 1
                counts[a] += 1
                for f in range(d):
                    sums[start, f] -= x[i, f]
                    sums[a, f] += x[i, f]
        if changed == 0 or total_shift <= tol:
            # scikit-learn's test: converged, and the labels belong to
            # the final centres.
            break
    return centers, labels, n_iter


@_jit
def inertia_of(x, centers, labels):
    total = 0.0
    for i in range(x.shape[0]):
        total += sq_dist(x, i, centers, labels[i])
    return total
