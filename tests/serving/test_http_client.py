"""BentoML's own Python client (`SyncHTTPClient`, `AsyncHTTPClient`) on the real server.

The routes come from the server's `/schema.json`, as the client reads them, so
a route added later is called too: a JSON `images` field in every layout its
schema offers (the same pixels in each), an uploaded file as a PNG of the
run's size, any other field with the example its schema gives. Every answer
must equal the one plain HTTP (`requests`) gets for the same body, a wrong
shape must come back as the server's own 422 sentence (not a client-side
error), and with API keys on the client without a key gets the 401 sentence.
"""

import asyncio
import json
import math

import bentoml
import numpy as np
import pytest
import requests

from serving_helpers import KEYS, RGB_SHAPE, png_bytes

pytestmark = pytest.mark.slow

CLIENTS = ["sync", "async"]


@pytest.fixture(autouse=True)
def _no_cloud_token(monkeypatch):
    """The clients send `$BENTO_CLOUD_API_KEY` as a token when no `token=` is given."""
    monkeypatch.delenv("BENTO_CLOUD_API_KEY", raising=False)


def _published(url):
    """`{name: route}` from the server's /schema.json, as the client sees it."""
    response = requests.get(url + "/schema.json", timeout=10)
    assert response.status_code == 200, response.text
    return {r["name"]: r for r in response.json()["routes"]}


def _layouts(field):
    """Per-image shapes one JSON `images` field accepts, from its schema."""
    shapes = []
    for batch in field.get("oneOf") or field.get("anyOf") or [field]:
        dims, item = [], batch["items"]
        while item.get("type") == "array":
            dims.append(item["minItems"])
            item = item["items"]
        shapes.append(tuple(dims))
    return shapes, item


def _calls(route, rng, image_shape):
    """`(what, kwargs for the client, requests kwargs)` for every way to call `route`."""
    (name, field), = route["input"]["properties"].items()  # every route takes one field
    if field.get("type") == "file":
        pixels = rng.integers(0, 256, size=image_shape[:2]).astype(np.uint8)
        data = png_bytes(pixels)
        return [("png", {name: data}, {"files": {name: ("x.png", data, "image/png")}})]
    if name == "images":
        shapes, leaf = _layouts(field)
        size = math.prod(shapes[0])
        flat = rng.integers(0, int(leaf["maximum"]) + 1, size=(3, size)).tolist()
        calls = []
        for shape in shapes:
            images = np.asarray(flat).reshape((3,) + shape).tolist()
            calls.append((f"images {list(shape)}", {name: images}, {"json": {name: images}}))
        return calls
    assert "example" in field, (
        f"{route['route']}: its field {name!r} has no example in /schema.json, so neither "
        "a client nor this test knows a value it accepts: give the schema one")
    return [("example", {name: field["example"]}, {"json": {name: field["example"]}})]


def _client(kind, url, token=None):
    cls = bentoml.SyncHTTPClient if kind == "sync" else bentoml.AsyncHTTPClient
    return cls(url, token=token, server_ready_timeout=0)


def _call_all(kind, url, names_and_kwargs, token=None):
    """Call every `(route name, kwargs)` with one client; answers or exceptions in order."""

    if kind == "sync":
        with _client(kind, url, token) as client:
            out = []
            for name, kwargs in names_and_kwargs:
                try:
                    out.append(client.call(name, **kwargs))
                except bentoml.exceptions.BentoMLException as error:
                    out.append(error)
            return out

    async def run():
        async with _client(kind, url, token) as client:
            out = []
            for name, kwargs in names_and_kwargs:
                try:
                    out.append(await client.call(name, **kwargs))
                except bentoml.exceptions.BentoMLException as error:
                    out.append(error)
            return out

    return asyncio.run(run())


def _file_kwargs(kwargs, tmp_path):
    """The client sends files from paths: write PNG bytes to a new one."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, bytes):
            path = tmp_path / f"{key}-{len(list(tmp_path.iterdir()))}.png"
            path.write_bytes(value)
            value = path
        out[key] = value
    return out


def _same_answer(got, expected, where):
    assert isinstance(got, dict), f"{where}: {got!r}"
    assert set(got) == set(expected), where
    for key, value in expected.items():
        if isinstance(value, list) and value and not isinstance(value[0], str):
            np.testing.assert_allclose(np.asarray(got[key], dtype=float),
                                       np.asarray(value, dtype=float), atol=1e-6, err_msg=where)
        else:
            assert got[key] == value, where


@pytest.mark.parametrize("kind", CLIENTS)
def test_every_published_route_and_layout_through_the_client(server, kind, tmp_path):
    routes = _published(server.url)
    assert {"encode", "cluster", "classify", "reconstruct", "encode_png", "cluster_png",
            "classify_png"} <= set(routes)
    rng = np.random.default_rng(0)
    plan = []
    for name, route in sorted(routes.items()):
        for what, kwargs, http in _calls(route, rng, (8, 8)):
            expected = requests.post(server.url + route["route"], timeout=30, **http)
            assert expected.status_code == 200, (route["route"], what, expected.text)
            plan.append((name, what, _file_kwargs(kwargs, tmp_path), expected.json()))
    assert sum(what.startswith("images") for _, what, _, _ in plan) >= 4 * 2  # 2 layouts
    answers = _call_all(kind, server.url, [(name, kwargs) for name, _, kwargs, _ in plan])
    for (name, what, _, expected), got in zip(plan, answers):
        _same_answer(got, expected, f"{name} ({what})")


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_wrong_shape_gets_the_servers_422_sentence(server, kind, tmp_path):
    routes = _published(server.url)
    wrong_png = tmp_path / "wrong.png"
    wrong_png.write_bytes(png_bytes(np.zeros((5, 7))))
    plan, expected = [], []
    for name, route in sorted(routes.items()):
        (field, schema), = route["input"]["properties"].items()
        if field == "images":
            plan += [(name, {"images": [[1, 2]]}), (name, {"images": [0] * 64})]
            expected += ["wrong image shape: got 1 image(s), each shaped [2] (array [1, 2]); "
                         "expected {\"images\": [...]} holding 1 to 64 images",
                         "(this looks like a single image: wrap it in a list)"]
        elif schema.get("type") == "file":
            plan.append((name, {field: wrong_png}))
            expected.append("the PNG is 7x5 pixels: expected one 8-bit PNG or JPEG image "
                            "of 8x8 pixels")
    assert len(plan) >= 11
    for (name, _), error, sentence in zip(plan, _call_all(kind, server.url, plan), expected):
        assert isinstance(error, bentoml.exceptions.BentoMLException), (name, error)
        assert error.error_code == 422, (name, error.error_code)
        assert sentence in json.loads(str(error))["error"], (name, str(error))  # the server's


@pytest.mark.parametrize("kind", CLIENTS)
def test_api_keys_through_the_client(rgb_server, kind):
    """Keys on: no key or a wrong one gets the 401 sentence, `token=` a key the answer."""
    image = np.random.default_rng(1).integers(0, 256, size=RGB_SHAPE).tolist()
    calls = [("classify", {"images": [image]}), ("encode", {"images": [image]})]
    expected = requests.post(rgb_server.url + "/classify", json={"images": [image]}, timeout=30,
                             headers={"Authorization": f"Bearer {KEYS[0]}"}).json()
    for token, problem in [(None, "missing API key"), ("not-a-key", "invalid API key")]:
        for (name, _), error in zip(calls, _call_all(kind, rgb_server.url, calls, token)):
            assert isinstance(error, bentoml.exceptions.BentoMLException), (name, error)
            assert error.error_code == 401, (name, error.error_code)
            assert json.loads(str(error))["error"].startswith(
                f"{problem}: this service requires the header 'Authorization: Bearer <key>'")
    for key in KEYS:
        classify, encode = _call_all(kind, rgb_server.url, calls, token=key)
        _same_answer(classify, expected, f"classify with key {key[:5]}...")
        assert np.asarray(encode["latents"]).shape == (1, 8)
