"""What the SQLite modules share: quoting, and (from every backend's) decoding stored
envelopes."""

from __future__ import annotations

from routing.backends.common import decode_rows, decode_strict

__all__ = ["decode_rows", "decode_strict", "q"]


def q(name: str) -> str:
    """Quote a physical name (already validated by the routes schema)."""
    return '"' + name.replace('"', '""') + '"'
