"""Request checking for the service: JSON pixel lists and PNG/JPEG uploads to arrays.

Nothing here imports Keras or BentoML: every check is plain NumPy (and Pillow
for uploads), so it is cheap and testable on its own. A bad request raises
`InvalidInput` with an HTTP status and a message that names the problem and
says what was expected; the service turns it into a JSON error response.

Accepted images are raw pixel values as the dataset stores them (0 to
`pixel_max`: 255, or 16 for `digits`), a batch of one or more, each image
shaped like one stored example (`image_shape`, e.g. 28x28), like the
encoder's input (`input_shape`, e.g. 784) or flat.
"""

import io
import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class InvalidInput(ValueError):
    """A request the service refuses; `status` is the HTTP status to answer."""

    def __init__(self, message, status=422):
        super().__init__(message)
        self.message = message
        self.status = status


def _shape_text(shape):
    return ", ".join(str(n) for n in shape)


@dataclass(frozen=True)
class ImageSpec:
    """What one image of a run's dataset looks like, and the request limits.

    Built from the run's config.json (`image_shape`, `input_shape`,
    `pixel_max`, `offset`) and the service's limits.
    """

    image_shape: tuple
    input_shape: tuple
    pixel_max: float
    offset: float
    max_batch: int

    @classmethod
    def from_config(cls, config, max_batch):
        return cls(
            image_shape=tuple(int(n) for n in config["image_shape"]),
            input_shape=tuple(int(n) for n in config["input_shape"]),
            pixel_max=float(config["pixel_max"]),
            offset=float(config["offset"]),
            max_batch=int(max_batch),
        )

    @property
    def channels(self):
        """1 for greyscale runs (image_shape [H, W]), 3 for colour ([H, W, 3])."""
        return int(self.image_shape[2]) if len(self.image_shape) == 3 else 1

    @property
    def flat_size(self):
        return math.prod(self.image_shape)

    @property
    def accepted_shapes(self):
        """Per-image shapes accepted, in the order they are documented."""
        shapes = [self.image_shape, self.input_shape, (self.flat_size,)]
        return list(dict.fromkeys(shapes))

    @property
    def expected(self):
        """One sentence describing a valid `images` value (used in every error)."""
        shapes = " or ".join(f"[{_shape_text(s)}]" for s in self.accepted_shapes)
        return (
            f'expected {{"images": [...]}} holding 1 to {self.max_batch} images, each '
            f"an array shaped {shapes} of raw pixel values from 0 to "
            f"{self.pixel_max:g} (a batch is [N, {_shape_text(self.image_shape)}] or "
            f"[N, {self.flat_size}])"
        )

    def scale(self, raw):
        """Raw pixels `(N, ...)` to the encoder's float32 input `(N,) + input_shape`.

        `raw / pixel_max + offset`, as `softvq_keras.data.preprocess` does in
        training.
        """
        x = np.asarray(raw, dtype=np.float32).reshape((-1,) + self.input_shape)
        return x / np.float32(self.pixel_max) + np.float32(self.offset)


def _describe(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _first_non_number(value, path="images"):
    """Path and description of the first element that is not a JSON number."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _first_non_number(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return path, _describe(value)
    return None


def _first_ragged(value, path="images"):
    """Path and lengths of the first list whose items are not alike in shape."""
    if not isinstance(value, (list, tuple)) or not value:
        return None
    kinds = [len(v) if isinstance(v, (list, tuple)) else None for v in value]
    for i, kind in enumerate(kinds):
        if kind != kinds[0]:
            first = "a number" if kinds[0] is None else f"{kinds[0]} items"
            this = "a number" if kind is None else f"{kind} items"
            return (
                f"{path} is ragged: {path}[0] has {first} but {path}[{i}] has {this}"
            )
    for i, item in enumerate(value):
        found = _first_ragged(item, f"{path}[{i}]")
        if found:
            return found
    return None


def _as_array(images, spec):
    """The JSON `images` value as a float64 array, or `InvalidInput`."""
    if images is None:
        raise InvalidInput(f'missing "images": {spec.expected}', 400)
    if not isinstance(images, list):
        raise InvalidInput(
            f'"images" must be a list of images, got {_describe(images)}: {spec.expected}'
        )
    if not images:
        raise InvalidInput(f'"images" is empty: {spec.expected}')
    if len(images) > spec.max_batch:
        raise InvalidInput(
            f"batch too large: {len(images)} images, the limit is {spec.max_batch} per "
            f"request (split the batch): {spec.expected}"
        )
    try:
        array = np.asarray(images)
    except (ValueError, TypeError, OverflowError):
        array = None  # ragged (NumPy refuses inhomogeneous lists) or odd values
    if array is None or array.dtype.kind not in "iuf":
        bad = _first_non_number(images)
        if bad:
            path, what = bad
            raise InvalidInput(
                f"{path} is {what}; pixel values must be numbers: {spec.expected}"
            )
        ragged = _first_ragged(images)
        if ragged:
            raise InvalidInput(f"{ragged}: {spec.expected}")
        try:  # numbers too large for int64, e.g. 1e30 written as an integer
            array = np.asarray(images, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise InvalidInput(f'"images" is not a numeric array: {spec.expected}')
    return array


def check_range(array, spec):
    """Refuse NaN/Inf and values outside 0..pixel_max, naming the first culprit."""
    values = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InvalidInput(
            f"images{list(index)} is {values[index]}: pixel values must be finite "
            f"numbers from 0 to {spec.pixel_max:g}; {spec.expected}"
        )
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > spec.pixel_max:
        culprit = values < 0 if low < 0 else values > spec.pixel_max
        index = tuple(int(i) for i in np.argwhere(culprit)[0])
        raise InvalidInput(
            f"images{list(index)} is {values[index]:g}: pixel values must be raw "
            f"pixels from 0 to {spec.pixel_max:g} (the dataset's stored range, not "
            f"scaled), got values from {low:g} to {high:g}; {spec.expected}"
        )


def images_from_json(images, spec):
    """Check the `images` field of a JSON request; return float32 model inputs.

    Returns `(N,) + input_shape` scaled as in training. Raises `InvalidInput`
    for a missing or empty list, a batch over the limit, strings, booleans or
    nulls, ragged rows, a wrong per-image shape or rank, NaN/Inf and values
    outside 0..pixel_max.
    """
    array = _as_array(images, spec)
    per_image = tuple(array.shape[1:])
    if per_image not in spec.accepted_shapes:
        rank = "a number" if not per_image else f"shaped [{_shape_text(per_image)}]"
        unbatched = array.shape in (spec.image_shape, spec.input_shape, (spec.flat_size,))
        raise InvalidInput(
            f"wrong image shape: got {array.shape[0]} image(s), each {rank} "
            f"(array [{_shape_text(array.shape)}]); {spec.expected}"
            + (" (this looks like a single image: wrap it in a list)" if unbatched else "")
        )
    check_range(array, spec)
    return spec.scale(array)


JPEG_SIGNATURE = b"\xff\xd8\xff"


def _png_size(data):
    """(width, height, bit depth, colour type) from the PNG's IHDR chunk."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InvalidInput("the upload is not a valid PNG: its IHDR header is missing", 400)
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    return width, height, data[24], data[25]


def image_from_upload(data, spec):
    """Decode one uploaded PNG or JPEG into the float32 model input `(1,) + input_shape`.

    The file must be an 8-bit PNG or a JPEG sized like one image of the run
    (`image_shape`, e.g. 28x28; the size is checked from the header before
    any pixel is decoded). It is converted to the run's channels with Pillow:
    greyscale runs take luminance (`convert("L")`), colour runs RGB (alpha is
    dropped). Its 0-255 values are mapped to the dataset's range (`value / 255
    * pixel_max`; the identity for 255-valued data) before the training
    scaling. Raises `InvalidInput` for anything else.
    """
    height, width = spec.image_shape[:2]
    colour = "RGB" if spec.channels == 3 else "greyscale"
    expected = (
        f"expected one 8-bit PNG or JPEG image of {width}x{height} pixels ({colour}; "
        f"other sizes must be resized first) in the multipart field \"image\""
    )
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise InvalidInput(f"no file uploaded: {expected}", 400)
    data = bytes(data)
    if data[:8] == PNG_SIGNATURE:
        kind = "PNG"
        got_width, got_height, bit_depth, _ = _png_size(data)
        if (got_height, got_width) != (height, width):
            raise InvalidInput(f"the PNG is {got_width}x{got_height} pixels: {expected}")
        if bit_depth > 8:
            raise InvalidInput(f"the PNG has {bit_depth}-bit samples: {expected}")
    elif data[:3] == JPEG_SIGNATURE:
        kind = "JPEG"
    else:
        raise InvalidInput(
            f"the upload is neither a PNG nor a JPEG (it starts with {data[:8]!r}; a PNG "
            f"starts with {PNG_SIGNATURE!r}, a JPEG with {JPEG_SIGNATURE!r}): {expected}",
            400,
        )
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            if image.size != (width, height):  # from the header, before decoding
                raise InvalidInput(
                    f"the {kind} is {image.size[0]}x{image.size[1]} pixels: {expected}"
                )
            image.load()
            mode = "RGB" if spec.channels == 3 else "L"
            if image.mode in ("I;16", "I;16B", "I", "F"):
                raise InvalidInput(f"the {kind} has {image.mode} samples, not 8-bit: "
                                   f"{expected}")
            pixels = np.asarray(image.convert(mode), dtype=np.float64)
    except InvalidInput:
        raise
    except (OSError, ValueError, SyntaxError, zlib.error, Image.DecompressionBombError) as e:
        reason = re.sub(r"\s*<[^>]*>", "", str(e)) or type(e).__name__
        raise InvalidInput(
            f"could not decode the {kind} ({reason}; is it truncated or corrupt?): "
            f"{expected}",
            400,
        ) from None
    raw = pixels.reshape((1,) + spec.image_shape) / 255.0 * spec.pixel_max
    return spec.scale(raw)


#: The name used before JPEG uploads were accepted.
image_from_png = image_from_upload
