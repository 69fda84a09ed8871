"""Access decisions recorded on the spine as ``audit`` events (one stream per request)."""

from __future__ import annotations

import logging
from typing import Any

from spine.errors import EnginesError
from spine.events import NO_STREAM, Mode, NewEvent, new_id
from spine.store import EventStore
from spine.streams import stream_id

log = logging.getLogger(__name__)

#: The tenant segment for requests whose token did not verify (no tenant is known).
UNAUTHENTICATED_TENANT = "unauthenticated"


async def record_access_denied(
    spine: EventStore,
    *,
    mode: Mode,
    tenant_id: str | None,
    user_id: str | None,
    status: int,
    reason: str,
    request: dict[str, Any],
) -> str:
    """Append an ``audit.access_denied`` event; return its stream id."""
    request_id = new_id()
    tenant = tenant_id or UNAUTHENTICATED_TENANT
    sid = stream_id("audit", tenant, mode, request_id)
    event = NewEvent(
        event_type="audit.access_denied",
        family="audit",
        tenant_id=tenant,
        mode=mode,
        user_id=user_id,
        run_id=request_id,
        step_id="authenticate",
        source="ui",
        command_id=request_id,
        payload={"status": status, "reason": reason, "request": request},
    )
    try:
        await spine.append(sid, [event], NO_STREAM)
    except EnginesError:
        log.exception("could not record an access denial on the spine")
        raise
    return sid
