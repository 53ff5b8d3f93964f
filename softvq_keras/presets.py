"""The paper's settings per dataset (../shared/method.md), in one place.

`DATASETS[name]` describes the data (shape, pixel range, scaling, architecture)
and `PRESETS[name]` the hyperparameters every bottleneck and the trainer default
to. `digits` is this project's embedded default (scikit-learn's 8x8 digits,
kept 8x8 = 64 pixels); its settings are ours, scaled down from MNIST's.
"""

from dataclasses import dataclass

#: The bottlenecks by command-line name, in the paper's table order (the keys of
#: `softvq_keras.BOTTLENECKS`; here so that Keras-free code can list them).
MODEL_NAMES = (
    "ae", "vae", "betavae", "infodropout", "vq", "softvq", "fsq", "lfq", "rvq",
)
#: The models with discrete codes (a `Quantizer` bottleneck: indices, codebook usage).
QUANTIZER_NAMES = ("vq", "softvq", "fsq", "lfq", "rvq")

#: Layer options beyond the paper, listed here for Keras-free code (the CLI):
#: how the quantizers' codebook learns (`codebook_update`, both quantizers)...
CODEBOOK_UPDATES = ("gradient", "ema")
#: ...`InformationDropout`'s cost (`weighting`)...
INFODROPOUT_WEIGHTINGS = ("safe", "notebook")
#: ...and `SoftVectorQuantizer`'s posterior weights (`weighting`; the presets'
#: `weighting` key): the MNIST notebook's, the SVHN notebook's, the textbook's.
SOFTVQ_WEIGHTINGS = ("mnist_code", "svhn_code", "gaussian")


@dataclass(frozen=True)
class DatasetInfo:
    """How a dataset's raw uint8 pixels become model inputs.

    `scaled = raw / pixel_max + offset`, then reshaped to `input_shape`.
    """

    name: str
    image_shape: tuple  # shape of one raw example as the dataset stores it
    input_shape: tuple  # shape the model takes
    pixel_max: float  # largest raw value (255, or 16 for digits)
    offset: float  # 0 for [0, 1] inputs, -0.5 for [-0.5, 0.5]
    architecture: str  # "mlp" or "cnn"
    tfds_name: str = ""


DATASETS = {
    "mnist": DatasetInfo("mnist", (28, 28), (784,), 255.0, 0.0, "mlp", "mnist"),
    "digits": DatasetInfo("digits", (8, 8), (64,), 16.0, 0.0, "mlp", ""),
    "svhn": DatasetInfo(
        "svhn", (32, 32, 3), (32, 32, 3), 255.0, -0.5, "cnn", "svhn_cropped"
    ),
    "cifar10": DatasetInfo(
        "cifar10", (32, 32, 3), (32, 32, 3), 255.0, -0.5, "cnn", "cifar10"
    ),
}

_MNIST = dict(
    latent_dim=64,
    softvq_codes=128,
    vq_codes=128,
    commitment_cost=2.5,
    loss_weight=3.0,
    vae_beta=1.0,
    betavae_beta=20.0,
    infodropout_beta=0.5,
    max_alpha=0.7,
    codebook_initializer="uniform_unit_scaling",
    weighting="mnist_code",
    # The modern quantizers with the paper's code budget (K = 128, 7 bits):
    fsq_levels=(8, 4, 4),  # 128 codes
    lfq_codes=128,  # 7 sign bits
    # fsq / lfq: standardize the projected latent over the batch before the
    # bound / sign (without it the MLP's latent drifts and uses one code).
    latent_norm="batch",
    # Residual VQ: 4 stages of the paper's K each (4 x 7 = 28 bits).
    rvq_stages=4,
    rvq_codes=128,
    batch_size=64,
    learning_rate=3e-4,
    steps=40_000,  # ~43 epochs of 60k
)
_SVHN = dict(
    _MNIST,
    latent_dim=256,
    softvq_codes=32,
    vq_codes=512,
    commitment_cost=7.5,
    loss_weight=2.0,
    betavae_beta=100.0,
    codebook_initializer="variance_scaling",
    fsq_levels=(8, 8, 8),  # 512 codes, the paper's VQ K (9 bits)
    lfq_codes=512,
    rvq_codes=512,  # 4 x 9 = 36 bits
    steps=10_000,  # ~9 epochs of 73,257
)

PRESETS = {
    "mnist": _MNIST,
    "svhn": _SVHN,
    # CIFAR-10 settings are not published: the SVHN ones.
    "cifar10": dict(_SVHN),
    # The embedded default: small enough to train in about a minute on 2 cores.
    "digits": dict(
        _MNIST, latent_dim=16, softvq_codes=32, vq_codes=32, steps=2_000,
        fsq_levels=(8, 4), lfq_codes=32, rvq_codes=32,
    ),
}


#: Class names of the built-in datasets (the others: "0" ... "9").
CLASS_NAMES = {
    "cifar10": [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ],
}

#: The preset a dataset of the user's (a folder, an .npz file, `tfds:NAME`)
#: takes, by architecture: MNIST's for the MLP, SVHN's for the CNN.
CUSTOM_PRESETS = {"mlp": "mnist", "cnn": "svhn"}


def class_names(name):
    """The class names of built-in dataset `name` (strings, one per label)."""
    dataset_info(name)
    return list(CLASS_NAMES.get(name, [str(i) for i in range(10)]))


def dataset_info(name):
    """`DatasetInfo` for `name`, or a ValueError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"Unknown dataset {name!r}; expected one of {sorted(DATASETS)}."
        ) from None


def code_bits(model, p):
    """Bits per image of quantizer `model` under preset (or settings) `p`:
    `log2` of the number of codes, summed over the stages; None for the others."""
    import math

    if model in ("vq", "softvq"):
        return math.log2(p[f"{model}_codes"])
    if model == "fsq":
        return sum(math.log2(level) for level in p["fsq_levels"])
    if model == "lfq":
        return math.log2(p["lfq_codes"])
    if model == "rvq":
        return p["rvq_stages"] * math.log2(p["rvq_codes"])
    return None


def preset(name):
    """A copy of the hyperparameter preset of dataset `name`."""
    dataset_info(name)
    return dict(PRESETS[name])
