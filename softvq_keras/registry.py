"""One registry from the command-line names to bottleneck layers."""

import math

from softvq_keras.layers import (
    FiniteScalarQuantizer,
    IdentityBottleneck,
    InformationDropout,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
    SoftVectorQuantizer,
    VariationalBottleneck,
    VectorQuantizer,
)
from softvq_keras.presets import dataset_info, preset


def _reconstruction_size(dataset, p=None):
    if p is not None and p.get("input_shape"):
        return math.prod(p["input_shape"])
    return math.prod(dataset_info(dataset).input_shape)


def _ae(p, dataset, seed):
    return IdentityBottleneck(name="bottleneck")


def _vae(p, dataset, seed, beta_key="vae_beta"):
    return VariationalBottleneck(
        beta=p[beta_key],
        reconstruction_size=_reconstruction_size(dataset, p),
        seed=seed,
        name="bottleneck",
    )


def _betavae(p, dataset, seed):
    return _vae(p, dataset, seed, beta_key="betavae_beta")


def _infodropout(p, dataset, seed):
    return InformationDropout(
        beta=p["infodropout_beta"],
        max_alpha=p["max_alpha"],
        reconstruction_size=_reconstruction_size(dataset, p),
        seed=seed,
        weighting=p.get("infodropout_weighting", "safe"),
        name="bottleneck",
    )


def _ema(p):
    """The EMA codebook options (layer defaults unless overridden)."""
    return dict(
        codebook_update=p.get("codebook_update", "gradient"),
        decay=p.get("decay", 0.99),
        epsilon=p.get("ema_epsilon", 1e-5),
        dead_code_threshold=p.get("dead_code_threshold", 0.0),
    )


def _vq(p, dataset, seed):
    return VectorQuantizer(
        num_codes=p["vq_codes"],
        commitment_cost=p["commitment_cost"],
        loss_weight=p["loss_weight"],
        codebook_initializer=p["codebook_initializer"],
        seed=seed,
        rotation_trick=p.get("rotation_trick", False),
        **_ema(p),
        name="bottleneck",
    )


def _fsq(p, dataset, seed):
    return FiniteScalarQuantizer(
        levels=p["fsq_levels"], latent_norm=p["latent_norm"], name="bottleneck"
    )


def _lfq(p, dataset, seed):
    return LookupFreeQuantizer(
        codebook_size=p["lfq_codes"], latent_norm=p["latent_norm"], name="bottleneck"
    )


def _rvq(p, dataset, seed):
    return ResidualVectorQuantizer(
        num_quantizers=p["rvq_stages"],
        num_codes=p["rvq_codes"],
        commitment_cost=p["commitment_cost"],
        loss_weight=p["loss_weight"],
        codebook_initializer=p["codebook_initializer"],
        rotation_trick=p.get("rotation_trick", False),
        quantizer_dropout=p.get("quantizer_dropout", False),
        seed=seed,
        **_ema(p),
        name="bottleneck",
    )


def _softvq(p, dataset, seed):
    return SoftVectorQuantizer(
        num_codes=p["softvq_codes"],
        commitment_cost=p["commitment_cost"],
        loss_weight=p["loss_weight"],
        weighting=p["weighting"],
        latent_noise_stddev=p.get("latent_noise_stddev", 0.0),
        variance=p.get("variance", "per_input"),
        codebook_initializer=p["codebook_initializer"],
        seed=seed,
        **_ema(p),
        name="bottleneck",
    )


#: Settings that are layer options rather than preset keys (defaults in the layers).
LAYER_OPTIONS = {
    "softvq": {"latent_noise_stddev", "variance"},
    "infodropout": {"infodropout_weighting"},
}
EMA_OPTIONS = {"codebook_update", "decay", "ema_epsilon", "dead_code_threshold"}
for _name in ("vq", "softvq", "rvq"):
    LAYER_OPTIONS[_name] = LAYER_OPTIONS.get(_name, set()) | EMA_OPTIONS
for _name in ("vq", "rvq"):
    LAYER_OPTIONS[_name] |= {"rotation_trick"}
LAYER_OPTIONS["rvq"] |= {"quantizer_dropout"}
#: The preset key `codebook_size` sets, per model (fsq: `levels`).
CODEBOOK_SIZE_KEYS = {
    "vq": "vq_codes", "softvq": "softvq_codes", "lfq": "lfq_codes", "rvq": "rvq_codes",
}

BOTTLENECKS = {
    "ae": _ae,
    "vae": _vae,
    "betavae": _betavae,
    "infodropout": _infodropout,
    "vq": _vq,
    "softvq": _softvq,
    "fsq": _fsq,
    "lfq": _lfq,
    "rvq": _rvq,
}


def bottleneck_settings(model, dataset, **overrides):
    """The preset of `dataset` with `overrides` applied (None values ignored).

    `codebook_size` sets the K of vq, softvq, lfq (a power of two) and rvq
    (per stage); `levels` the levels of fsq; `num_quantizers` the stages of
    rvq; `beta` sets the KL weight of `vae`, `betavae` or `infodropout`;
    `latent_noise_stddev` and `variance` are passed to `SoftVectorQuantizer`;
    `codebook_update`, `decay`, `ema_epsilon` and `dead_code_threshold` to vq,
    softvq and rvq (EMA codebook); `rotation_trick` to vq and rvq;
    `quantizer_dropout` to rvq; `latent_norm` (`"batch"` in the presets,
    `"none"` to turn it off) to fsq and lfq; `infodropout_weighting` to
    `InformationDropout`. A layer option given to a model that does not have
    it is an error.
    """
    if model not in BOTTLENECKS:
        raise ValueError(
            f"Unknown model {model!r}; expected one of {list(BOTTLENECKS)}."
        )
    p = preset(dataset)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "codebook_size" in overrides:
        if model not in CODEBOOK_SIZE_KEYS:
            raise ValueError(
                f"codebook_size applies to {', '.join(CODEBOOK_SIZE_KEYS)}, not "
                f"{model}" + (" (set its levels)" if model == "fsq" else "") + "."
            )
        p[CODEBOOK_SIZE_KEYS[model]] = overrides.pop("codebook_size")
    if "levels" in overrides:
        if model != "fsq":
            raise ValueError(f"levels applies to fsq only, not {model}.")
        p["fsq_levels"] = tuple(overrides.pop("levels"))
    if "num_quantizers" in overrides:
        if model != "rvq":
            raise ValueError(f"num_quantizers applies to rvq only, not {model}.")
        p["rvq_stages"] = overrides.pop("num_quantizers")
    if "latent_norm" in overrides and model not in ("fsq", "lfq"):
        raise ValueError(f"latent_norm applies to fsq and lfq only, not {model}.")
    if "beta" in overrides:
        key = {"vae": "vae_beta", "betavae": "betavae_beta"}.get(
            model, "infodropout_beta"
        )
        p[key] = overrides.pop("beta")
    unknown = set(overrides) - set(p) - LAYER_OPTIONS.get(model, set())
    if unknown:
        raise ValueError(f"Unknown bottleneck settings: {sorted(unknown)}.")
    p.update(overrides)
    return p


def make_bottleneck(model, dataset="mnist", seed=None, input_shape=None, **overrides):
    """The bottleneck layer for CLI name `model` with `dataset`'s paper defaults.

    `input_shape` is the model's input shape when it differs from the
    dataset's (a user's images with the `dataset` preset): the KL terms of
    vae / betavae / infodropout are scaled by its size.

    >>> make_bottleneck("softvq", "mnist").num_codes
    128
    """
    settings = bottleneck_settings(model, dataset, **overrides)
    if input_shape is not None:
        settings["input_shape"] = tuple(input_shape)
    return BOTTLENECKS[model](settings, dataset, seed)
