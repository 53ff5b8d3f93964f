"""Constants and helpers shared by the serving tests (imported by basename)."""

import numpy as np

#: Limits the test server runs with (the service's defaults are 512 images and 16 MiB).
TEST_MAX_BATCH = 64
TEST_MAX_BODY_BYTES = 256 * 1024
#: The fabricated colour run of `rgb_server` (height 12, width 10: a swap would show).
RGB_SHAPE = (12, 10, 3)
CLASS_NAMES = ["cat", "dog", "bird"]
#: API keys of `rgb_server`.
KEYS = ["first-key-0123456789", "second-key-9876543210"]


def png_bytes(pixels):
    """An 8-bit greyscale PNG of `pixels` (0-255)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()
