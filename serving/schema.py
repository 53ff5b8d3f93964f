"""The OpenAPI description of the `images` field, from the served run's config.json.

BentoML builds the OpenAPI spec (`/docs.json`, the page at `/`) from the API
signatures when the service module is imported. `images_schema(config,
max_batch)` says exactly what the JSON routes accept for that run: a list of
1 to `max_batch` images, each one of the accepted per-image shapes (nested
arrays of the exact lengths) of numbers from 0 to `pixel_max`, and an example
of one image of the run's own shape, so that "Try it out" on the page (and a
fuzzer reading the spec) sends requests the model answers.

The layouts are a `oneOf` (a batch is all `[H, W]` images or all flat ones;
the shapes differ, so exactly one matches), also when there is one layout.
Not `anyOf`: BentoML's `/schema.json` (what `bentoml.SyncHTTPClient` reads)
flattens an `anyOf` to its first branch, and the client then encodes every
argument by that branch, element by element: a flat batch, or any wrong
shape, died in the client (`TypeError: 'int' object is not iterable`)
instead of reaching the server and its 422. A `oneOf` is kept as it is in
both `/schema.json` and `/docs.json`, and the client sends the value
untouched.
"""

import math

from serving.run_folder import RunFolderError, read_config
from serving.store import default_run_dir

#: Used when no run folder can be read at import time (e.g. `bentoml build`
#: before a run exists): MNIST's shapes.
FALLBACK_CONFIG = {"image_shape": [28, 28], "input_shape": [784], "pixel_max": 255,
                   "offset": 0.0, "latent_dim": 0}


def served_config():
    """config.json of the run the service will serve, or `FALLBACK_CONFIG`."""
    try:
        return read_config(default_run_dir())
    except RunFolderError:
        return dict(FALLBACK_CONFIG)


def _nested(shape, leaf):
    """JSON schema of a nested array of exactly `shape`, leaves `leaf`."""
    schema = leaf
    for n in reversed(shape):
        schema = {"type": "array", "minItems": int(n), "maxItems": int(n), "items": schema}
    return schema


def accepted_shapes(config):
    """Per-image shapes the JSON routes take: image_shape, input_shape, flat."""
    image_shape = tuple(int(n) for n in config["image_shape"])
    shapes = [image_shape, tuple(int(n) for n in config["input_shape"]),
              (math.prod(image_shape),)]
    return list(dict.fromkeys(shapes))


def images_schema(config, max_batch):
    """The JSON schema of `images` for the run described by `config`."""
    image_shape = [int(n) for n in config["image_shape"]]
    pixel_max = float(config["pixel_max"])
    leaf = {"type": "number", "minimum": 0, "maximum": int(pixel_max)
            if pixel_max.is_integer() else pixel_max}
    shapes = accepted_shapes(config)
    per_image = [_nested(s, leaf) for s in sorted(shapes, key=len)]  # flattest first
    shown = " or ".join("[" + ", ".join(str(n) for n in s) + "]" for s in shapes)
    example = 0
    for n in reversed(image_shape):
        example = [example] * n
    batches = [{"type": "array", "minItems": 1, "maxItems": int(max_batch), "items": item}
               for item in per_image]
    return {
        # One layout per request: a batch is all [H, W] images or all flat ones.
        # Kept a oneOf even for one layout: see the module docstring.
        "oneOf": batches,
        "description": (
            f"A batch of 1 to {max_batch} images of raw pixel values from 0 to "
            f"{pixel_max:g} (as the dataset stores them; the service scales them as in "
            f"training), each an array shaped {shown} (one layout per request)."
        ),
        "example": [example],
    }
