"""Text a client gives that people read back (a title, a reason, a note): one line,
with something visible in it. Written once for every domain."""

from __future__ import annotations

import re
import unicodedata

from pydantic import AfterValidator

#: Control characters, line and paragraph separators, and every bidirectional control
#: (marks, embeddings, overrides, isolates), which make text display other than it reads
#: (``"\u202egnp.exe"``).
_NOT_ONE_LINE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
#: Letters that draw nothing (Hangul fillers, the blank Braille pattern).
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _shows(char: str) -> bool:
    """Whether ``char`` draws something: a letter, digit, punctuation mark or symbol
    (emoji included); never a space, a mark alone, a format or control character."""
    return unicodedata.category(char)[0] in "LNPS" and char not in _BLANK_LETTERS


def visible_line(text: str) -> str:
    """``text`` if it is one line holding a visible character; ``ValueError`` (a 422
    naming the field) otherwise."""
    if _NOT_ONE_LINE.search(text):
        raise ValueError(
            "must be one line, without control, line-separator or bidirectional-override characters"
        )
    if not any(_shows(char) for char in text):
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
