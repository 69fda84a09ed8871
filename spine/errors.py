"""Every error Engines raises on purpose, rooted in one class.

::

    EnginesError
    ├── InvalidInput                 bad input; nothing was written
    │   ├── InvalidField             names the field (``loc``) that is wrong or missing
    │   ├── PreconditionRequired     a write that must name a version named none (HTTP 428)
    │   ├── ValueTooLarge            over a route's size limit (HTTP 413)
    │   ├── InvalidStreamId
    │   └── InvalidAppend            empty append, mixed command ids, over a backend limit
    ├── ConcurrencyError             stale expected version; nothing was written
    ├── ImportConflict               an import brings another event for a seq the stream
    │                                holds (or another history); nothing of it was written
    ├── NotFound                     no such entity (or not the caller's to see)
    │   └── StreamNotFound
    ├── AlreadyExists                a create for an entity that exists
    ├── LimitExceeded                a debit over its budget's limit (HTTP 402; recorded)
    ├── IntegrityError               a stored hash chain does not verify
    ├── UpcastError                  no path from a stored schema version to the current one
    ├── RoutingError
    │   ├── MissingRoutes            lists every missing resource kind
    │   ├── ReservedKind             "reserved, not active"
    │   └── RouteNotAllowed          a lab backend outside lab mode, or an unmarked lab route
    ├── IdentityError
    │   ├── Unauthenticated          missing or bad token (HTTP 401)
    │   ├── ScopeMismatch            a header or parameter disagrees with the token (HTTP 403)
    │   └── RoleRequired             the token lacks the role the operation needs (HTTP 403)
    └── BackendUnavailable           the store behind a route is down or failing; names both

A backend translates its driver's exceptions into this tree in one place and keeps the
original as ``__cause__``; no driver exception reaches a caller.
"""

from __future__ import annotations


class EnginesError(Exception):
    """Root of every error Engines raises on purpose."""


class InvalidInput(EnginesError):
    """The caller's input is malformed or breaks a rule; nothing was written."""


class InvalidField(InvalidInput):
    """One named input is wrong or missing. ``loc`` says where, as a validation error
    does: ``("body", "surface_id")``, ``("header", "if-match")``."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)


class PreconditionRequired(InvalidInput):
    """A write that must name the version it replaces (``If-Match``) or that the record
    must not exist (``If-None-Match: *``) named neither; nothing was written."""


class ValueTooLarge(InvalidInput):
    """A value is over a configured size limit (a route's ``max_value_bytes``)."""


class InvalidStreamId(InvalidInput):
    """A stream id (or one of its segments) is malformed."""


class InvalidAppend(InvalidInput):
    """An append request is malformed (empty, mixed command ids, over a limit)."""


class ConcurrencyError(EnginesError):
    """The stream is not at the version the caller expected; nothing was written.

    The caller decides whether to reload, re-decide and retry.
    """

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        wanted = f"version {expected}" if isinstance(expected, int) else str(expected)
        super().__init__(f"stream {stream_id!r}: expected {wanted}, actual version {actual}")


class ImportConflict(EnginesError):
    """An import brings, for a seq the stream holds, an event other than the one it holds
    (or events that do not chain onto it, or a command the stream holds elsewhere): the
    stream has another history there. Nothing of that import was written; retrying
    cannot help, so this is not a :class:`ConcurrencyError`."""

    def __init__(self, stream_id: str, seq: int, detail: str) -> None:
        self.stream_id = stream_id
        self.seq = seq
        self.detail = detail
        super().__init__(f"stream {stream_id!r} seq {seq}: {detail}")


class NotFound(EnginesError):
    """No such entity in the caller's scope (another user's entity reads as absent)."""


class AlreadyExists(EnginesError):
    """A create names an entity that already exists."""


class LimitExceeded(EnginesError):
    """A debit would take a budget over its limit. The refusal itself is recorded on the
    spine; nothing was debited."""


class StreamNotFound(NotFound):
    """The stream holds no events."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} not found")


class IntegrityError(EnginesError):
    """A stored stream does not verify against its hash chain."""


class UpcastError(EnginesError):
    """A stored event cannot be brought to the current schema version."""


class RoutingError(EnginesError):
    """The routes file or a lookup in the registry is wrong."""


class MissingRoutes(RoutingError):
    """One or more required resource kinds have no route."""

    def __init__(self, kinds: list[str], mode: str, also: list[str] | None = None) -> None:
        self.kinds = sorted(kinds)
        self.mode = mode
        self.also = also or []
        super().__init__(
            f"no route for {len(self.kinds)} required resource kind(s) in mode {mode!r}: "
            + ", ".join(self.kinds)
            + _also(self.also)
        )


def _also(problems: list[str]) -> str:
    return "".join(f"\n  also: {p}" for p in problems)


class ReservedKind(RoutingError):
    """A reserved resource kind was routed or asked for."""

    def __init__(self, kind: str, also: list[str] | None = None) -> None:
        self.kind = kind
        self.also = also or []
        super().__init__(f"resource kind {kind!r} is reserved, not active" + _also(self.also))


class RouteNotAllowed(RoutingError):
    """A route names a backend that its mode or its own flags do not allow."""


class IdentityError(EnginesError):
    """The caller's identity could not be established or was contradicted."""


class Unauthenticated(IdentityError):
    """No token, or a token that does not verify."""


class ScopeMismatch(IdentityError):
    """The request claims a scope (tenant, mode, user, surface, project) the token does
    not grant. ``principal`` is the verified caller, when the token itself verified."""

    principal: object | None = None


class RoleRequired(IdentityError):
    """The caller's token lacks the role this operation needs (``admin``, ``auditor``)."""


class BackendUnavailable(EnginesError):
    """The backend behind a route is down, unreachable or failing."""

    def __init__(self, route: str, backend: str, detail: str) -> None:
        self.route = route
        self.backend = backend
        self.detail = detail
        super().__init__(f"backend {backend!r} for route {route!r} unavailable: {detail}")
