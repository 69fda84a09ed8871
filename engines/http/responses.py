"""Response helpers every router shares: orjson bodies, ETags, and If-Match parsing."""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi.responses import Response

from spine.errors import InvalidInput


class OrjsonResponse(Response):
    """JSON encoded with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def etag(version: int) -> str:
    return f'"{version}"'


def expected_from_if_match(if_match: str | None) -> int | None:
    """The version an ``If-Match`` header pins (``None``: no header, or ``*``)."""
    if if_match is None or if_match.strip() == "*":
        return None
    m = _ETAG.match(if_match.strip())
    if not m:
        raise InvalidInput('If-Match: expected a version ETag such as "3"')
    return int(m.group(1))
