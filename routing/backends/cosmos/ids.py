"""Cosmos DB item ids for our names.

An item id takes at most 255 characters and none of ``/ \\ ? #``; a stream id, a view
key or a partition name may hold ``/`` and be longer. :func:`item_id` turns any text
into an id that keeps it (base64url) while it fits, else a digest of it: no two texts
share an id.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

#: The longest id Cosmos DB takes.
MAX_ID: Final = 255


def item_id(prefix: str, text: str) -> str:
    """``prefix`` and ``text`` base64url-encoded (unpadded) if that fits in an id; else
    ``prefix``, ``~`` (outside base64url's alphabet, so never ambiguous) and the text's
    BLAKE2b digest in hex. ``prefix`` tells kinds of item apart; it must not hold ``~``."""
    encoded = prefix + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    if len(encoded) <= MAX_ID:
        return encoded
    return prefix + "~" + hashlib.blake2b(text.encode(), digest_size=32).hexdigest()
