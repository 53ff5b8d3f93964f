"""One run folder loaded for inference: encoder, softmax head, K-means centroids.

`RunModel(run_dir)` reads the files of docs/ARTIFACTS.md with
`keras.saving.load_model(..., safe_mode=True)` (initializers skipped:
serving/fastload.py) and `np.load(..., allow_pickle=False)`, checks that they
fit together, and compiles one forward function `x -> (latents, class
probabilities)` for the current Keras backend:

- JAX (the service's default): `jax.jit` of the two models' `stateless_call`.
  Batches are padded to a power of two (1, 2, 4, ... `max_chunk`) so that at
  most `log2(max_chunk) + 1` shapes are ever compiled: all of them in
  `__init__`, or (`warm="first"`, the service) batch size 1 there and the
  rest with `warm_up()` later (the service does so in a background thread).
- TensorFlow: a `tf.function` with a `None` batch dimension (one trace).
- PyTorch: the models called under `torch.inference_mode()`.

Measured on the project's 2-core CPU for the MNIST encoder (one image): the
jitted JAX call 0.22 ms, `model.predict` 0.7 ms (JAX) to 70 ms (TensorFlow),
a `tf.function` 1.2 ms, torch 1.2 ms, an eager `model(x)` call 1.6-4 ms; see
serving/README.md. Keras is imported inside `RunModel.__init__`, never at
module level, because `bentoml serve` imports the service module in processes
that never serve.
"""

import math
from pathlib import Path

import numpy as np

from serving.run_folder import REQUIRED_FILES, UNLABELLED_FILES, RunFolderError, read_config

#: Largest batch one compiled call takes; bigger batches are split.
DEFAULT_MAX_CHUNK = 64


def batch_sizes(max_chunk, padded=True):
    """The batch sizes one compiled forward pass sees: 1, 2, 4, ... `max_chunk`
    when batches are padded, else just 1 (one trace serves every size)."""
    sizes = [1]
    while padded and sizes[-1] < max_chunk:
        sizes.append(min(sizes[-1] * 2, max_chunk))
    return sizes


def _bucket(n, max_chunk):
    """Smallest power of two >= n, capped at max_chunk."""
    return min(max_chunk, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _compile_forward(encoder, classifier):
    """`f(x) -> (latents, probabilities)` as NumPy, fastest form per backend.

    Without a classifier (a run trained without labels) the probabilities are
    an empty `(N, 0)` array, so the batcher can split them like the latents.
    """
    import keras

    def head(z, *variables):
        """The classifier on `z`, or an empty `(N, 0)` slice when there is none."""
        if classifier is None:
            return z[:, :0]
        if variables:
            return classifier.stateless_call(*variables, z, training=False)[0]
        return classifier(z, training=False)

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(variables, x):
            (enc_t, enc_n, cls_t, cls_n) = variables
            z, _ = encoder.stateless_call(enc_t, enc_n, x, training=False)
            return z, head(z, cls_t, cls_n)

        jitted = jax.jit(stateless)
        groups = (
            encoder.trainable_variables, encoder.non_trainable_variables,
            classifier.trainable_variables if classifier is not None else [],
            classifier.non_trainable_variables if classifier is not None else [],
        )

        def forward(x):
            # The variables' current buffers: Keras' own predict() replaces them.
            variables = tuple([v.value for v in group] for group in groups)
            z, p = jitted(variables, x)
            return np.asarray(z), np.asarray(p)

        return forward, True
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None,) + tuple(encoder.input_shape[1:]), tf.float32)

        @tf.function(input_signature=[spec])
        def graph(x):
            z = encoder(x, training=False)
            return z, head(z)

        def forward(x):
            z, p = graph(x)
            return z.numpy(), p.numpy()

        return forward, False
    if backend == "torch":
        import torch

        def forward(x):
            with torch.inference_mode():
                z = encoder(x, training=False)
                p = head(z)
            return (keras.ops.convert_to_numpy(z), keras.ops.convert_to_numpy(p))

        return forward, False

    def forward(x):
        z = encoder(x, training=False)
        p = head(z)
        return keras.ops.convert_to_numpy(z), keras.ops.convert_to_numpy(p)

    return forward, False


class RunModel:
    """The artifacts of one run folder, ready to answer requests.

    Attributes: `config` (config.json, with `with_defaults`), `labelled`,
    `encoder`, `classifier` (Keras models; `classifier` is None for a run
    trained without labels), `centroids` float32 `(clusters, latent_dim)`,
    `cluster_to_label` int64 `(clusters,)` (None without labels),
    `class_names` (None without labels), `train_cluster_counts` /
    `train_class_counts` (the training split per cluster / class, from
    kmeans.npz; None when the run predates them or has no labels).

    `predict(x)` maps scaled inputs `(N,) + input_shape` to `(latents,
    probabilities)`; `assign_clusters(latents)` gives cluster ids, their
    Hungarian-matched labels and the Euclidean distance to the centroid.
    """

    def __init__(self, run_dir, max_chunk=DEFAULT_MAX_CHUNK, warm="all"):
        run_dir = Path(run_dir)
        self.run_dir = run_dir
        self.config = read_config(run_dir)
        self.labelled = bool(self.config["labelled"])
        needed = REQUIRED_FILES if self.labelled else UNLABELLED_FILES
        missing = [name for name in needed if not (run_dir / name).is_file()]
        if missing:
            raise RunFolderError(
                f"run folder {str(run_dir)!r} lacks {', '.join(missing)}: is the run "
                "finished? (see docs/ARTIFACTS.md)"
            )
        from serving.fastload import load_model  # safe_mode, initializers skipped

        self.encoder = load_model(run_dir / "encoder.keras")
        self.classifier = None
        if self.labelled:
            self.classifier = load_model(run_dir / "classifier.keras")
        with np.load(run_dir / "kmeans.npz", allow_pickle=False) as f:
            self.centroids = np.asarray(f["centroids"], dtype=np.float32)
            self.cluster_to_label = None
            if self.labelled:
                if "cluster_to_label" not in f.files:
                    raise RunFolderError(
                        f"{run_dir / 'kmeans.npz'} lacks cluster_to_label, which a run "
                        "trained with labels has (see docs/ARTIFACTS.md)"
                    )
                self.cluster_to_label = np.asarray(f["cluster_to_label"], dtype=np.int64)
            # The training split's counts per cluster / class (older runs lack them).
            self.train_cluster_counts = (np.asarray(f["train_cluster_counts"], np.int64)
                                         if "train_cluster_counts" in f.files else None)
            self.train_class_counts = (np.asarray(f["train_class_counts"], np.int64)
                                       if self.labelled and "train_class_counts" in f.files
                                       else None)
        self.class_names = (
            [str(n) for n in self.config["class_names"]] if self.labelled else None
        )
        self._check_consistent()
        self.max_chunk = int(max_chunk)
        self._forward, self._pad = _compile_forward(self.encoder, self.classifier)
        self.warm_up(batch_sizes(self.max_chunk, self._pad)[:1] if warm == "first" else None)

    def _check_consistent(self):
        input_shape = tuple(self.config["input_shape"])
        latent_dim = int(self.config["latent_dim"])
        problems = []
        if tuple(self.encoder.input_shape[1:]) != input_shape:
            problems.append(
                f"encoder.keras takes {self.encoder.input_shape[1:]}, config.json "
                f"says input_shape {input_shape}"
            )
        if self.encoder.output_shape[-1] != latent_dim:
            problems.append(f"encoder.keras outputs {self.encoder.output_shape[-1]} values, "
                            f"config.json says latent_dim {latent_dim}")
        if self.classifier is not None and self.classifier.input_shape[-1] != latent_dim:
            problems.append(f"classifier.keras takes {self.classifier.input_shape[-1]} values, "
                            f"not latent_dim {latent_dim}")
        if self.classifier is not None and (
                self.classifier.output_shape[-1] != len(self.class_names)):
            problems.append(f"classifier.keras has {self.classifier.output_shape[-1]} "
                            f"classes, config.json names {len(self.class_names)}")
        if self.centroids.ndim != 2 or self.centroids.shape[1] != latent_dim:
            problems.append(f"kmeans.npz centroids are {self.centroids.shape}, "
                            f"expected (clusters, {latent_dim})")
        else:
            expected = (self.centroids.shape[0],)
            if self.cluster_to_label is not None and self.cluster_to_label.shape != expected:
                problems.append(f"kmeans.npz cluster_to_label is "
                                f"{self.cluster_to_label.shape}, expected {expected}")
            if (self.train_cluster_counts is not None
                    and self.train_cluster_counts.shape != expected):
                problems.append(f"kmeans.npz train_cluster_counts is "
                                f"{self.train_cluster_counts.shape}, expected {expected}")
        if (self.train_class_counts is not None and self.class_names is not None
                and self.train_class_counts.shape != (len(self.class_names),)):
            problems.append(f"kmeans.npz train_class_counts is {self.train_class_counts.shape}, "
                            f"expected ({len(self.class_names)},)")
        if problems:
            raise RunFolderError(
                f"run folder {str(self.run_dir)!r} is inconsistent: " + "; ".join(problems)
            )

    def warm_up(self, sizes=None):
        """Compile the batch `sizes` (default: every one) now, so no request pays for it."""
        shape = tuple(self.config["input_shape"])
        for n in batch_sizes(self.max_chunk, self._pad) if sizes is None else sizes:
            self._forward(np.zeros((n,) + shape, dtype=np.float32))

    def predict(self, x):
        """`(latents, probabilities)` float32 for scaled inputs `(N,) + input_shape`."""
        x = np.asarray(x, dtype=np.float32)
        latents, probabilities = [], []
        for start in range(0, len(x), self.max_chunk):
            chunk = x[start:start + self.max_chunk]
            n = len(chunk)
            if self._pad and n != _bucket(n, self.max_chunk):
                padding = np.zeros((_bucket(n, self.max_chunk) - n,) + chunk.shape[1:], np.float32)
                chunk = np.concatenate([chunk, padding])
            z, p = self._forward(chunk)
            latents.append(z[:n])
            probabilities.append(p[:n])
        return np.concatenate(latents), np.concatenate(probabilities)

    def assign_clusters(self, latents):
        """Nearest stored centroid per latent: `(cluster ids, labels, distances)`.

        Distances are Euclidean, computed in float64; `labels` is None for a
        run trained without labels.
        """
        z = np.asarray(latents, dtype=np.float64)
        diff = z[:, None, :] - self.centroids.astype(np.float64)[None, :, :]
        distances = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
        clusters = np.argmin(distances, axis=1)
        return (
            clusters,
            None if self.cluster_to_label is None else self.cluster_to_label[clusters],
            distances[np.arange(len(z)), clusters],
        )
