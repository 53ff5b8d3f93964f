"""Code indices in requests to `/decode`: their layout, checks and OpenAPI schema.

A quantizer run (vq, softvq, fsq, lfq, rvq) maps each image to code indices:
one integer per image for a single-stage quantizer, one per stage for a
residual one (`num_quantizers` columns). `/codes` answers them with the number
of codes of each stage, and `/decode` takes them back in exactly that form:

    {"indices": [3, 17, 0]}                      # vq, softvq, fsq, lfq: one per image
    {"indices": [[3, 1, 0, 7], [5, 5, 2, 0]]}    # rvq with 4 stages: a list per image

Nothing here imports Keras or BentoML. `CodeLayout.from_config(config)` reads
the layout from config.json's `bottleneck` settings (for the schema, built
when the service module is imported); the service checks requests against the
layout of the loaded layer itself (`serving/code_model.py`).
"""

import math
from dataclasses import dataclass

import numpy as np

from serving.validation import InvalidInput


@dataclass(frozen=True)
class CodeLayout:
    """The indices of one run's quantizer and the request limit.

    `codes_per_stage`: the number of codes of each stage (one entry unless
    residual); `columns`: 0 when each image has one index (`(N,)`), else the
    number of indices per image (`(N, columns)`); `model`: the run's model
    name, for messages.
    """

    codes_per_stage: tuple
    columns: int
    max_batch: int
    model: str = "quantizer"

    @classmethod
    def from_config(cls, config, max_batch):
        """The layout config.json describes, or None for a run without codes.

        Read from `bottleneck` (the layer's `get_config()`): `levels` (FSQ:
        their product), `codebook_size` (LFQ), `num_quantizers` with
        `num_codes` (residual VQ), `num_codes` (VQ, soft VQ).
        """
        settings = config.get("bottleneck") or {}
        model = str(config.get("model") or "quantizer")
        if settings.get("levels"):
            stages = [math.prod(int(n) for n in settings["levels"])]
        elif settings.get("codebook_size"):
            stages = [int(settings["codebook_size"])]
        elif settings.get("num_codes"):
            stages = [int(settings["num_codes"])]
        else:
            return None
        columns = 0
        if settings.get("num_quantizers"):
            columns = int(settings["num_quantizers"])
            stages = stages * columns
        return cls(tuple(stages), columns, int(max_batch), model)

    @property
    def per_image(self):
        """The shape of one image's indices: `()` or `(columns,)`."""
        return (self.columns,) if self.columns else ()

    def _range(self, stage=None):
        if stage is None and len(set(self.codes_per_stage)) == 1:
            stage = 0
        if stage is not None:
            return f"from 0 to {self.codes_per_stage[stage] - 1}"
        return "from 0 to " + ", ".join(f"{k - 1}" for k in self.codes_per_stage) + " by stage"

    @property
    def form(self):
        """What each image's indices are, in words."""
        if not self.columns:
            return f"one integer {self._range()} per image"
        return (f"a list of {self.columns} integers per image (one per stage), each "
                f"{self._range()}")

    @property
    def expected(self):
        """One sentence describing a valid `indices` value (used in every error)."""
        return (f'expected {{"indices": [...]}} holding the code indices of 1 to '
                f"{self.max_batch} images, {self.form}, as /codes answers")


def _first_non_integer(value, path="indices"):
    """Path and description of the first element that is not an integral number."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _first_non_integer(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = ("null" if value is None else "a boolean" if isinstance(value, bool)
                else "a string" if isinstance(value, str)
                else "an object" if isinstance(value, dict) else type(value).__name__)
        return path, kind
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return path, f"{value!r}, not an integer"
    return None


def _shape(value):
    """The shape of a nested list if it is rectangular, else None."""
    if not isinstance(value, (list, tuple)):
        return ()
    shapes = {_shape(item) for item in value}
    if len(shapes) > 1 or None in shapes:
        return None
    return (len(value),) + (shapes.pop() if shapes else ())


def indices_from_json(indices, layout):
    """Check the `indices` field of a `/decode` request; return int32 `(N,) + per_image`.

    Raises `InvalidInput` (400 when the field is missing, else 422) for a value
    that is not a list, an empty list, more than `max_batch` images, elements
    that are not integers (strings, booleans, nulls, fractions), the wrong shape
    (a list per image for a single-stage quantizer, or lists of the wrong
    length for a residual one) and indices outside `0..K-1` of their stage.
    """
    if indices is None:
        raise InvalidInput(f'missing "indices": {layout.expected}', 400)
    if not isinstance(indices, list):
        raise InvalidInput(f'"indices" must be a list, got {type(indices).__name__}: '
                           f"{layout.expected}")
    if not indices:
        raise InvalidInput(f'"indices" is empty: {layout.expected}')
    if len(indices) > layout.max_batch:
        raise InvalidInput(f"batch too large: {len(indices)} images, the limit is "
                           f"{layout.max_batch} per request (split the batch): "
                           f"{layout.expected}")
    bad = _first_non_integer(indices)
    if bad:
        raise InvalidInput(f"{bad[0]} is {bad[1]}; code indices must be integers: "
                           f"{layout.expected}")
    shape = _shape(indices)
    if shape is None or shape[1:] != layout.per_image:
        got = ("ragged lists" if shape is None
               else "array [" + ", ".join(str(n) for n in shape) + "]")
        want = "[N]" if not layout.columns else f"[N, {layout.columns}]"
        raise InvalidInput(f"wrong indices shape: got {got}, this run's {layout.model} "
                           f"takes {want}: {layout.expected}")
    array = np.asarray(indices, dtype=np.float64)
    limits = np.asarray(layout.codes_per_stage[:max(layout.columns, 1)], dtype=np.float64)
    outside = (array < 0) | (array >= limits)  # broadcasts over the stage columns
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        stage = where[1] if layout.columns else 0
        path = "indices" + "".join(f"[{i}]" for i in where)
        of_stage = f"stage {stage + 1} of " if layout.columns else ""
        raise InvalidInput(
            f"{path} is {array[where]:g}: {of_stage}this run's {layout.model} has "
            f"{layout.codes_per_stage[stage]} codes, so its indices go "
            f"{layout._range(stage)}; {layout.expected}")
    return array.astype(np.int32)


def indices_schema(layout, max_batch):
    """The JSON schema of `indices` for `layout` (None: any quantizer's form).

    BentoML's Python client encodes arguments by `/schema.json`, where BentoML
    keeps only the first branch of an `anyOf`: the generic form therefore puts
    the integer first, so that the client passes lists through unchanged.
    """
    if layout is None:
        index = {"type": "integer", "minimum": 0}
        item = {"anyOf": [index, {"type": "array", "minItems": 1, "items": index}]}
        description = ("The code indices of 1 to {n} images as /codes answers them: one "
                       "integer per image, or a list of one per stage for residual VQ.")
        example = [0]
    else:
        highest = max(layout.codes_per_stage) - 1
        item = {"type": "integer", "minimum": 0, "maximum": highest}
        example = [0]
        if layout.columns:
            item = {"type": "array", "minItems": layout.columns,
                    "maxItems": layout.columns, "items": item}
            example = [[0] * layout.columns]
        description = ("The code indices of 1 to {n} images as /codes answers them: "
                       + layout.form + ".")
    return {"type": "array", "minItems": 1, "maxItems": int(max_batch), "items": item,
            "description": description.format(n=max_batch), "example": example}
