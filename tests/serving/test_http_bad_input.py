"""Bad input over HTTP: the right 4xx and a message, and the server keeps answering."""

import numpy as np
import pytest

from serving_helpers import TEST_MAX_BATCH, TEST_MAX_BODY_BYTES, png_bytes

pytestmark = pytest.mark.slow

GOOD_IMAGE = [[4.0] * 8] * 8
JSON = {"Content-Type": "application/json"}
EXPECTED = "expected {\"images\": [...]} holding 1 to 64 images, each an array shaped [8, 8]"


def _row(value):
    """A JSON body with one 8x8 image whose first pixel is the raw text `value`."""
    rest = ", ".join(["1"] * 7)
    rows = ", ".join(["[" + ", ".join(["1"] * 8) + "]"] * 7)
    return f'{{"images": [[[{value}, {rest}], {rows}]]}}'.encode()


# (route, requests keyword arguments, status, text the error must contain)
JSON_CASES = {
    "wrong shape": ({"json": {"images": [[1.0] * 10]}}, 422,
                    "wrong image shape: got 1 image(s), each shaped [10]"),
    "wrong rank": ({"json": {"images": [[[[1.0] * 8] * 8]]}}, 422,
                   "each shaped [1, 8, 8] (array [1, 1, 8, 8])"),
    "unbatched image": ({"json": {"images": GOOD_IMAGE}}, 422,
                        "this looks like a single image: wrap it in a list"),
    "empty list": ({"json": {"images": []}}, 422, '"images" is empty'),
    "ragged rows": ({"json": {"images": [[[1] * 8] * 7 + [[1] * 5]]}}, 422,
                    "images[0] is ragged: images[0][0] has 8 items but images[0][7] has 5 items"),
    "string pixel": ({"json": {"images": [[["7"] + [1] * 7] + [[1] * 8] * 7]}}, 422,
                     "images[0][0][0] is a string ('7'); pixel values must be numbers"),
    "string images": ({"json": {"images": "a picture"}}, 422,
                      '"images" must be a list of images, got a string'),
    "null pixel": ({"json": {"images": [[None] * 64]}}, 422, "images[0][0] is null"),
    "boolean pixel": ({"json": {"images": [[True] * 64]}}, 422, "images[0][0] is a boolean"),
    "NaN": ({"data": _row("NaN"), "headers": JSON}, 422,
            "images[0, 0, 0] is nan: pixel values must be finite"),
    "Infinity": ({"data": _row("Infinity"), "headers": JSON}, 422,
                 "images[0, 0, 0] is inf: pixel values must be finite"),
    "overflow to inf": ({"data": _row("1e999"), "headers": JSON}, 422, "is inf"),
    "above range": ({"json": {"images": [[17.0] + [1.0] * 63]}}, 422,
                    "images[0, 0] is 17: pixel values must be raw pixels from 0 to 16"),
    "negative": ({"json": {"images": [[1.0] * 63 + [-0.5]]}}, 422,
                 "images[0, 63] is -0.5"),
    "batch over the limit": ({"json": {"images": [[1.0] * 64] * (TEST_MAX_BATCH + 1)}}, 422,
                             f"batch too large: {TEST_MAX_BATCH + 1} images, the limit is "
                             f"{TEST_MAX_BATCH} per request"),
    "malformed JSON": ({"data": b'{"images": [[1, 2', "headers": JSON}, 400,
                       "malformed JSON request body (Invalid JSON"),
    "not an object": ({"json": [[1.0] * 64]}, 400, "Input should be an object"),
    "missing field": ({"json": {"pictures": [[1.0] * 64]}}, 400,
                      "malformed JSON request body (images: Field required)"),
    "null images": ({"json": {"images": None}}, 400, 'missing "images"'),
    "multipart without boundary": ({"data": b"--x\r\ngarbage",
                                    "headers": {"Content-Type": "multipart/form-data"}}, 415,
                                   "unsupported Content-Type multipart/form-data for /encode"),
    "multipart with boundary": ({"files": {"images": ("x.json", b"[[1]]", "text/plain")}}, 415,
                                "send the JSON body with 'Content-Type: application/json'"),
    "urlencoded (curl -d without -H)": ({"data": {"images": "[[1]]"}}, 415,
                                        "unsupported Content-Type "
                                        "application/x-www-form-urlencoded"),
    "pickle": ({"data": b"\x80\x05N.",
                "headers": {"Content-Type": "application/vnd.bentoml+pickle"}}, 415,
               "unsupported Content-Type application/vnd.bentoml+pickle"),
    "oversized body": ({"data": b'{"images": [' + b"1," * TEST_MAX_BODY_BYTES + b"1]}",
                        "headers": JSON}, 413,
                       f"request body too large: the limit is {TEST_MAX_BODY_BYTES} bytes"),
}


def _assert_still_serving(post):
    response = post("/encode", json={"images": [GOOD_IMAGE]})
    assert response.status_code == 200
    assert len(response.json()["latents"]) == 1


#: Every case on /encode; three of them on /cluster and /classify too.
ROUTE_CASES = [("/encode", case) for case in sorted(JSON_CASES)] + [
    (route, case)
    for route in ("/cluster", "/classify")
    for case in ("wrong shape", "NaN", "malformed JSON")
]


@pytest.mark.parametrize("route, case", ROUTE_CASES)
def test_bad_json_input(post, route, case):
    kwargs, status, message = JSON_CASES[case]
    response = post(route, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error
    if status in (415, 422) or case in ("missing field", "null images"):
        assert "expected" in error  # names the expected input
    _assert_still_serving(post)


def test_oversized_chunked_body(post):
    """A body without Content-Length is counted as it arrives and refused."""

    def chunks():
        yield b'{"images": ['
        for _ in range(TEST_MAX_BODY_BYTES // 8000 + 2):
            yield b"1," * 4000
        yield b"1]}"

    response = post("/encode", data=chunks(), headers=JSON)
    assert response.status_code == 413
    assert "request body too large" in response.json()["error"]
    _assert_still_serving(post)


PNG_CASES = {
    "not a PNG": ({"files": {"image": ("x.png", b"GIF89a\x01\x00\x01\x00", "image/png")}}, 400,
                  "the upload is neither a PNG nor a JPEG (it starts with b'GIF89a"),
    "broken JPEG": ({"files": {"image": ("x.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64,
                                         "image/jpeg")}}, 400, "could not decode the JPEG"),
    "truncated PNG": ({"files": {"image": ("x.png", png_bytes(np.zeros((8, 8)))[:45], "image/png")}},
                      400, "could not decode the PNG"),
    "wrong size": ({"files": {"image": ("x.png", png_bytes(np.zeros((28, 28))), "image/png")}},
                   422, "the PNG is 28x28 pixels: expected one 8-bit PNG or JPEG image of 8x8 "
                   "pixels"),
    "no image field": ({"files": {"picture": ("x.png", png_bytes(np.zeros((8, 8))), "image/png")}},
                       400, 'no "image" field'),
    "text field (URL)": ({"data": {"image": "http://127.0.0.1:9/digit.png"}}, 400,
                         '"image" is a text field, not a file upload (URLs are not fetched)'),
    "multipart without boundary": ({"data": b"--x\r\ngarbage",
                                    "headers": {"Content-Type": "multipart/form-data"}}, 400,
                                   "could not parse the multipart/form-data body"),
    "multipart, empty boundary": ({"data": b"--\r\ngarbage",
                                   "headers": {"Content-Type": "multipart/form-data; boundary="}},
                                  400, 'no "image" field'),
    "pickle": ({"data": b"\x80\x05N.",
                "headers": {"Content-Type": "application/vnd.bentoml+pickle"}}, 415,
               "unsupported Content-Type application/vnd.bentoml+pickle"),
    "empty multipart": ({"data": b"--x\r\ngarbage",
                         "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 400,
                        'no "image" field'),
    "JSON instead of a file": ({"json": {"image": [1, 2]}}, 400,
                               "malformed request body (image: Invalid file type)"),
}


@pytest.mark.parametrize("case", sorted(PNG_CASES))
def test_bad_png_upload(post, case):
    kwargs, status, message = PNG_CASES[case]
    response = post("/classify_png", **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    _assert_still_serving(post)


def test_refused_requests_are_one_log_line_and_start_up_is_clean(server, post):
    """A malformed JSON body: one INFO line in the server log, no [ERROR] traceback."""
    import time

    before = server.log(tail=10**7)
    assert "PydanticJsonSchemaWarning" not in before and "Traceback" not in before
    assert "API keys: off, every route is open" in before
    response = post("/encode", data=b'{"images": [[1, 2', headers=JSON)
    assert response.status_code == 400
    time.sleep(0.5)  # let the server flush its log
    new = server.log(tail=10**7)[len(before):]
    lines = [line for line in new.splitlines() if line.strip()]
    assert len(lines) == 1, new
    assert "[INFO]" in lines[0] and "refused /encode [POST] (client error, answered 4xx)" in lines[0]
    assert "Invalid JSON" in lines[0] and "[1, 2" not in lines[0]
