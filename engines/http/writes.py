"""What every write endpoint shares: the precondition and idempotency headers, the
command fields taken from the caller, and the answer: wait, bounded, for the domain's
view to reflect the write, then the record as the view has it, or ``202``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Header, Request
from fastapi.responses import Response

from commands.envelope import CommandResult
from engines.auth import Principal
from engines.http.errors import Gone
from engines.http.provenance import provenance_of
from engines.http.responses import OrjsonResponse, etag
from projections.views import ViewRecord
from spine.errors import BackendUnavailable
from spine.events import Provenance

IdempotencyKey = Annotated[
    str | None,
    Header(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", description="visible ASCII"),
]
IfMatch = Annotated[str | None, Header(description='"<version>" (strong) or *')]
IfNoneMatch = Annotated[str | None, Header(description="* : only if the record does not exist")]


def envelope(request: Request, principal: Principal, *given: Provenance | None) -> dict[str, Any]:
    """The command fields every write takes from its caller and request: the principal's
    kind as the source, the provenance (headers, then ``given``), the grants."""
    return {
        "source": principal.source,
        "provenance": provenance_of(request, *given),
        "grants": principal.grants,
    }


if TYPE_CHECKING:
    from engines.runtime import Runtime


async def written(
    runtime: Runtime,
    result: CommandResult,
    *,
    projector: str,
    key: str,
    ident: dict[str, str],
    render: Callable[[ViewRecord], dict[str, Any]],
    status: int,
    location: str | None = None,
    replay: bool = False,
) -> Response:
    """Answer a write: ``render(record)`` with ``status`` once ``projector``'s view holds
    ``result``; ``ident`` plus ``deleted`` for a record the write deleted; ``ident`` plus
    ``status: accepted`` (202) if the view does not reflect it within the configured wait.
    ``replay``: ``result`` is an earlier write answered again (an idempotent retry); if
    its record has been deleted since, that is :class:`Gone` (410).

    ``key`` is the record that follows ``result``'s stream (its version is the stream's
    seq). The record answered is the view as it stands, which a later write may already
    have moved past ``result``; its ETag is the version of that body, never an older
    one."""
    reflected = await runtime.wait_for(
        projector, result.stream_id, result.version, runtime.settings.write_wait_seconds
    )
    current = None
    if reflected:
        with contextlib.suppress(BackendUnavailable):  # gone since: the write is durable
            found = await runtime.view_of(projector).get_many([key], include_deleted=True)
            current = found.get(key)
    if current is None or current.version < result.version:
        # not there yet; or the view's progress says applied while its record (which
        # follows the stream, version = seq) does not show it: say accepted, not a lie
        return OrjsonResponse(
            {**ident, "version": result.version, "status": "accepted"},
            status_code=202,
            headers={"ETag": etag(result.version)},
        )
    headers = {"ETag": etag(current.version)}
    expired = current.expires_at is not None and current.expires_at <= datetime.now(UTC)
    if replay and (current.deleted or expired):
        made = ", ".join(f"{k}={v}" for k, v in ident.items())
        gone = "has been deleted since" if current.deleted else "has expired since"
        raise Gone(f"what this request made ({made}) {gone}")
    if current.deleted:
        return OrjsonResponse(
            {**ident, "version": current.version, "deleted": True}, headers=headers
        )
    if location is not None:
        headers["Location"] = location
    return OrjsonResponse(render(current), status_code=status, headers=headers)
