"""Codebook learning by exponential moving averages, shared by the quantizers.

van den Oord et al. (2017), appendix A.1: instead of a gradient step on the
codebook loss, every codeword follows the running mean of the encoder outputs
assigned to it. With assignment weights `a (batch, K)` (one-hot for hard VQ,
the posterior for soft VQ), one training step is

    N_k <- decay * N_k + (1 - decay) * sum_b a_bk               (cluster size)
    m_k <- decay * m_k + (1 - decay) * sum_b a_bk z_b            (codeword sum)
    N'_k = (N_k + epsilon) / (n + K * epsilon) * n,  n = sum_k N_k  (Laplace)
    e_k  = m_k / N'_k

`N` starts at 1 and `m` at the initial codebook, so the first codebook is the
initializer's and a code that never gets picked keeps its place while its
statistics decay. With `dead_code_threshold > 0`, every code whose `N_k` falls
under the threshold after the step is moved onto an encoder output of the
batch chosen at random (the layer's `SeedGenerator`), with `N_k` reset to the
threshold and `m_k = e_k * N_k` (vector-quantize-pytorch's expiry rule). The
rows are drawn without replacement, so replaced codewords never duplicate each
other: at most one dead code per batch row per step; when more codes are dead
than the batch has rows, a random subset of them is replaced now and the rest
at the next steps (as vector-quantize-pytorch 1.32 does).

The statistics and the codebook are non-trainable weights, assigned inside
`call` only when training (as `BatchNormalization` does): that is what Keras
carries through a traced JAX step, and they are saved in `.keras` files.

Data parallelism: the sums run over the batch the step sees. Under JAX's
`keras.distribution.DataParallel` that is the global batch (the arrays are
global and XLA inserts the all-reduce), so every replica ends with the same
codebook. Under TensorFlow's `MirroredStrategy` each replica sees its own
shard; the weights are created with `aggregation="mean"`, so the replicas'
assignments are averaged: `m / N'` is then the ratio of global sums, as above,
while a dead-code replacement (random per replica) becomes the mean of the
replicas' choices.
"""

import keras
from keras import ops

CODEBOOK_UPDATES = ("gradient", "ema")


def validate_ema_options(codebook_update, decay, epsilon, dead_code_threshold):
    """Check the EMA options; raises ValueError naming the bad one."""
    if codebook_update not in CODEBOOK_UPDATES:
        raise ValueError(
            f"Unknown codebook_update {codebook_update!r}; expected one of "
            f"{CODEBOOK_UPDATES}."
        )
    if not 0.0 < float(decay) < 1.0:
        raise ValueError(f"decay must be in (0, 1); got {decay}.")
    if float(epsilon) <= 0.0:
        raise ValueError(f"epsilon must be > 0; got {epsilon}.")
    if float(dead_code_threshold) < 0.0:
        raise ValueError(
            f"dead_code_threshold must be >= 0; got {dead_code_threshold}."
        )
    if float(dead_code_threshold) > 0 and codebook_update != "ema":
        raise ValueError(
            "dead_code_threshold needs codebook_update='ema' (it acts on the EMA "
            "cluster sizes); use the DeadCodeRestart callback with gradient "
            "training."
        )


class EMACodebookMixin:
    """Codebook weight and its EMA training for a `Bottleneck` with `num_codes`.

    The host layer sets `codebook_update`, `decay`, `epsilon`,
    `dead_code_threshold` and `seed_generator` before `build`.
    """

    def _init_ema(self, codebook_update, decay, epsilon, dead_code_threshold):
        validate_ema_options(codebook_update, decay, epsilon, dead_code_threshold)
        self.codebook_update = codebook_update
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.dead_code_threshold = float(dead_code_threshold)
        self.ema_cluster_size = None
        self.ema_codeword_sum = None

    @property
    def uses_ema(self):
        return self.codebook_update == "ema"

    def _build_codebook(self, latent_dim, initializer):
        ema = self.uses_ema
        aggregation = "mean" if ema else "none"
        self.codebook = self.add_weight(
            shape=(self.num_codes, latent_dim),
            initializer=initializer,
            trainable=not ema,
            aggregation=aggregation,
            name="codebook",
        )
        if not ema:
            return

        def initial_sum(shape, dtype=None):
            # N starts at 1, so m starts at the initial codebook.
            # A copy: two variables sharing one buffer break JAX buffer donation.
            return ops.copy(ops.convert_to_tensor(self.codebook.value, dtype=dtype))

        self.ema_cluster_size = self.add_weight(
            shape=(self.num_codes,),
            initializer="ones",
            trainable=False,
            aggregation=aggregation,
            name="ema_cluster_size",
        )
        self.ema_codeword_sum = self.add_weight(
            shape=(self.num_codes, latent_dim),
            initializer=initial_sum,
            trainable=False,
            aggregation=aggregation,
            name="ema_codeword_sum",
        )

    def _ema_update(self, z, assignments, active=None):
        """One EMA step from `z (batch, d)` and weights `assignments (batch, K)`.

        `active`: an optional boolean scalar tensor; when false the statistics
        and the codebook keep their values (a residual stage dropped by
        quantizer dropout), without a Python branch on a traced value.
        """
        z = ops.stop_gradient(ops.cast(z, "float32"))
        assignments = ops.stop_gradient(ops.cast(assignments, "float32"))
        decay = self.decay
        counts = ops.sum(assignments, axis=0)
        sums = ops.matmul(ops.transpose(assignments), z)
        size = decay * self.ema_cluster_size + (1.0 - decay) * counts
        total = decay * self.ema_codeword_sum + (1.0 - decay) * sums
        n = ops.sum(size)
        smoothed = (size + self.epsilon) / (n + self.num_codes * self.epsilon) * n
        codebook = total / smoothed[:, None]
        if self.dead_code_threshold > 0:
            dead, rows = self._dead_code_rows(size, ops.shape(z)[0])
            codebook = ops.where(dead[:, None], ops.take(z, rows, axis=0), codebook)
            size = ops.where(dead, self.dead_code_threshold, size)
            total = ops.where(dead[:, None], codebook * size[:, None], total)
        if active is not None:
            size = ops.where(active, size, self.ema_cluster_size.value)
            total = ops.where(active, total, self.ema_codeword_sum.value)
            codebook = ops.where(active, codebook, self.codebook.value)
        self.ema_cluster_size.assign(size)
        self.ema_codeword_sum.assign(total)
        self.codebook.assign(codebook)

    def _dead_code_rows(self, size, batch):
        """Which codes to replace `(K,)` and the distinct batch row of each.

        Codes under the threshold are ranked in a random order; the first
        `batch` of them take the rows of a random permutation of the batch, in
        that order (no row twice). The others wait for a later step.
        """
        k = self.num_codes
        dead = size < self.dead_code_threshold
        code_order = keras.random.shuffle(ops.arange(k), seed=self.seed_generator)
        row_order = keras.random.shuffle(ops.arange(batch), seed=self.seed_generator)
        dead_in_order = ops.cast(ops.take(dead, code_order), "int32")
        rank_in_order = ops.cumsum(dead_in_order) - 1
        rank = ops.take(rank_in_order, ops.argsort(code_order))
        chosen = ops.logical_and(dead, rank < batch)
        rows = ops.take(row_order, ops.clip(rank, 0, batch - 1))
        return chosen, rows

    def set_codebook(self, values):
        """Assign new codewords (callbacks: K-means init, restarts).

        With EMA training the statistics are reset consistently: every
        cluster size keeps its value and the sums become `e_k * N'_k`, so the
        next step starts from `values`.
        """
        values = ops.convert_to_tensor(values, dtype="float32")
        self.codebook.assign(values)
        if self.uses_ema:
            size = ops.convert_to_tensor(self.ema_cluster_size)
            n = ops.sum(size)
            smoothed = (size + self.epsilon) / (n + self.num_codes * self.epsilon) * n
            self.ema_codeword_sum.assign(values * smoothed[:, None])

    def _ema_config(self):
        return {
            "codebook_update": self.codebook_update,
            "decay": self.decay,
            "epsilon": self.epsilon,
            "dead_code_threshold": self.dead_code_threshold,
        }
