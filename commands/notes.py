"""Notes: one stream per note, ``notes/{tenant}/{mode}/{note_id}``.

Commands create, update (full replacement of the editable fields) and delete a note.
A note belongs to the user who created it; to anyone else it does not exist, and to a
command whose grants do not cover its surface and project neither.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from commands.envelope import Command, CommandResult, granted, idempotent_id
from commands.sizes import fits
from commands.text import VisibleLine
from spine.errors import AlreadyExists, InvalidField, NotFound, ScopeMismatch
from spine.events import EventEnvelope, Identifier, NewEvent, ProvenanceValue, Scope, new_id
from spine.streams import stream_id

DOMAIN = "notes"
#: The most a note's content takes, as encoded JSON. Chosen so a note fits every store
#: whole, its event and its view record: DynamoDB takes 400 KB an item, and Firestore's
#: 1 MiB a document holds a view record's data twice (as JSON, and its fields).
MAX_CONTENT_BYTES = 256 * 1024


#: Commas (a tag list's separator) and the invisible spaces and joiners that would make
#: two tags look the same (``todo`` and ``todo\u200b``); the joiners emoji and some
#: scripts need (ZWJ, ZWNJ) are fine.
_NOT_IN_TAGS = re.compile(r"[,\u200b\u2060-\u2064\ufeff]")


def _tag_text(tag: str) -> str:
    if _NOT_IN_TAGS.search(tag):
        raise ValueError("a tag may not hold a comma or an invisible space")
    return tag


Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_tag_text),
    VisibleLine,
]

Title = Annotated[str, StringConstraints(min_length=1, max_length=500), VisibleLine]


class NoteSource(BaseModel):
    """Who wrote the note: a user, or an agent (then ``agent_id`` says which)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    created_by: Literal["user", "agent"] = "user"
    agent_id: ProvenanceValue | None = None
    run_id: ProvenanceValue | None = None

    @model_validator(mode="after")
    def _agent_named(self) -> Self:
        if self.created_by == "agent" and not self.agent_id:
            raise ValueError("agent_id is required when created_by is 'agent'")
        return self


ContentType = Literal["markdown", "json", "text"]


def inferred_content_type(content: Any) -> ContentType:
    """The content type of a note that does not say: a string is markdown, anything else
    (an object, an array, a number) json."""
    return "markdown" if isinstance(content, str) else "json"


class NoteBody(BaseModel):
    """The editable fields of a note."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: Title
    content_type: ContentType = Field(
        default="markdown",
        description="inferred when omitted: markdown for string content, json otherwise",
    )
    content: Any = ""
    tags: list[Tag] = Field(default_factory=list, max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _infer_content_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "content_type" not in data:
            return {**data, "content_type": inferred_content_type(data.get("content", ""))}
        return data

    @model_validator(mode="after")
    def _content_fits_type(self) -> Self:
        if self.content_type != "json" and not isinstance(self.content, str):
            raise ValueError(f"content must be a string when content_type is {self.content_type}")
        fits(self.content, MAX_CONTENT_BYTES, "content")
        if len(set(self.tags)) != len(self.tags):
            raise ValueError("tags must not repeat")
        return self


class CreateNote(NoteBody):
    note_id: Identifier
    source: NoteSource = NoteSource()


class UpdateNote(NoteBody):
    note_id: Identifier


class DeleteNote(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    note_id: Identifier


@dataclass(frozen=True)
class NoteState:
    version: int = 0
    exists: bool = False
    deleted: bool = False
    scope: Scope | None = None
    body: bytes = b""
    """A digest of the editable fields as they stand (an update to the same is no
    change)."""


EDITABLE = tuple(NoteBody.model_fields)


def body_digest(fields: dict[str, Any]) -> bytes:
    """A digest of a note's editable fields, from an event's payload or a command."""
    editable = {name: fields.get(name) for name in EDITABLE}
    return hashlib.blake2b(orjson.dumps(editable, option=orjson.OPT_SORT_KEYS)).digest()


def note_stream(scope: Scope, note_id: str) -> str:
    return stream_id(DOMAIN, scope.tenant_id, scope.mode, note_id)


class NotesDecider:
    def stream_id(self, command: Command[Any]) -> str:
        return note_stream(command.scope, command.payload.note_id)

    def initial(self) -> NoteState:
        return NoteState()

    def evolve(self, state: NoteState, event: EventEnvelope) -> NoteState:
        if event.event_type == "note.created":
            body = body_digest(event.payload)
            return NoteState(version=event.seq, exists=True, scope=event.scope, body=body)
        if event.event_type == "note.deleted":
            return replace(state, version=event.seq, deleted=True)
        if event.event_type == "note.updated":
            return replace(state, version=event.seq, body=body_digest(event.payload))
        return replace(state, version=event.seq)

    def decide(self, state: NoteState, command: Command[Any]) -> Sequence[NewEvent]:
        payload = command.payload
        if isinstance(payload, CreateNote):
            if state.exists:
                raise AlreadyExists(f"note {payload.note_id!r} already exists")
            if command.scope.surface_id is None:
                raise InvalidField(("body", "surface_id"), "a note needs a surface_id")
            if command.grants is not None and not granted(command.grants, command.scope):
                raise ScopeMismatch(
                    f"surface {command.scope.surface_id!r} and project "
                    f"{command.scope.project_id!r} are not granted to the caller"
                )
            return [command.event("note.created", payload.model_dump(mode="json"))]
        if not visible(state, command):
            raise NotFound(f"note {payload.note_id!r} not found")
        if isinstance(payload, UpdateNote):
            body = payload.model_dump(mode="json", exclude={"note_id"})
            if body_digest(body) == state.body:
                return []  # the note says this already: nothing to record
            return [command.event("note.updated", body, scope=state.scope)]
        if isinstance(payload, DeleteNote):
            return [command.event("note.deleted", {}, scope=state.scope)]
        raise TypeError(f"notes cannot handle {type(payload).__name__}")


def visible(state: NoteState, command: Command[Any]) -> bool:
    """Whether the note folded into ``state`` exists for ``command``'s caller: it is live,
    it is theirs, and it lies within their grants."""
    if not state.exists or state.deleted or state.scope is None:
        return False
    if state.scope.user_id != command.scope.user_id:
        return False
    return command.grants is None or granted(command.grants, state.scope)


def create_note_command(
    scope: Scope, fields: dict[str, Any], idempotency_key: str | None = None, **envelope: Any
) -> Command[CreateNote]:
    """The command that creates a note from ``fields``; ``envelope`` holds the other
    command fields (source, provenance, grants). With an idempotency key, the note id
    and the command id derive from it (per tenant, mode and user), so a retried request
    names the same note and the same command: the spine answers it with the original
    result."""
    if idempotency_key is None:
        note_id, command_id = new_id(), new_id()
    else:
        note_id = idempotent_id(scope, DOMAIN, idempotency_key)
        command_id = f"create:{note_id}"
    payload = CreateNote.model_validate({**fields, "note_id": note_id})
    return Command[CreateNote](command_id=command_id, scope=scope, payload=payload, **envelope)


def same_request_or_refuse(command: Command[CreateNote], result: CommandResult) -> None:
    """A repeated create must be the same request: an idempotency key reused for a
    different one is refused rather than answered with someone else's note."""
    if not result.deduplicated:
        return
    original = result.events[0]
    scope = command.scope
    if original.payload != command.payload.model_dump(mode="json") or (
        original.surface_id,
        original.project_id,
    ) != (scope.surface_id, scope.project_id):
        raise AlreadyExists("this Idempotency-Key was used for a different request; use a new key")
