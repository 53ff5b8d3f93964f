"""The extra rows of `training.table --extra`: a paper model with one changed option.

Each entry of `VARIANTS` names one row (e.g. `softvq+kmeans-init`), the paper
model it starts from, the `training.fit.run` options it changes (or a function
of the data that computes them) and a sentence for the table's notes.
"""


def _notebook_beta(info, pixel_variance):
    """beta-VAE with the notebook's KL weight against an MSE *not* divided by the
    pixel variance: our reconstruction term is MSE / var, so the same balance
    needs beta / var (MNIST: 20 / 0.095 = 211). `info`: the data's `SourceInfo`."""
    from training.fit import load_presets

    return {"beta": load_presets().preset(info.preset)["betavae_beta"] / pixel_variance}


def _notebook_epsilon(info, pixel_variance):
    """Adam's epsilon that makes our loss (the notebook's / pixels per image) take
    the notebook's steps: Adam(eps) on L / n equals Adam(n * eps) on L."""
    import math

    return {"adam_epsilon": 1e-8 / math.prod(info.input_shape)}


#: Extra rows: name -> (paper model, `training.fit.run` options or a function
#: (the data's SourceInfo, training pixel variance) -> options, what the row changes).
VARIANTS = {
    "softvq+kmeans-init": (
        "softvq", {"codebook_init": "kmeans"},
        "soft VQ, codebook re-initialized after epoch 1 to the K-means centroids "
        "of 10,000 training latents",
    ),
    "softvq+restarts": (
        "softvq", {"dead_code_restarts": True},
        "soft VQ, codewords no input picks are moved onto encoder outputs before "
        "every epoch",
    ),
    "softvq+kmeans-init+restarts": (
        "softvq", {"codebook_init": "kmeans", "dead_code_restarts": True},
        "soft VQ, codebook re-initialized after epoch 1 by K-means of the latents, "
        "and dead-code restarts before every epoch",
    ),
    "softvq+per-code-variance": (
        "softvq", {"variance": "per_code"},
        "soft VQ with one free variance per codeword in place of the per-input s head",
    ),
    "softvq+svhn-code": (
        "softvq", {"softvq_weighting": "svhn_code"},
        "soft VQ with the SVHN notebook's posterior weights (softmax of -lambda_k D_k / 2, "
        "each weight then scaled by sigma_k; the presets use the MNIST notebook's)",
    ),
    "vq+kmeans-init": (
        "vq", {"codebook_init": "kmeans"},
        "hard VQ, codebook re-initialized after epoch 1 by K-means of the latents",
    ),
    "vq+restarts": (
        "vq", {"dead_code_restarts": True},
        "hard VQ with dead-code restarts before every epoch",
    ),
    "vq+kmeans-init+restarts": (
        "vq", {"codebook_init": "kmeans", "dead_code_restarts": True},
        "hard VQ, codebook re-initialized after epoch 1 by K-means of the latents, "
        "and dead-code restarts before every epoch",
    ),
    "vq+ema": (
        "vq", {"codebook_update": "ema"},
        "hard VQ whose codebook follows exponential moving averages of the assigned "
        "encoder outputs (decay 0.99; no codebook loss term)",
    ),
    "softvq+ema": (
        "softvq", {"codebook_update": "ema"},
        "soft VQ whose codebook follows exponential moving averages weighted by the "
        "posterior (soft counts; decay 0.99; the codebook gets no gradient, but the "
        "codebook loss term stays: through the posterior it also trains the encoder "
        "and the variance head)",
    ),
    "vq+rotation": (
        "vq", {"rotation_trick": True},
        "hard VQ whose codewords reach the decoder through the rotation trick "
        "(Fifty et al. 2024) instead of straight-through",
    ),
    "vq+k1024": (
        "vq", {"codebook_size": 1024},
        "hard VQ with the paper's recipe and K = 1024 codes (10 bits per image) "
        "in place of 128",
    ),
    "vq+rotation+k1024": (
        "vq", {"codebook_size": 1024, "rotation_trick": True, "codebook_update": "ema",
               "dead_code_threshold": 0.03, "codebook_init": "kmeans"},
        "hard VQ with K = 1024 (10 bits) trained to use its codebook: the rotation "
        "trick, an EMA codebook whose codes under 0.03 picks per batch move onto "
        "encoder outputs, K-means initialization after epoch 1",
    ),
    "infodropout+notebook": (
        "infodropout", {"infodropout_weighting": "notebook"},
        "information dropout with the authors' notebook weighting (cost averaged "
        "over batch and units, linear z head)",
    ),
    "betavae+notebook-adam-eps": (
        "betavae", _notebook_epsilon,
        "beta-VAE with Adam's epsilon at the notebook's TF1 1e-8 divided by the "
        "pixels per image (our loss is the notebook's divided by that number, and "
        "Adam is invariant to the loss scale except for epsilon; Keras: 1e-7)",
    ),
    "betavae+raw-mse-beta": (
        "betavae", _notebook_beta,
        "beta-VAE whose beta is divided by the training-pixel variance, i.e. the "
        "notebook's KL weight against an MSE not normalized by that variance",
    ),
}
