"""One log line per refused client request instead of BentoML's `[ERROR]` traceback.

BentoML logs every exception raised while it parses a request with
`logger.error("Exception on /encode [POST]", exc_info=True)`: a malformed JSON
body (pydantic `ValidationError`, answered 400) fills the server log with a
30-line traceback at ERROR level, as if the server had failed.
`install_refusal_filter()` adds a `logging.Filter` to that logger which turns
the records of client errors (a pydantic `ValidationError`, a starlette
`HTTPException` or a `BentoMLException` with a 4xx status) into one INFO line:

    refused POST /encode (client error, answered 4xx): 1 validation error for Input:
    Invalid JSON: EOF while parsing a list at line 1 column 14

The request body and header values are never part of the line. Any other
exception (a real server fault, answered 500) keeps its traceback.
"""

import logging

#: The logger BentoML's `log_exception` writes to.
BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"
_MAX_DETAIL = 300


def _client_error_summary(exc):
    """One-line description of `exc` if it is a client error, else None."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover - pydantic is a BentoML dependency
        ValidationError = ()
    if ValidationError and isinstance(exc, ValidationError):
        problems = "; ".join(
            (".".join(str(p) for p in e.get("loc", ())) + ": " if e.get("loc") else "")
            + str(e.get("msg", ""))
            for e in exc.errors(include_url=False, include_context=False,
                                include_input=False)
        )
        return f"{exc.error_count()} validation error for {exc.title}: {problems}"
    status = getattr(exc, "status_code", None)
    if status is None:
        code = getattr(exc, "error_code", None)
        status = getattr(code, "value", code)
    if isinstance(status, int) and 400 <= status < 500:
        detail = getattr(exc, "detail", None) or str(exc)
        return f"HTTP {status}: {detail}"
    return None


class RefusalFilter(logging.Filter):
    """Rewrite BentoML's traceback records of client errors into one INFO line."""

    def filter(self, record):
        if not record.exc_info or record.exc_info[1] is None:
            return True
        summary = _client_error_summary(record.exc_info[1])
        if summary is None:
            return True
        summary = " ".join(summary.split())
        if len(summary) > _MAX_DETAIL:
            summary = summary[:_MAX_DETAIL - 3] + "..."
        message = record.getMessage().replace("Exception on ", "refused ", 1)
        record.msg = "%s (client error, answered 4xx): %s"
        record.args = (message, summary)
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.INFO
        record.levelname = logging.getLevelName(logging.INFO)
        return True


def install_refusal_filter():
    """Add `RefusalFilter` to BentoML's HTTP logger once (idempotent)."""
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, RefusalFilter) for f in logger.filters):
        logger.addFilter(RefusalFilter())
