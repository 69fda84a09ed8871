"""Stream ids: ``{domain}/{tenant}/{mode}/{part}...``.

Every stream id begins with its domain, tenant and mode, so a query over a prefix that
ends in ``/`` (``notes/acme/lab/``) can never mix tenants or modes. Build them with
:func:`stream_id`; never format one by hand.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple, cast

from spine.errors import InvalidStreamId
from spine.events import IDENTIFIER_PATTERN, MODES, Mode

_SEGMENT: Final = re.compile(IDENTIFIER_PATTERN)
_DOMAIN: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_PARTS: Final = 6


class StreamName(NamedTuple):
    domain: str
    tenant_id: str
    mode: Mode
    parts: tuple[str, ...]


def _check_segment(what: str, value: str) -> None:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise InvalidStreamId(
            f"{what} {value!r} is not a valid stream-id segment "
            "(letters, digits and . _ : @ + -, at most 128, no slashes)"
        )


def stream_id(domain: str, tenant_id: str, mode: str, *parts: str) -> str:
    """Build a stream id, refusing any segment that could break its shape."""
    if not _DOMAIN.fullmatch(domain):
        raise InvalidStreamId(f"domain {domain!r} must be lower-case letters, digits and _")
    _check_segment("tenant_id", tenant_id)
    if mode not in MODES:
        raise InvalidStreamId(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if not parts:
        raise InvalidStreamId("a stream id needs at least one part after domain/tenant/mode")
    if len(parts) > MAX_PARTS:
        raise InvalidStreamId(f"a stream id takes at most {MAX_PARTS} parts")
    for part in parts:
        _check_segment("part", part)
    return "/".join((domain, tenant_id, mode, *parts))


class ScanScope(NamedTuple):
    """Which streams a scan reads: those of ``domain`` (``None``: every domain), of
    ``tenant_id`` and ``mode`` if given. Built by :func:`scan_scope`, which checks each."""

    domain: str | None
    tenant_id: str | None
    mode: Mode | None

    @property
    def prefix(self) -> str:
        """The longest stream-id prefix every stream in scope shares ("": any)."""
        if self.domain is None:
            return ""
        parts = [self.domain]
        if self.tenant_id is not None:
            parts.append(self.tenant_id)
            if self.mode is not None:
                parts.append(self.mode)
        return "/".join(parts) + "/"

    @property
    def by_prefix(self) -> bool:
        """Whether :attr:`prefix` alone says what is in scope (the fields given are a
        leading run of domain, tenant, mode)."""
        given = [v is not None for v in self]
        return given == sorted(given, reverse=True)

    def holds(self, stream_id: str) -> bool:
        """Whether ``stream_id`` (well formed) is in scope."""
        domain, tenant_id, mode, _ = stream_id.split("/", 3)
        return (
            (self.domain is None or domain == self.domain)
            and (self.tenant_id is None or tenant_id == self.tenant_id)
            and (self.mode is None or mode == self.mode)
        )


def scan_scope(
    domain: str | None = None, tenant_id: str | None = None, mode: str | None = None
) -> ScanScope:
    """A checked :class:`ScanScope` (:class:`InvalidStreamId` naming what is wrong)."""
    if domain is not None and (not isinstance(domain, str) or not _DOMAIN.fullmatch(domain)):
        raise InvalidStreamId(f"domain {domain!r} must be lower-case letters, digits and _")
    if tenant_id is not None:
        _check_segment("tenant_id", tenant_id)
    if mode is not None and mode not in MODES:
        raise InvalidStreamId(f"mode {mode!r} is not one of {', '.join(MODES)}")
    return ScanScope(domain, tenant_id, mode)


_SEG_BODY = IDENTIFIER_PATTERN[1:-1]
_WELL_FORMED: Final = re.compile(
    rf"^[a-z][a-z0-9_]{{0,31}}/{_SEG_BODY}/(?:{'|'.join(MODES)})(?:/{_SEG_BODY}){{1,{MAX_PARTS}}}$"
)


def parse_stream_id(value: str) -> StreamName:
    """Split and validate a stream id built by :func:`stream_id`."""
    if isinstance(value, str) and _WELL_FORMED.fullmatch(value):  # the fast path: one regex
        domain, tenant_id, mode, *parts = value.split("/")
        return StreamName(domain, tenant_id, cast(Mode, mode), tuple(parts))
    pieces = value.split("/") if isinstance(value, str) else []
    if len(pieces) < 4:
        raise InvalidStreamId(f"stream id {value!r} must be domain/tenant/mode/part...")
    domain, tenant_id, mode, *parts = pieces
    stream_id(domain, tenant_id, mode, *parts)  # validates every segment
    return StreamName(domain, tenant_id, cast(Mode, mode), tuple(parts))
