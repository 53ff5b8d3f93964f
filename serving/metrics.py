"""The model's own series on `/metrics`, next to BentoML's standard ones.

`ServedMetrics(model)` creates, in the serving worker (BentoML points
`PROMETHEUS_MULTIPROC_DIR` at its multiprocess folder before the service is
built, so the series reach `/metrics` from every worker):

- `softvq_model_batch_images` (histogram, label `call`: `encoder` for
  `/encode`, `/cluster`, `/classify` and their PNG routes, `autoencoder` for
  `/reconstruct`): images per model call, i.e. how many requests the
  micro-batcher (serving/batching.py) merged;
- `softvq_served_clusters_total` (counter, labels `route`, `cluster`): images
  assigned to each K-means cluster by `/cluster` and `/cluster_png`;
- `softvq_served_classes_total` (counter, labels `route`, `class_name`):
  images per class, the softmax head's class for `/classify`, `/classify_png`
  and the cluster's matched class for `/cluster`, `/cluster_png`;
- `softvq_train_cluster_share` / `softvq_train_class_share` (gauges, labels
  `cluster` / `class_name`): the training split's share of each cluster and
  class (kmeans.npz `train_cluster_counts` / `train_class_counts`; absent for
  runs written before those keys).

So served traffic drifting away from the training data shows as
`rate(softvq_served_classes_total[1h])` normalised over its classes moving
away from `softvq_train_class_share`. Every cluster and class starts at 0, so
a class never served is a visible 0, not a missing series.

BentoML's `bentoml.metrics` is deprecated in the installed 1.4.39 ("use
prometheus_client directly"); it was a lazy alias of `prometheus_client`, so
this module uses `prometheus_client`. The series exist once per process:
building the service twice in one process (tests) reuses them.
"""

#: Upper bounds of the batch-size buckets (images per model call).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_SERIES = {}


def _series():
    """The process's metric objects, created on first use."""
    if not _SERIES:
        import prometheus_client as prom

        _SERIES.update(
            batch=prom.Histogram(
                "softvq_model_batch_images",
                "Images per model call (requests merged by the micro-batcher).",
                ["call"], buckets=BATCH_BUCKETS),
            clusters=prom.Counter(
                "softvq_served_clusters",
                "Served images assigned to each K-means cluster.", ["route", "cluster"]),
            classes=prom.Counter(
                "softvq_served_classes",
                "Served images per class (softmax head, or the cluster's matched class).",
                ["route", "class_name"]),
            train_clusters=prom.Gauge(
                "softvq_train_cluster_share",
                "Share of the training split nearest to each K-means cluster.",
                ["cluster"], multiprocess_mode="max"),
            train_classes=prom.Gauge(
                "softvq_train_class_share",
                "Share of the training split in each class.",
                ["class_name"], multiprocess_mode="max"),
        )
    return _SERIES


def shares(counts):
    """`counts` as fractions of their sum (all zeros for an empty count)."""
    total = float(sum(int(c) for c in counts))
    return [int(c) / total if total else 0.0 for c in counts]


class ServedMetrics:
    """Record batch sizes and served clusters and classes of one `RunModel`."""

    def __init__(self, model, cluster_routes=(), class_routes=()):
        series = _series()
        self._batch = series["batch"]
        self._clusters = series["clusters"]
        self._classes = series["classes"]
        self.class_names = model.class_names
        clusters = len(model.centroids)
        for route in cluster_routes:  # every series starts at 0
            for c in range(clusters):
                self._clusters.labels(route=route, cluster=str(c)).inc(0)
        for route in (*cluster_routes, *class_routes):
            for name in self.class_names or ():
                self._classes.labels(route=route, class_name=name).inc(0)
        if model.train_cluster_counts is not None:
            for c, share in enumerate(shares(model.train_cluster_counts)):
                series["train_clusters"].labels(cluster=str(c)).set(share)
        if model.train_class_counts is not None and self.class_names:
            for name, share in zip(self.class_names, shares(model.train_class_counts)):
                series["train_classes"].labels(class_name=name).set(share)

    def batch_observer(self, call):
        """`observe(batch)` for the batcher of `call` (`encoder`, `autoencoder`, `codes`, `decode`)."""
        histogram = self._batch.labels(call=call)
        return histogram.observe

    def served(self, route, clusters=None, labels=None):
        """Count one answer's cluster ids and/or class indices for `route`."""
        if clusters is not None:
            for c, n in zip(*_unique(clusters)):
                self._clusters.labels(route=route, cluster=str(c)).inc(n)
        if labels is not None and self.class_names:
            for c, n in zip(*_unique(labels)):
                self._classes.labels(route=route, class_name=self.class_names[c]).inc(n)


def _unique(values):
    import numpy as np

    ids, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    return ids.tolist(), counts.tolist()
