"""Training-time codebook maintenance for the quantizers (vq, softvq).

Both callbacks work between epochs, from `on_epoch_begin`: they encode a fixed
sample of training inputs with the model being fitted, then assign new values
to the quantizer's `codebook` weight. Changing a weight between epochs is what
works on every backend: under JAX the trainer reads the variables back into its
functional state at the first step of each epoch, whereas a value assigned in
the middle of an epoch (or inside the train step) would be overwritten.

- `CodebookKMeansInit`: once, after `at_epoch` epochs of training, set the
  codebook to the K-means centroids of the encoder outputs `z` (the "codebook
  initialization from k-means of early latents" of the issue tracker); for a
  residual VQ, stage by stage on the residuals the previous stages leave.
- `DeadCodeRestart`: before every `every` epochs, move each codeword that no
  input of the sample picks (argmax of `code_probs`, as the `codebook_usage`
  metric counts) onto a randomly chosen encoder output, plus a little noise
  (vector-quantize-pytorch's dead-code expiry, done per epoch).

The model must be a `softvq_keras.Autoencoder` (outputs `"latent"` and
`"code_probs"`) whose quantizer layer is named `"bottleneck"`.

Under a `keras.distribution` (JAX data parallelism) the sample is encoded by a
copy of the model made outside the distribution, on one device, so that every
process encodes the whole sample; every replica of the codebook then gets the
same value as long as the processes compute the same one. Across processes,
pass `sync`: a function that returns one process's codebook on all of them
(`training.distribution.Plan.agree` broadcasts process 0's).

Example:

    callbacks = [CodebookKMeansInit(x_train[:10000], at_epoch=1),
                 DeadCodeRestart(x_train[:10000])]
    autoencoder.fit(x_train, epochs=43, callbacks=callbacks)
"""

import numpy as np

import keras

def _quantizer(model, layer_name):
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(f"The model has no layer named {layer_name!r}.") from None
    if not (hasattr(layer, "codebook") or hasattr(layer, "stages")):
        raise ValueError(
            f"Layer {layer_name!r} ({type(layer).__name__}) has no codebook; codebook "
            "callbacks apply to VectorQuantizer, SoftVectorQuantizer and "
            "(K-means init) ResidualVectorQuantizer only."
        )
    return layer


def _encode(model, x, batch_size, probs=True):
    distribution = keras.distribution.distribution()
    if distribution is None:
        outputs = model.predict(x, batch_size=batch_size, verbose=0)
    else:  # the whole sample on this process, outside the data-parallel mesh
        keras.distribution.set_distribution(None)
        try:
            local = keras.models.clone_model(model)
            local.set_weights(model.get_weights())
            outputs = local.predict(x, batch_size=batch_size, verbose=0)
        finally:
            keras.distribution.set_distribution(distribution)
    return (
        np.asarray(outputs["latent"], dtype=np.float32),
        np.asarray(outputs["code_probs"], dtype=np.float32) if probs else None,
    )


class CodebookKMeansInit(keras.callbacks.Callback):
    """Set the codebook to the K-means centroids of early encoder outputs.

    Args:
        x: training inputs to encode (a sample is enough: 10,000 on MNIST).
        at_epoch: number of training epochs before the re-initialization
            (>= 1: the encoder needs some training for its latents to mean
            anything; a resumed run past this epoch keeps its codebook).
        seed: seed of K-means.
        batch_size: prediction batch size.
        layer_name: name of the quantizer layer.
        sync: optional function applied to the new codebook (float32 NumPy
            array) before it is assigned, called on every process at the same
            epoch; e.g. one returning process 0's value on every process.

    After it ran, `inertia` holds the K-means inertia and `epoch` the epoch.
    """

    def __init__(
        self, x, at_epoch=1, seed=0, batch_size=1024, layer_name="bottleneck", sync=None
    ):
        super().__init__()
        if int(at_epoch) < 1:
            raise ValueError(f"at_epoch must be >= 1; got {at_epoch}.")
        self.x = x
        self.at_epoch = int(at_epoch)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.layer_name = layer_name
        self.sync = sync
        self.epoch = None
        self.inertia = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.at_epoch:
            return
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        layer = _quantizer(self.model, self.layer_name)
        stages = getattr(layer, "stages", [layer])
        num_codes = stages[0].codebook.shape[0]
        z, _ = _encode(self.model, self.x, self.batch_size, probs=False)
        if len(z) < num_codes:
            raise ValueError(
                f"K-means codebook init needs at least {num_codes} inputs (one per "
                f"codeword); got {len(z)}."
            )
        residual, inertia = z, 0.0
        for stage in stages:  # residual VQ: each stage on what the previous left
            with threadpool_limits(1):  # many-threaded OpenMP is far slower on shared CPUs
                kmeans = KMeans(num_codes, n_init=1, random_state=self.seed).fit(residual)
            centroids = kmeans.cluster_centers_.astype("float32")
            centroids = centroids if self.sync is None else self.sync(centroids)
            stage.set_codebook(centroids)
            residual = residual - centroids[kmeans.labels_]
            inertia = float(kmeans.inertia_)
        self.epoch, self.inertia = epoch, inertia
        print(
            f"CodebookKMeansInit: codebook set to K-means (K={num_codes}"
            f"{f', {len(stages)} stages' if len(stages) > 1 else ''}) of "
            f"{len(z)} latents before epoch {epoch + 1}.",
            flush=True,
        )


class DeadCodeRestart(keras.callbacks.Callback):
    """Move unused codewords onto encoder outputs between epochs.

    Args:
        x: training inputs to encode (a sample: 10,000 on MNIST).
        every: restart every `every` epochs (from epoch `every` on).
        min_picks: a codeword picked (argmax of `code_probs`) by fewer than
            this many inputs of the sample is dead.
        noise: standard deviation of the Gaussian noise added to the chosen
            latents, relative to their per-dimension standard deviation, so
            that two restarted codes never coincide.
        seed: seed of the choice of latents and of the noise; the draws
            before epoch `e` come from `(seed, e)` alone, so a run resumed
            from a checkpoint draws as the uninterrupted run does.
        batch_size: prediction batch size.
        layer_name: name of the quantizer layer.
        sync: as in `CodebookKMeansInit`; when given, it is called at every
            check (with the codebook unchanged when no codeword is dead).

    `restarts` lists `(epoch, number of codewords restarted)` for every check.
    """

    def __init__(
        self, x, every=1, min_picks=1, noise=0.01, seed=0, batch_size=1024,
        layer_name="bottleneck", sync=None,
    ):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be >= 1; got {every}.")
        if int(min_picks) < 1:
            raise ValueError(f"min_picks must be >= 1; got {min_picks}.")
        if noise < 0:
            raise ValueError(f"noise must be >= 0; got {noise}.")
        self.x = x
        self.every = int(every)
        self.min_picks = int(min_picks)
        self.noise = float(noise)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.layer_name = layer_name
        self.sync = sync
        self.restarts = []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0 or epoch % self.every:
            return
        layer = _quantizer(self.model, self.layer_name)
        old = np.array(keras.ops.convert_to_numpy(layer.codebook), dtype=np.float32)
        codebook = old.copy()
        z, probs = _encode(self.model, self.x, self.batch_size)
        picks = np.bincount(probs.argmax(axis=-1), minlength=len(codebook))
        dead = np.flatnonzero(picks < self.min_picks)
        if len(dead):
            rng = np.random.default_rng((self.seed, epoch))
            chosen = z[rng.choice(len(z), size=len(dead), replace=len(dead) > len(z))]
            scale = self.noise * z.std(axis=0, keepdims=True)
            codebook[dead] = chosen + scale * rng.standard_normal(chosen.shape)
        if self.sync is not None:  # every process takes part, dead codes or not
            codebook = np.asarray(self.sync(codebook), dtype=np.float32)
            dead = np.flatnonzero(np.any(codebook != old, axis=-1))
        self.restarts.append((epoch, int(len(dead))))
        if len(dead) == 0:
            return
        layer.set_codebook(codebook)
        print(
            f"DeadCodeRestart: {len(dead)} of {len(codebook)} codewords unused; "
            f"moved onto encoder outputs before epoch {epoch + 1}.",
            flush=True,
        )
