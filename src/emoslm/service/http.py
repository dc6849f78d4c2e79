"""The service's HTTP plumbing: JSON errors everywhere, request ids, body limit, CORS, rate limits, strict text.

- Every error is ``{"error": {"type", "message", "request_id"}}`` (:func:`error_response`), rendered as ASCII
  JSON so that no input (a lone surrogate, invalid UTF-8) can make the error itself fail. Even what uvicorn
  rejects before the app sees it (a request line with raw non-ASCII bytes) is answered in JSON
  (:class:`JSONErrorH11Protocol`).
- :class:`RequestContext` gives each request an id (``X-Request-ID`` taken when it is sane, else generated),
  echoes it in the response headers and error bodies, and logs one access line with it; :func:`configure_logging`
  puts the id into every log line written while the request runs.
- :class:`BodyLimit` answers 413 for a body over the limit; :class:`StrictJSONRequest` rejects JSON bodies that
  are not valid UTF-8 or carry lone surrogates (400), which Python's ``json`` would otherwise accept.
- :class:`RateLimiter`: a token bucket per API key (``--rate-limit N/min``); 429 with ``Retry-After``.
- :class:`JSONCORSMiddleware`: Starlette's CORS with a JSON answer to a refused preflight.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import threading
import sys
import time
import uuid
from typing import Any

import h11
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from emoslm.errors import EmoslmError

log = logging.getLogger("emoslm.service")
access_log = logging.getLogger("emoslm.service.access")

#: the id of the request being served (``-`` outside a request)
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("emoslm_request_id", default="-")
#: an ``X-Request-ID`` the client sends is kept when it looks like this (visible ASCII, at most 128 characters)
SANE_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
MAX_MESSAGE = 600
_SURROGATES = re.compile("[\ud800-\udfff]")


# ------------------------------------------------------------------------------------------ errors


class ApiError(StarletteHTTPException):
    """An error answered as ``{"error": {"type": type_, "message": ...}}`` with ``status``.

    It is an HTTPException so that FastAPI passes it through while it reads a request body (where it would turn
    any other exception into a generic 400)."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.status, self.type, self.message = status, type_, message


def clean_text(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` safe to show: lone surrogates replaced, at most ``limit`` characters."""
    text = _SURROGATES.sub("\ufffd", str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class AsciiJSONResponse(JSONResponse):
    """JSON rendered with ``ensure_ascii``: always encodable, whatever strings it carries."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_body(type_: str, message: str) -> dict:
    rid = REQUEST_ID.get()
    return {"error": {"type": type_, "message": clean_text(message), "request_id": None if rid == "-" else rid}}


def error_response(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    rid = REQUEST_ID.get()
    if rid != "-":
        headers.setdefault("X-Request-ID", rid)
    return AsciiJSONResponse(error_body(type_, message), status_code=status, headers=headers)


def validation_message(errors: list[dict]) -> str:
    """A short message for pydantic/FastAPI validation errors: ``loc: msg`` of at most three distinct errors,
    without pydantic's union-branch names or the offending input."""
    parts: list[str] = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if not (isinstance(x, str) and ("[" in x or x in _UNION_TAGS))]
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            msg = f"invalid JSON: {ctx.get('error', 'decode error')}"
        text = f"{'.'.join(loc)}: {msg}" if loc else msg
        if text not in parts:
            parts.append(text)
    more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
    return clean_text("; ".join(parts[:3]) + more, 400) or "invalid request"


#: names pydantic puts into ``loc`` for the branches of a union (``content.str``, ``content.list[...]``)
_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict", "function-after", "function-wrap"}


# ------------------------------------------------------------------------------------------ strict JSON bodies


def _lone_surrogate(value: Any, path: str = "body") -> str | None:
    """Where in a decoded JSON value a string (or key) holds a lone surrogate, or None."""
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, str):
            if _SURROGATES.search(v):
                return p
        elif isinstance(v, dict):
            for k, x in v.items():
                if _SURROGATES.search(k):
                    return f"{p} (a key)"
                stack.append((x, f"{p}.{clean_text(k, 40)}"))
        elif isinstance(v, list):
            stack.extend((x, f"{p}.{i}") for i, x in enumerate(v))
    return None


class StrictJSONRequest(Request):
    """A request whose JSON body must be UTF-8 without lone surrogates (``"\\ud800"`` escapes decode to strings
    that cannot be encoded again: SQLite, tokenisers and JSON responses would fail on them later)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ApiError(400, "invalid_text", f"the request body is not valid UTF-8 (byte {e.start})") from None
            value = json.loads(text)  # a JSONDecodeError is FastAPI's 422
            where = _lone_surrogate(value)
            if where is not None:
                raise ApiError(400, "invalid_text", f"{where} holds a lone surrogate: text must be valid Unicode")
            self._json = value
        return self._json


class StrictRoute(APIRoute):
    """The app's route class: request handlers get a :class:`StrictJSONRequest`."""

    def get_route_handler(self):
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await inner(StrictJSONRequest(request.scope, request.receive))

        return handler


# ------------------------------------------------------------------------------------------ ASGI middleware


class RequestContext:
    """Outermost ASGI middleware: the request id (header in, contextvar, header out) and one access log line."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if SANE_REQUEST_ID.match(given) else "req-" + uuid.uuid4().hex[:20]
        REQUEST_ID.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status = [0]
        t0 = time.perf_counter()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers + [(b"x-request-id", rid.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # the one place an unexpected error ends: logged with its traceback, answered in JSON (no traceback)
            log.exception("unhandled error in %s %s", scope.get("method", "-"), _printable(scope.get("path", "")))
            if status[0]:
                raise  # the response has started: nothing else can be sent
            await error_response(500, "internal_error", f"internal server error (request id {rid}); the "
                                 "server log has the details")(scope, receive, send_with_id)
        finally:
            access_log.info("%s %s %d %.1f ms", scope.get("method", "-"), _printable(scope.get("path", "")),
                            status[0] or 500, (time.perf_counter() - t0) * 1000)
        # REQUEST_ID is not reset: each request runs in its own task (its own context), and error handlers
        # outside this middleware still see the id


def _printable(path: str) -> str:
    return path.encode("ascii", "backslashreplace").decode("ascii")[:300]


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (by Content-Length, or while reading)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        message = f"request body over the limit of {self.limit} bytes"
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await error_response(413, "request_too_large", message)(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, "request_too_large", message)
            return msg

        return await self.app(scope, counting_receive, send)


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware; a refused preflight is answered with a JSON error, not plain text."""

    def preflight_response(self, request_headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code >= 400:
            reason = response.body.decode("utf-8", "replace")
            headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
            return error_response(response.status_code, "cors_refused", f"CORS preflight refused: {reason}", headers)
        return response


# ------------------------------------------------------------------------------------------ rate limits

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str | None) -> float | None:
    """``"60/min"`` (also ``/s``, ``/h``; a bare number is per minute) -> requests per minute; None or ``0`` /
    ``off`` / ``none`` -> no limit. EmoslmError for anything else."""
    if text is None or str(text).strip().lower() in ("", "0", "off", "none"):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]+))?\s*", str(text).lower())
    if not m or (m.group(2) and m.group(2) not in _UNITS) or float(m.group(1)) <= 0:
        raise EmoslmError(f"--rate-limit {text!r}: expected N/min (or N/s, N/h), e.g. 120/min")
    return float(m.group(1)) * 60 / _UNITS[m.group(2) or "min"]


class RateLimiter:
    """A token bucket per client (API key name): ``per_minute`` tokens a minute, at most ``per_minute`` saved up
    (so a burst of that many requests passes, then one every ``60 / per_minute`` seconds)."""

    def __init__(self, per_minute: float, burst: float | None = None):
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, burst if burst is not None else per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """Spend one token of ``who``: 0.0 when there was one, else the seconds until there is one."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def check(self, who: str) -> None:
        """ApiError 429 (with ``Retry-After`` in whole seconds) when ``who`` has no token left."""
        wait = self.take(who)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"rate limit of {self.per_minute:g} requests a minute reached; "
                           f"retry in {wait:.1f} s", {"Retry-After": str(max(1, math.ceil(wait)))})


# ------------------------------------------------------------------------------------------ uvicorn + logging


class JSONErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; a request it cannot parse (a request line with raw non-ASCII bytes, a malformed
    header) is answered with a JSON error instead of uvicorn's plain text. ``uvicorn.run(..., http=this)``."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": {"type": "bad_http_request", "message": msg, "request_id": None}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not the stream current at set-up, which a
    caller may since have replaced and closed)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(quiet: bool = False) -> None:
    """Log lines of the service (``emoslm.*``) to stderr with the request id: ``... [req-...] message``."""
    handler = _StderrHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger("emoslm")
    for h in list(root.handlers):
        if getattr(h, "emoslm_service", False):
            root.removeHandler(h)
    handler.emoslm_service = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False
