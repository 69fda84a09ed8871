"""Text a client gives that people read back (a title, a reason, a note): one line,
with something visible in it. Written once for every domain."""

from __future__ import annotations

import re

from pydantic import AfterValidator

#: Control characters, line and paragraph separators, and the bidirectional overrides
#: and isolates that make text display other than it reads (``"\u202egnp.exe"``).
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: Characters that show nothing: zero-width spaces and joiners, marks, the BOM.
_INVISIBLE = re.compile(r"[\u00ad\u034f\u200b-\u200f\u2060-\u2064\ufeff]")


def visible_line(text: str) -> str:
    """``text`` if it is one line holding a visible character; ``ValueError`` (a 422
    naming the field) otherwise."""
    if _NOT_ONE_LINE.search(text):
        raise ValueError(
            "must be one line, without control, line-separator or bidirectional-override characters"
        )
    if not _INVISIBLE.sub("", text).strip():
        raise ValueError("needs a visible character")
    return text


VisibleLine = AfterValidator(visible_line)
"""``Annotated[str, StringConstraints(...), VisibleLine]``: one visible line."""


def free_of_controls(text: str) -> str:
    """``text`` if it holds no control or bidirectional-override character (a URL, a
    flag's string value: may be anything else, even empty)."""
    if _NOT_ONE_LINE.search(text):
        raise ValueError(
            "must not hold control, line-separator or bidirectional-override characters"
        )
    return text


NoControls = AfterValidator(free_of_controls)
