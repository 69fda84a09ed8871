"""Times a client gives: RFC 3339 with an offset, kept as the spine's one text form of a
time (:func:`spine.codec.timestamp_text`: UTC, microseconds). Nothing else is read as
a time: no Unix numbers, no local times, no digits beyond microseconds silently cut."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Final

from pydantic import BeforeValidator

from spine.codec import timestamp_text

# ASCII digits only (``\d`` takes any script's), an offset of at most 23:59
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"([Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_DAY: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def utc_text(value: object) -> str:
    """``value``, an RFC 3339 time with an offset, as UTC text; ``ValueError`` (a 422
    naming the field) for anything else, including a time outside years 1 to 9999 in
    UTC."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 time with an offset, e.g. 2026-12-07T10:00:00Z "
            "(at most six decimals of a second)"
        )
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValueError("is not a time of the calendar (a leap second is not taken)") from None
    try:
        return timestamp_text(parsed)
    except (ValueError, OverflowError):
        raise ValueError("is not a time between the years 1 and 9999 (in UTC)") from None


def day_text(value: object) -> str:
    """``value``, a calendar day as ``YYYY-MM-DD``; ``ValueError`` otherwise."""
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        raise ValueError("must be a day as YYYY-MM-DD")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError("is not a day of the calendar") from None


ClientTime = Annotated[str, BeforeValidator(utc_text)]
"""An RFC 3339 time with an offset, held as UTC text (:func:`utc_text`)."""
Day = Annotated[str, BeforeValidator(day_text)]
"""A calendar day, ``YYYY-MM-DD``."""
