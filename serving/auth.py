"""API keys: `Authorization: Bearer <key>` on every API route when keys are set.

Keys come from the environment, read when the service module is imported:

- `SOFTVQ_API_KEYS`: comma-separated keys (`key1,key2`);
- `SOFTVQ_API_KEYS_FILE`: a file with one key per line (blank lines and lines
  starting with `#` are skipped).

Both may be set (every key of both is accepted). Neither set: the service is
open, as before, and says so in one start-up log line. A setting that yields
no key, an empty entry (`a,,b`), a key holding whitespace or an unreadable
file is refused with `ApiKeyError` (the service prints one line and exits).

`ApiKeyGuard` is an ASGI middleware (`Service.add_asgi_middleware`), so it
sees every request before BentoML does, mounted apps included. Open without a
key: the health probes `/livez`, `/readyz`, `/healthz`, the page `/ui` (it asks
the person for the key and sends it), the OpenAPI documentation (`/`,
`/docs.json`, `/static_content/...`) and BentoML's `/schema.json` (the routes'
schemas, no data: `bentoml.SyncHTTPClient` reads it before any call, so a
client without a key gets the call's own 401 instead of "Failed to fetch
schema"). Everything else, the model routes and
`/metrics` included, answers 401 with `WWW-Authenticate: Bearer` and a JSON
error naming the header expected when the key is missing or wrong. The
comparison runs in constant time over every key (`hmac.compare_digest` of
SHA-256 digests, no early exit), and no key or header value is ever logged or
echoed.
"""

import hashlib
import hmac
import json
import os
from pathlib import Path

#: Paths answered without a key (exact).
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/", "/docs.json", "/schema.json"})
#: Path prefixes answered without a key.
OPEN_PREFIXES = ("/ui/", "/static_content/")
HEADER_HINT = "Authorization: Bearer <key>"


class ApiKeyError(ValueError):
    """`SOFTVQ_API_KEYS` / `SOFTVQ_API_KEYS_FILE` cannot be used as set."""


def _checked(keys, source):
    for i, key in enumerate(keys):
        if not key:
            raise ApiKeyError(f"{source}: entry {i + 1} is empty (keys must be non-empty)")
        if any(c.isspace() for c in key):
            raise ApiKeyError(f"{source}: entry {i + 1} contains whitespace "
                              "(a Bearer token cannot)")
    return keys


def load_api_keys(environ=None):
    """The accepted keys as a tuple of strings; `()` when keys are not set.

    Raises `ApiKeyError` (a one-line message that never contains a key) when
    a variable is set but yields no usable key.
    """
    environ = os.environ if environ is None else environ
    keys = []
    if "SOFTVQ_API_KEYS" in environ:
        raw = environ["SOFTVQ_API_KEYS"].strip()
        if not raw:
            raise ApiKeyError("SOFTVQ_API_KEYS is set but empty: give comma-separated "
                              "keys, or unset it to serve without keys")
        keys += _checked([k.strip() for k in raw.split(",")], "SOFTVQ_API_KEYS")
    if "SOFTVQ_API_KEYS_FILE" in environ:
        path = Path(environ["SOFTVQ_API_KEYS_FILE"])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ApiKeyError(f"SOFTVQ_API_KEYS_FILE: cannot read {str(path)!r} "
                              f"({type(e).__name__}: {getattr(e, 'strerror', None) or e})")
        found = [line.strip() for line in lines
                 if line.strip() and not line.strip().startswith("#")]
        if not found:
            raise ApiKeyError(f"SOFTVQ_API_KEYS_FILE {str(path)!r} holds no key: "
                              "write one key per line")
        keys += _checked(found, f"SOFTVQ_API_KEYS_FILE {str(path)!r}")
    return tuple(dict.fromkeys(keys))


def describe(keys):
    """The one start-up log line saying whether keys are required."""
    if not keys:
        return ("API keys: off, every route is open (set SOFTVQ_API_KEYS or "
                "SOFTVQ_API_KEYS_FILE to require 'Authorization: Bearer <key>')")
    return (f"API keys: on, {len(keys)} key(s); API routes need '{HEADER_HINT}' "
            "(open: /livez, /readyz, /healthz, /ui, the OpenAPI docs, /schema.json)")


def is_open(path):
    """Whether `path` is answered without a key."""
    return path in OPEN_PATHS or path == "/ui" or path.startswith(OPEN_PREFIXES)


def _digest(value):
    return hashlib.sha256(value).digest()


class ApiKeyGuard:
    """ASGI middleware: 401 unless `Authorization: Bearer <one of keys>` (module doc).

    With no keys it passes every request through untouched.
    """

    def __init__(self, app, keys=()):
        self.app = app
        self._digests = tuple(_digest(k.encode("utf-8")) for k in keys)

    def authorized(self, header):
        """Whether the raw `Authorization` header value carries a valid key."""
        scheme, _, token = (header or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        given = _digest(token.strip())
        match = 0
        for expected in self._digests:  # every key compared: no early exit
            match |= hmac.compare_digest(given, expected)
        return bool(match)

    async def __call__(self, scope, receive, send):
        if (not self._digests or scope["type"] != "http"
                or scope.get("method") == "OPTIONS" or is_open(scope.get("path", ""))):
            return await self.app(scope, receive, send)
        header = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value
                break
        if self.authorized(header):
            return await self.app(scope, receive, send)
        if header is None:
            problem, challenge = "missing API key", b'Bearer realm="softvq"'
        else:
            problem = "invalid API key"
            challenge = b'Bearer realm="softvq", error="invalid_token"'
        body = json.dumps({
            "error": f"{problem}: this service requires the header '{HEADER_HINT}' "
                     "with one of its API keys"
        }).encode("utf-8")
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"www-authenticate", challenge),
            ],
        })
        await send({"type": "http.response.body", "body": body, "more_body": False})
