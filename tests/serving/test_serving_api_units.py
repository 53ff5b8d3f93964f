"""API keys, content-type refusals, refusal log lines, the OpenAPI schema and
uploads of any kind, in process (no server)."""

import asyncio
import io
import json
import logging

import numpy as np
import pytest

from serving.auth import ApiKeyError, ApiKeyGuard, describe, load_api_keys
from serving.guard import content_type_problem
from serving.logs import RefusalFilter
from serving.run_folder import with_defaults
from serving.schema import images_schema
from serving.validation import ImageSpec, InvalidInput, image_from_upload, images_from_json

DIGITS = {"image_shape": [8, 8], "input_shape": [64], "pixel_max": 16.0, "offset": 0.0,
          "latent_dim": 16}
RGB = {"image_shape": [12, 10, 3], "input_shape": [12, 10, 3], "pixel_max": 255,
       "offset": -0.5, "latent_dim": 8}


# --- API keys -------------------------------------------------------------

def test_keys_from_variable_and_file(tmp_path):
    assert load_api_keys({}) == ()
    assert load_api_keys({"SOFTVQ_API_KEYS": " k1, k2 "}) == ("k1", "k2")
    path = tmp_path / "keys"
    path.write_text("# service keys\nfile-key-1\n\n  file-key-2  \n")
    keys = load_api_keys({"SOFTVQ_API_KEYS_FILE": str(path), "SOFTVQ_API_KEYS": "k1"})
    assert keys == ("k1", "file-key-1", "file-key-2")
    assert "3 key(s)" in describe(keys) and "file-key" not in describe(keys)
    assert describe(()).startswith("API keys: off, every route is open")


@pytest.mark.parametrize("environ, message", [
    ({"SOFTVQ_API_KEYS": ""}, "SOFTVQ_API_KEYS is set but empty"),
    ({"SOFTVQ_API_KEYS": " , "}, "SOFTVQ_API_KEYS: entry 1 is empty"),
    ({"SOFTVQ_API_KEYS": "a,,b"}, "SOFTVQ_API_KEYS: entry 2 is empty"),
    ({"SOFTVQ_API_KEYS": "a b"}, "entry 1 contains whitespace"),
    ({"SOFTVQ_API_KEYS_FILE": "EMPTY"}, "holds no key: write one key per line"),
    ({"SOFTVQ_API_KEYS_FILE": "MISSING"}, "SOFTVQ_API_KEYS_FILE: cannot read"),
])
def test_unusable_key_settings_are_refused(tmp_path, environ, message):
    (tmp_path / "EMPTY").write_text("\n# no key yet\n")
    environ = {k: (str(tmp_path / v) if k.endswith("FILE") else v) for k, v in environ.items()}
    with pytest.raises(ApiKeyError) as raised:
        load_api_keys(environ)
    assert message in str(raised.value)


def _asgi_call(app, path, headers=(), method="POST"):
    """Status, headers and body of one request through the ASGI `app`."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start.get("headers", [])), body


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_key_guard_refuses_missing_and_wrong_keys_and_leaves_probes_open():
    guard = ApiKeyGuard(_ok_app, keys=("s3cret-1", "s3cret-2"))
    status, headers, body = _asgi_call(guard, "/encode")
    assert status == 401 and headers[b"www-authenticate"].startswith(b"Bearer")
    assert json.loads(body)["error"].startswith(
        "missing API key: this service requires the header 'Authorization: Bearer <key>'")
    status, headers, body = _asgi_call(guard, "/encode", [("Authorization", "Bearer s3cret")])
    assert status == 401 and b'error="invalid_token"' in headers[b"www-authenticate"]
    assert json.loads(body)["error"].startswith("invalid API key")
    assert b"s3cret" not in body  # never echoed
    for header in ("Basic s3cret-1", "Bearer", "s3cret-1", "Bearer s3cret-1x"):
        assert _asgi_call(guard, "/encode", [("Authorization", header)])[0] == 401, header
    for key in ("s3cret-1", "s3cret-2"):
        assert _asgi_call(guard, "/classify", [("Authorization", f"Bearer {key}")])[0] == 200
        assert _asgi_call(guard, "/classify", [("Authorization", f"bearer  {key} ")])[0] == 200
    for path in ("/livez", "/readyz", "/healthz", "/ui", "/ui/", "/ui/app.js", "/docs.json",
                 "/schema.json"):
        assert _asgi_call(guard, path, method="GET")[0] == 200, path
    for path in ("/metrics", "/uix", "/encode_png"):
        assert _asgi_call(guard, path, method="GET")[0] == 401, path
    assert _asgi_call(ApiKeyGuard(_ok_app, keys=()), "/encode")[0] == 200  # keys off


# --- content types, log lines ---------------------------------------------

def test_content_types_that_cannot_be_meant_for_a_route():
    for media_type in (b"multipart/form-data", b"application/x-www-form-urlencoded"):
        status, message = content_type_problem("/encode", media_type)
        assert status == 415 and "send the JSON body with 'Content-Type: application/json'" in message
        assert content_type_problem("/encode_png", media_type) is None
    assert content_type_problem("/classify_png", b"application/vnd.bentoml+pickle")[0] == 415
    assert content_type_problem("/encode", b"application/json") is None
    assert content_type_problem("/encode", b"") is None


def _record(exc):
    try:
        raise exc
    except Exception:  # noqa: BLE001
        import sys

        return logging.LogRecord("bentoml._internal.server.http_app", logging.ERROR, __file__,
                                 1, "Exception on %s [%s]", ("/encode", "POST"), sys.exc_info())


def test_refused_request_is_one_info_line_and_server_faults_keep_the_traceback():
    from pydantic import BaseModel

    class Input(BaseModel):
        images: list

    try:
        Input.model_validate_json(b'{"images": [[1')
    except Exception as e:  # noqa: BLE001
        record = _record(e)
    assert RefusalFilter().filter(record)
    line = logging.Formatter("[%(levelname)s] %(message)s").format(record)
    assert line.count("\n") == 0 and line.startswith("[INFO] refused /encode [POST]")
    assert "Invalid JSON" in line and "Traceback" not in line and "[[1" not in line

    fault = _record(RuntimeError("the model broke"))
    assert RefusalFilter().filter(fault)
    text = logging.Formatter("[%(levelname)s] %(message)s").format(fault)
    assert text.startswith("[ERROR] Exception on /encode") and "Traceback" in text


# --- OpenAPI schema ---------------------------------------------------------

@pytest.mark.parametrize("config", [DIGITS, RGB], ids=["digits", "rgb"])
def test_schema_example_follows_the_run_and_passes_the_checks(config):
    schema = images_schema(config, 64)
    spec = ImageSpec.from_config(config, 64)
    example = np.asarray(schema["example"])
    assert example.shape == (1,) + tuple(config["image_shape"])
    x = images_from_json(schema["example"], spec)  # accepted as is
    assert x.shape == (1,) + tuple(config["input_shape"])
    layouts = schema["oneOf"]  # never an anyOf, nor a bare array (serving/schema.py)
    assert "type" not in schema and "anyOf" not in schema
    for layout in layouts:
        assert (layout["minItems"], layout["maxItems"]) == (1, 64)
        leaf, dims = layout["items"], []
        while leaf["type"] == "array":
            assert leaf["minItems"] == leaf["maxItems"]
            dims.append(leaf["minItems"])
            leaf = leaf["items"]
        assert tuple(dims) in spec.accepted_shapes
        assert (leaf["minimum"], leaf["maximum"]) == (0, config["pixel_max"])
    assert len(layouts) == len(spec.accepted_shapes)


def test_old_config_gets_the_new_keys_at_their_defaults():
    old = with_defaults(DIGITS)
    assert old["labelled"] is True and old["channels"] == 1 and old["num_classes"] == 10
    assert old["class_names"] == [str(i) for i in range(10)] and old["clusters"] == 10
    rgb = with_defaults({**RGB, "labelled": False, "clusters": 4})
    assert rgb["channels"] == 3 and rgb["class_names"] is None and rgb["clusters"] == 4


# --- uploads ------------------------------------------------------------------

def _encoded(array, mode, fmt, **options):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_png_and_jpeg_uploads_are_converted_to_the_runs_channels():
    from PIL import Image

    spec = ImageSpec.from_config(RGB, 8)
    rgb = np.random.default_rng(0).integers(0, 256, size=(12, 10, 3))
    x = image_from_upload(_encoded(rgb, "RGB", "PNG"), spec)
    np.testing.assert_allclose(x[0], rgb / 255.0 - 0.5, atol=1e-6)
    grey = np.random.default_rng(1).integers(0, 256, size=(12, 10))
    x = image_from_upload(_encoded(grey, "L", "PNG"), spec)  # grey -> RGB: three equal channels
    np.testing.assert_allclose(x[0], np.repeat(grey[..., None], 3, axis=-1) / 255.0 - 0.5,
                               atol=1e-6)
    jpeg = _encoded(rgb, "RGB", "JPEG", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
    np.testing.assert_allclose(image_from_upload(jpeg, spec)[0], decoded / 255.0 - 0.5,
                               atol=1e-6)
    digits = ImageSpec.from_config(DIGITS, 8)  # colour JPEG to a greyscale run: luminance
    small = rgb[:8, :8]
    jpeg = _encoded(small, "RGB", "JPEG", quality=95)
    luminance = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float64)
    np.testing.assert_allclose(image_from_upload(jpeg, digits),
                               luminance.reshape(1, 64) / 255.0, atol=1e-6)  # scaled


@pytest.mark.parametrize("data, status, message", [
    (lambda: _encoded(np.zeros((12, 12, 3)), "RGB", "PNG"), 422,
     "the PNG is 12x12 pixels: expected one 8-bit PNG or JPEG image of 10x12 pixels (RGB"),
    (lambda: _encoded(np.zeros((10, 12, 3)), "RGB", "JPEG"), 422,
     "the JPEG is 12x10 pixels: expected one 8-bit PNG or JPEG image of 10x12 pixels"),
    (lambda: _encoded(np.zeros((12, 10, 3)), "RGB", "JPEG")[:30], 400,
     "could not decode the JPEG"),
    (lambda: b"GIF89a\x01\x00\x01\x00", 400, "the upload is neither a PNG nor a JPEG"),
])
def test_upload_refusals(data, status, message):
    with pytest.raises(InvalidInput) as raised:
        image_from_upload(data(), ImageSpec.from_config(RGB, 8))
    assert raised.value.status == status
    assert message in raised.value.message
