"""The gate: a pure ASGI middleware that settles who is asking before any body is read.

For every HTTP request it resolves the client address (``X-Forwarded-For`` is believed
only from ``http.trusted_proxies``), refuses a declared body over
``http.max_body_bytes`` (413) and caps a streamed one as it is read, refuses repeated
single-valued headers and repeated query parameters (400; the scope's own, which a
client may state as claims, are :mod:`engines.http.identity`'s to settle), and,
outside :data:`PUBLIC_PATHS`, verifies the bearer token and the tenant, mode and user
the client states (401/403, audited), handing the principal to the route in
``request.state.principal``. A refused request's body is never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl, unquote

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engines.http.errors import BodyTooLarge, MalformedRequest, problem_for
from engines.http.identity import USER_FILTER_PATHS, authenticate
from engines.http.provenance import PROVENANCE_HEADERS
from spine.errors import EnginesError

PUBLIC_PATHS: Final = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)

#: Headers that mean one thing: given twice, the request is refused rather than resolved.
SINGLE_VALUED: Final = frozenset(
    {
        b"authorization",
        b"content-type",
        b"if-match",
        b"if-none-match",
        b"idempotency-key",
        b"traceparent",
    }
    | {h.encode() for h in PROVENANCE_HEADERS.values()}
)

#: Query parameters that are claims of the caller's scope: repeated, they are compared
#: (and a disagreement refused, audited) by identity, not refused here.
SCOPE_PARAMETERS: Final = frozenset({"tenant_id", "mode", "user_id", "surface_id", "project_id"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(scope: Scope, trusted: Sequence[Network]) -> str | None:
    """The client's address: the connecting peer, unless the peer is a trusted proxy;
    then ``X-Forwarded-For`` is walked from the right past trusted proxies to the first
    address that is not one (an unparseable entry stops the walk)."""
    peer = scope.get("client")
    address: str | None = peer[0] if peer else None
    ip = _ip(address) if address else None
    if ip is None or not any(ip in net for net in trusted):
        return address
    hops = [
        hop
        for name, value in scope["headers"]
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
    ]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            break
        address = str(ip)
        if not any(ip in net for net in trusted):
            break
    return address


def _check_headers(scope: Scope, max_body_bytes: int) -> None:
    seen: set[bytes] = set()
    for name, value in scope["headers"]:
        name = name.lower()
        if name in SINGLE_VALUED:
            if name in seen:
                raise MalformedRequest(f"the {name.decode()} header is given more than once")
            seen.add(name)
        elif name == b"content-length":
            if not value.isdigit():
                raise MalformedRequest("Content-Length is not a number")
            if int(value) > max_body_bytes:
                raise BodyTooLarge(f"the body is over the limit of {max_body_bytes} bytes")


def _check_query(scope: Scope) -> None:
    """Refuse a query parameter given more than once: ``?version=1&version=3`` would
    otherwise mean whichever one the framework happens to keep."""
    seen: set[str] = set()
    claims = SCOPE_PARAMETERS
    if scope["path"] in USER_FILTER_PATHS:
        claims = SCOPE_PARAMETERS - {"user_id"}  # there a filter, not a claim
    for name, _ in parse_qsl(scope.get("query_string", b"").decode("latin-1"), True):
        if name in seen and name not in claims:
            raise MalformedRequest(f"the query parameter {name[:64]!r} is given more than once")
        seen.add(name)


def _keep_encoded_slashes(scope: Scope) -> None:
    """Route a path as the client wrote it: an encoded slash (``%2F``) stays inside its
    segment, where the id it belongs to is refused (422 naming it: no id holds a slash),
    instead of being decoded first and splitting the path into other segments (``run
    r1%2Fk`` would otherwise reach run ``r1``, key ``k``)."""
    raw = scope.get("raw_path")
    if not raw or b"%2f" not in raw.lower():
        return
    text = raw.decode("utf-8", "replace").replace("%2F", "%252F").replace("%2f", "%252f")
    scope["path"] = unquote(text)


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive``, refusing (413) a body that grows past ``limit`` bytes as it streams."""
    received = 0

    async def capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                exc = BodyTooLarge(f"the body is over the limit of {limit} bytes")
                raise HTTPException(413, str(exc)) from exc
        return message

    return capped


class Gate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = getattr(scope["app"].state, "runtime", None) if scope["type"] == "http" else None
        if runtime is None:
            await self.app(scope, receive, send)
            return
        http = runtime.settings.http
        state = scope.setdefault("state", {})
        state["client_address"] = client_address(scope, http.trusted_proxies)
        try:
            _check_headers(scope, http.max_body_bytes)
            _check_query(scope)
            _keep_encoded_slashes(scope)
            if scope["path"] not in PUBLIC_PATHS:
                state["principal"] = await authenticate(HTTPConnection(scope))
        except EnginesError as exc:
            await problem_for(exc)(scope, receive, send)
            return
        await self.app(scope, _capped(receive, http.max_body_bytes), send)
