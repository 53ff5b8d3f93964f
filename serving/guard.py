"""ASGI middleware in front of the service's routes: body size limit, clear 4xx.

`RequestGuard` does two things for every POST request:

1. It reads the body before BentoML does and answers **413** with a JSON
   message when it is larger than `max_bytes` (the `Content-Length` header is
   checked first; a chunked body is counted as it arrives and dropped as soon
   as it passes the limit), so an oversized body never reaches the parser.
2. It rewrites the errors BentoML produces before the service code runs into
   the service's own format `{"error": "..."}` with a message that names the
   problem and the expected input: pydantic's "1 validation error for Input"
   (malformed JSON, a body that is not an object) stays 400 with a readable
   message, and a multipart body starlette cannot parse (BentoML answers 500
   for that) becomes 400.
3. It answers **415** before BentoML parses anything when the content type
   cannot be meant for the route: a form (`multipart/form-data`, with or
   without a boundary, or `application/x-www-form-urlencoded`) sent to a JSON
   route (BentoML would parse it with starlette's form parser, whose errors
   it answers with 500: "Missing boundary in multipart."), and BentoML's
   internal pickle type on any route. Forms sent to the PNG routes are parsed
   here first: any parse error (missing or empty boundary, a broken part, an
   unknown charset) is a 400 with starlette's reason.
"""

import json
import os

from serving.codes import CodeLayout
from serving.run_folder import RunFolderError, read_config
from serving.store import default_run_dir
from serving.validation import ImageSpec

#: Default request body limit: 16 MiB (env `SOFTVQ_MAX_BODY_BYTES`).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Routes whose errors are rewritten, and how their input is described.
JSON_ROUTES = ("/encode", "/cluster", "/classify", "/reconstruct", "/codes", "/decode")
PNG_ROUTES = ("/encode_png", "/cluster_png", "/classify_png")
#: Content types BentoML parses as forms (its MultipartSerde).
FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")
#: BentoML's internal type for service-to-service calls (pickle): never from clients.
PICKLE_TYPE = b"application/vnd.bentoml+pickle"


def _media_type(scope):
    """The request's media type, lower case, without parameters (b"" if none)."""
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.split(b";")[0].strip().lower()
    return b""


def content_type_problem(path, media_type):
    """`(status, message)` when `media_type` cannot be meant for `path`, else None."""
    shown = media_type.decode("latin-1")
    if media_type == PICKLE_TYPE:
        return 415, (f"unsupported Content-Type {shown}: send application/json "
                     "(or multipart/form-data to the *_png routes)")
    if path in JSON_ROUTES and media_type in FORM_TYPES:
        upload = (f" (to upload an image file, use {path}_png)"
                  if f"{path}_png" in PNG_ROUTES else "")
        return 415, (f"unsupported Content-Type {shown} for {path}: send the JSON body "
                     f"with 'Content-Type: application/json'{upload}")
    return None


def max_body_bytes():
    """The body size limit in bytes: `$SOFTVQ_MAX_BODY_BYTES` or 16 MiB."""
    return int(os.environ.get("SOFTVQ_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))


def _expected(path):
    """What a request to `path` should contain, from the served run's config."""
    if path in PNG_ROUTES:
        return (
            'expected a multipart/form-data body with one PNG or JPEG file in the field "image" '
            "(curl -F image=@digit.png)"
        )
    max_batch = int(os.environ.get("SOFTVQ_MAX_BATCH", "512"))
    try:
        config = read_config(default_run_dir())
    except RunFolderError:
        config = None
    if path == "/decode":
        layout = config and CodeLayout.from_config(config, max_batch)
        return layout.expected if layout else 'expected a JSON object {"indices": [...]}'
    if config is None:
        return 'expected a JSON object {"images": [...]}'
    return ImageSpec.from_config(config, max_batch).expected


def _json_body(status, payload):
    body = json.dumps(payload).encode("utf-8")
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


def _rewrite(path, status, body):
    """The replacement `(status, payload)` for an error BentoML produced, or None."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if status == 400 and isinstance(payload, dict) and isinstance(payload.get("detail"), list):
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in d.get('loc', []))}: " if d.get("loc") else "")
            + str(d.get("msg", d))
            for d in payload["detail"]
            if isinstance(d, dict)
        )
        kind = "JSON request" if path in JSON_ROUTES else "request"
        return 400, {
            "error": f"malformed {kind} body ({problems}): {_expected(path)}",
            "detail": [
                {k: v for k, v in d.items() if k != "url"} if isinstance(d, dict) else d
                for d in payload["detail"]
            ],
        }
    if status >= 500 and path in PNG_ROUTES:
        return 400, {"error": f"could not parse the multipart body: {_expected(path)}"}
    return None


class RequestGuard:
    """ASGI middleware: body size limit and readable errors (module docstring)."""

    def __init__(self, app, max_bytes=DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        too_large = {
            "error": f"request body too large: the limit is {self.max_bytes} bytes "
            f"(SOFTVQ_MAX_BODY_BYTES); send fewer images per request"
        }
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._answer(send, 413, too_large)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._answer(send, 413, too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if path not in JSON_ROUTES + PNG_ROUTES:
            return await self.app(scope, replay, send)
        refused = content_type_problem(path, _media_type(scope))
        if refused:
            status, message = refused
            return await self._answer(send, status, {"error": f"{message}; {_expected(path)}"})
        if path in PNG_ROUTES:
            problem = await _form_problem(scope, body)
            if problem:
                return await self._answer(send, 400, {"error": f"{problem}: {_expected(path)}"})

        held = {}

        async def send_checked(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held["start"] = message
                held["body"] = b""
                return
            if "start" in held and message["type"] == "http.response.body":
                held["body"] += message.get("body", b"")
                if message.get("more_body", False):
                    return
                start = held.pop("start")
                replacement = None
                if not _is_service_error(held["body"]):
                    replacement = _rewrite(path, start["status"], held["body"])
                if replacement is None:
                    await send(start)
                    await send({"type": "http.response.body", "body": held["body"],
                                "more_body": False})
                else:
                    for part in _json_body(*replacement):
                        await send(part)
                return
            await send(message)

        await self.app(scope, replay, send_checked)

    @staticmethod
    async def _answer(send, status, payload):
        for part in _json_body(status, payload):
            await send(part)


async def _form_problem(scope, body):
    """Why a form body cannot be a PNG upload (None if it can, or is not a form).

    BentoML would download a URL sent as a text field in place of a file;
    text fields are refused here, so the server never fetches anything.
    """
    from starlette.requests import Request

    headers = dict(scope.get("headers", []))
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type not in (b"multipart/form-data", b"application/x-www-form-urlencoded"):
        return None

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request(scope, receive)
    try:
        form = await request.form()
    except Exception as e:  # noqa: BLE001 - starlette raises several types
        return f"could not parse the {content_type.decode()} body ({e})"
    try:
        values = form.getlist("image")
        if not values:
            return f'no "image" field (got fields {sorted(form.keys())})'
        if any(isinstance(v, str) for v in values):
            return '"image" is a text field, not a file upload (URLs are not fetched)'
        if len(values) > 1:
            return f'{len(values)} files in "image"; send one image per request'
    finally:
        await form.close()
    return None


def _is_service_error(body):
    """True for the service's own `{"error": ...}` answers (left untouched)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and set(payload) == {"error"} and not str(
        payload["error"]
    ).startswith("An unexpected error")
