"""Sizes of client JSON, measured one way for every domain: encoded, in bytes."""

from __future__ import annotations

from typing import Any

import orjson


def encoded_size(value: Any, what: str) -> int:
    """The size of ``value`` encoded as JSON; ``ValueError`` (a 422 naming ``what``) if it
    is not JSON."""
    try:
        return len(orjson.dumps(value))
    except TypeError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from exc


def fits(value: Any, limit: int, what: str) -> int:
    """``encoded_size``, and ``ValueError`` if it is over ``limit``."""
    size = encoded_size(value, what)
    if size > limit:
        raise ValueError(f"{what} is {size} bytes encoded; the limit is {limit}")
    return size
