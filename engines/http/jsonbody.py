"""Request bodies parsed strictly: what is not exactly representable is refused (422),
never silently changed.

Refused: invalid UTF-8, lone surrogates, ``NaN``/``Infinity``, numbers that overflow a
double (``1e400``) or underflow to zero (``1e-400``), integers outside 64 bits (they
would come back as other numbers), an object holding the same key twice (which value
would win is up to the parser), and nesting too deep to parse.
A body that is not JSON at all (no or another content type) answers 415.

Routers use :class:`StrictJsonRoute` (``APIRouter(route_class=StrictJsonRoute)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from engines.http.errors import UnsupportedMediaType

MIN_INT = -(2**63)
MAX_INT = 2**64 - 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("an object holds the same key twice")
    return value


def _exact_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # more digits than Python converts
        value = MAX_INT + 1
    if not MIN_INT <= value <= MAX_INT:
        raise ValueError("an integer is outside the 64-bit range")
    return value


def _exact_float(text: str) -> float:
    value = float(text)
    mantissa = text.lower().partition("e")[0]
    if value == 0.0 and any(d in mantissa for d in "123456789"):
        raise ValueError("a number is too small for a double (it would become 0)")
    return value


def strict_loads(body: bytes) -> Any:
    """Parse ``body`` as JSON, refusing (``json.JSONDecodeError``) what the module names."""
    try:
        # orjson refuses invalid UTF-8, lone surrogates, NaN, Infinity and 1e400 ...
        orjson.loads(body)
        # ... the standard parser then finds repeated keys and wide integers, and keeps
        # every integer exact (orjson would turn a wide one into a float).
        return json.loads(
            body.decode(),
            object_pairs_hook=_no_duplicates,
            parse_int=_exact_int,
            parse_float=_exact_float,
        )
    except RecursionError:
        raise json.JSONDecodeError("the body nests too deeply", "", 0) from None
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(exc.msg, "", exc.pos) from None  # never keep the body
    except ValueError as exc:
        raise json.JSONDecodeError(str(exc), "", 0) from None


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(length and length != "0") or "transfer-encoding" in request.headers


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is parsed by :func:`strict_loads`, and whose body, if it
    takes one, must be ``application/json`` (415 otherwise)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if takes_body and _has_body(request) and not is_json(content_type):
                raise UnsupportedMediaType("the body must be application/json")
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
