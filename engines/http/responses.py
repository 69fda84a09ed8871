"""Response helpers every router shares: orjson bodies, ETags, and the preconditions of
writes (``If-Match``, ``If-None-Match``)."""

from __future__ import annotations

import re
from typing import Any, Final

import orjson
from fastapi.responses import Response
from pydantic import BaseModel

from spine.appending import MAX_SEQ
from spine.errors import InvalidField


class OrjsonResponse(Response):
    """JSON encoded with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_STRONG = re.compile(r'^"(0|[1-9]\d{0,17})"$')
"""The ETags this service hands out: a version, as written (``"01"`` is another tag)."""
_ENTITY_TAG = re.compile(r'^(?:W/)?"[\x21\x23-\x7e]*"$')
"""Any entity-tag (RFC 9110 §8.8.3): well-formed, and never one of ours unless strong."""

#: The version a weak ``If-Match`` pins: one no stream reaches, so once the record is
#: found the precondition fails (412). Strong comparison never matches a weak tag.
NEVER_MATCHES: Final = MAX_SEQ


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None, if_none_match: str | None) -> int | None:
    """The stream version a write's preconditions pin (``None``: any).

    * ``If-Match: "3"``: version 3, compared strongly; ``If-Match: W/"3"`` never matches
      (:data:`NEVER_MATCHES`); ``If-Match: *``: any version of a record that exists, which
      every change requires anyway.
    * ``If-None-Match: *``: version 0, so the write is refused (412) if the record exists.

    Anything else, or both headers at once, is refused naming the header.
    """
    if if_match is not None and if_none_match is not None:
        raise InvalidField(("header", "if-none-match"), "give If-Match or If-None-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise InvalidField(("header", "if-none-match"), "If-None-Match on a write takes only *")
        return 0
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip()
    if m := _STRONG.match(value):
        return int(m.group(1))
    if _ENTITY_TAG.match(value):  # weak, or not a tag we made: strong comparison fails
        return NEVER_MATCHES
    raise InvalidField(("header", "if-match"), 'If-Match: expected an ETag such as "3", or *')


class Timestamps(BaseModel):
    """When a record was created and last changed (the recorded times of its events)."""

    created_at: str
    updated_at: str


class ProvenanceOut(BaseModel):
    """Who wrote a version, and from where: the principal's kind and what the write said
    of its agent, run, thread, step, parent event and trace (absent: null)."""

    source: str
    agent_id: str | None = None
    run_id: str | None = None
    thread_id: str | None = None
    step_id: str | None = None
    parent_event_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None


def provenance_out(data: dict[str, Any]) -> dict[str, Any]:
    given: dict[str, Any] = data.get("provenance") or {}
    return {name: given.get(name) for name in ProvenanceOut.model_fields}
