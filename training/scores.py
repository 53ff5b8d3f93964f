"""Timing and scoring pieces shared by a run's evaluation and the raw-pixel row.

`PhaseTimer` (seconds per named phase, one line per long phase),
`single_threaded` (OpenMP/BLAS on one thread around the K-means), and
`representation_scores`: the paper's three numbers (clustering accuracy, NMI,
linear-probe accuracy) for any representation. `training.evaluate` and
`training.raw_row` both use them; this module imports neither.
"""

import time
from contextlib import contextmanager


class PhaseTimer:
    """Accumulates wall-clock seconds per named phase.

    With `say` (e.g. `print`), a phase given a description prints one line:
    the description when it starts (so that a long K-means does not look like
    a hang) and its seconds when it ends.
    """

    def __init__(self, seconds=None, say=None):
        self.seconds = dict(seconds or {})
        self.say = say

    @contextmanager
    def phase(self, name, what=None):
        start = time.perf_counter()
        if what and self.say:
            self.say(f"{what} ...", end="", flush=True)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if what and self.say:
                self.say(f" {elapsed:.1f} s", flush=True)


@contextmanager
def single_threaded():
    """OpenMP/BLAS on one thread around the K-means and its label passes.

    OpenMP threads busy-wait against other processes on a shared CPU:
    measured on the 2-core machine (load ~4), scikit-learn's K-means x100 on
    1,500 points took 12.4 s with its default 2 threads and 0.35 s with one.
    `fit_kmeans` itself shares its restarts among the cores on its own thread
    pool (no busy-waiting, unaffected by this limit); what stays under the
    limit is NumPy's float64 label and inertia pass, and scikit-learn's
    KMeans when numba is missing.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def representation_scores(z_train, y_train, z_test, y_test, *, kmeans_init, probe_epochs, seed,
                          timer, n_clusters=10, num_classes=10, what=None):
    """The paper's three numbers for a representation, its probe trained here.

    Used for the raw-pixel row; a trained run's own latents use the stored
    centroids and classifier instead (see `evaluate_run`).
    """
    from softvq_keras import evaluation

    with timer.phase("raw", what):
        with single_threaded():
            scores = evaluation.clustering_scores(
                z_test, y_test, n_clusters=n_clusters, n_init=kmeans_init, seed=seed
            )
        _, scores["classification_accuracy"] = evaluation.linear_probe(
            z_train, y_train, z_test, y_test, epochs=probe_epochs, seed=seed,
            num_classes=num_classes,
        )
    return scores


def flat_images(images):
    """`(N, ...)` images as `(N, pixels)` rows."""
    return images.reshape(len(images), -1)
