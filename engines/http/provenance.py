"""Provenance over HTTP: which agent, run, thread and step a write comes from, the
event it follows, and its trace — from headers or the body, recorded on every event.

==================  =================================  ==========================
field               header                             body
==================  =================================  ==========================
agent_id            ``X-Agent-Id``                     ``provenance.agent_id``
run_id              ``X-Run-Id``                       ``provenance.run_id``
thread_id           ``X-Thread-Id``                    ``provenance.thread_id``
step_id             ``X-Step-Id``                      ``provenance.step_id``
parent_event_id     ``X-Parent-Event-Id``              ``provenance.parent_event_id``
trace_id            ``X-Trace-Id``, or ``traceparent``  ``provenance.trace_id``
span_id             ``X-Span-Id``, or ``traceparent``   ``provenance.span_id``
==================  =================================  ==========================

A value may be given in several places if they agree; two different values are refused
(422 naming the field). ``traceparent`` is the W3C trace context
(``00-<trace id>-<parent span id>-<flags>``). What no one gives stays absent.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import ValidationError
from starlette.requests import HTTPConnection

from spine.errors import InvalidField
from spine.events import Provenance

PROVENANCE_HEADERS: Final[dict[str, str]] = {
    name: "x-" + name.replace("_", "-") for name in Provenance.model_fields
}
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _traceparent(value: str) -> dict[str, str]:
    m = _TRACEPARENT.match(value.strip())
    if not m or m.group(1) == "ff" or set(m.group(2)) == {"0"} or set(m.group(3)) == {"0"}:
        raise InvalidField(("header", "traceparent"), "traceparent is not a W3C trace context")
    return {"trace_id": m.group(2), "span_id": m.group(3)}


def provenance_of(conn: HTTPConnection, *given: Provenance | None) -> Provenance:
    """The request's provenance: its headers, merged with ``given`` (from the body)."""
    found: dict[str, tuple[tuple[str, ...], str]] = {}

    def add(name: str, value: str, loc: tuple[str, ...]) -> None:
        if name in found and found[name][1] != value:
            raise InvalidField(loc, f"{name} is given twice, as two different values")
        found[name] = (loc, value)

    for name, header in PROVENANCE_HEADERS.items():
        value = conn.headers.get(header)
        if value is not None:
            loc = ("header", header)
            try:
                Provenance.model_validate({name: value})
            except ValidationError:
                raise InvalidField(loc, f"{header}: expected visible ASCII, no spaces") from None
            add(name, value, loc)
    if (value := conn.headers.get("traceparent")) is not None:
        for name, part in _traceparent(value).items():
            add(name, part, ("header", "traceparent"))
    for provenance in given:
        if provenance is not None:
            for name, value in provenance.model_dump(exclude_none=True).items():
                add(name, value, ("body", "provenance", name))
    return Provenance.model_validate({name: value for name, (_, value) in found.items()})
