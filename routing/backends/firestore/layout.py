"""Where the Firestore spine keeps what, what Firestore lets one commit hold, and which
fields it indexes (the layout itself is drawn in the package's docstring)."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from spine.appending import MAX_SEQ

#: Stands for ``/`` in a stream's document id: no stream-id segment may hold it.
SLASH: Final = "~"
EVENTS: Final = "events"
COMMANDS: Final = "commands"
#: Outbox markers spread over this many values of their ``shard`` field, so that the
#: index on their (monotonically increasing) write time has as many insertion points.
OUTBOX_SHARDS: Final = 10
_SEQ_DIGITS: Final = len(str(MAX_SEQ))


def outbox_collection(route: str) -> str:
    """The route's outbox collection: ``~`` is in no route name, so it is no one else's."""
    return f"{route}{SLASH}outbox"


def stream_doc_id(stream_id: str) -> str:
    """A stream's document id: the stream id with its slashes as ``~``. A prefix of a
    stream id stays a prefix of the document id."""
    return stream_id.replace("/", SLASH)


def stream_of(doc_id: str) -> str:
    return doc_id.replace(SLASH, "/")


def seq_doc_id(seq: int) -> str:
    """An event's document id: its seq, zero-padded so that key order is seq order."""
    return f"{seq:0{_SEQ_DIGITS}d}"


def command_doc_id(command_id: str) -> str:
    """A command marker's document id: any command id, as a valid document id (base64url
    cannot hold ``/`` or make ``.``; the leading ``c`` keeps it off ``__...__``)."""
    return "c" + base64.urlsafe_b64encode(command_id.encode()).decode().rstrip("=")


#: The longest document id Firestore takes, in UTF-8 bytes.
MAX_DOC_ID_BYTES: Final = 1500


def encode_id(text: str) -> str:
    """Any string as a document id, one to one: ``k`` and the string percent-encoded
    (every byte but letters, digits and ``_.-~``: so no ``/``, and the ``k`` keeps it
    off ``.``, ``..`` and ``__...__``); where that is over :data:`MAX_DOC_ID_BYTES`,
    ``h`` and a 256-bit digest of the string (each store keeps the string itself in a
    field, so nothing is lost). The two forms never meet: they start apart."""
    quoted = "k" + urllib.parse.quote(text, safe="")
    if len(quoted) <= MAX_DOC_ID_BYTES:
        return quoted
    return "h" + hashlib.blake2b(text.encode(), digest_size=32).hexdigest()


def outbox_doc_id(stream_id: str, first_seq: int) -> str:
    """An outbox marker's document id: one per append (its stream and first seq)."""
    return f"{stream_doc_id(stream_id)}{SLASH}{seq_doc_id(first_seq)}"


def outbox_shard(stream_id: str, first_seq: int) -> int:
    """Spreads markers over :data:`OUTBOX_SHARDS`, one stream's appends too."""
    return (zlib.crc32(stream_id.encode()) + first_seq) % OUTBOX_SHARDS


@dataclass(frozen=True)
class Limits:
    """What one commit may hold (Firestore's documented quotas)."""

    max_writes: int = 500
    """Writes in one commit (batch or transaction)."""
    max_document_bytes: int = 1_048_576
    """One document's size, computed as :func:`document_size` does (1 MiB)."""
    max_request_bytes: int = 10_485_760
    """One API request (10 MiB)."""

    @property
    def max_events(self) -> int:
        """Events in one append: every write but the command marker, the outbox marker and
        (on a stream's first append) the stream's document."""
        return self.max_writes - 3


#: The Cloud Firestore emulator's gRPC server refuses a message over 4 MiB
#: (RESOURCE_EXHAUSTED), far below the service's 10 MiB request limit.
EMULATOR_LIMITS: Final = Limits(max_request_bytes=4 * 1024 * 1024)

FieldValue = str | bytes | bool | int | datetime


def _string_size(text: str) -> int:
    return len(text.encode()) + 1


def value_size(value: object) -> int:
    """A field value's size as Firestore counts it: a string's UTF-8 +1, bytes as they
    are, null and a boolean 1, a number or a time 8, an array the sum of its values, a
    map the sum of its keys (as strings) and values."""
    if isinstance(value, str):
        return _string_size(value)
    if isinstance(value, bytes):
        return len(value)
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, list | tuple):
        return sum(value_size(item) for item in value)
    if isinstance(value, Mapping):
        return sum(_string_size(str(k)) + value_size(v) for k, v in value.items())
    return 8


def document_size(path: Iterable[str], fields: Mapping[str, object]) -> int:
    """A document's size as Firestore counts it against its 1 MiB limit: the name (each
    collection and document id of its path, +1 each, +16), each field's name (+1) and
    value (:func:`value_size`), and 32."""
    size = sum(_string_size(part) for part in path) + 16 + 32
    for name, value in fields.items():
        size += _string_size(name) + value_size(value)
    return size


def write_size(name: str, fields: Mapping[str, object]) -> int:
    """An upper bound on one write's share of a commit request: its full document name
    (``projects/.../documents/...``), its fields, and room for the protobuf framing."""
    size = len(name.encode()) + 64
    for field, value in fields.items():
        size += len(field.encode()) + 16 + _framed_size(value)
    return size


def _framed_size(value: object) -> int:
    """A value's bytes in a request, with room for each nested value's framing."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_framed_size(item) + 4 for item in value)
    if isinstance(value, Mapping):
        return sum(len(str(k).encode()) + 8 + _framed_size(v) for k, v in value.items())
    return 12


#: What provisioning declares (the emulator needs no index and enforces none):
#: fields no query reads are exempt from Firestore's automatic single-field indexes,
#: so an append pays for no index entry of a body and no hot index range forms.
#: Collection groups by their id; ``{outbox}`` stands for :func:`outbox_collection`.
UNINDEXED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    EVENTS: ("body", "hash"),  # read by key; ``seq`` stays indexed (descending: the head)
    COMMANDS: ("command_id", "first_seq", "last_seq"),  # read by key
    "{route}": ("stream_id",),  # stream documents: listed by key
    # written_at rises with every append: indexed alone it would cap the outbox near 500
    # writes a second; the composite index below leads with the shard instead.
    "{outbox}": ("stream_id", "first_seq", "last_seq", "written_at"),
}
COMPOSITE_INDEXES: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "{outbox}": (("shard", "ASCENDING"), ("written_at", "ASCENDING")),
}
