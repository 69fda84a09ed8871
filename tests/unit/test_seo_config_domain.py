"""SEO config as pure functions: the config body (no defaults, no nulls), and fold and
decide on the entity core, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from commands.entities import EntityDecider
from commands.envelope import Command
from commands.handler import fold
from commands.seo_config import SEO_CONFIG, PutSeoConfig, SeoConfigBody
from spine.codec import seal
from spine.errors import NotFound, ScopeMismatch
from spine.events import GENESIS_HASH, EventEnvelope, Scope

ADMIN = Scope(tenant_id="t1", mode="lab", user_id="admin", surface_id="chat")
#: chat grants projects: an SEO config, which belongs to no project, is still the surface's
GRANTS = {"chat": frozenset({"p1", "p2"})}
decider = EntityDecider(SEO_CONFIG)
CONFIG = {"title": "Chat", "keywords": ["ai", "chat"]}


def put(
    body: dict[str, Any] = CONFIG,
    scope: Scope = ADMIN,
    grants: dict[str, frozenset[str]] | None = None,
) -> Command[Any]:
    assert scope.surface_id is not None
    payload = PutSeoConfig(path=(scope.surface_id,), body=body)
    return Command[Any](scope=scope, payload=payload, grants=GRANTS if grants is None else grants)


def history(*commands: Command[Any]) -> list[EventEnvelope]:
    events: list[EventEnvelope] = []
    for cmd in commands:
        for new in decider.decide(fold(decider, events), cmd):
            env, _ = seal(
                new,
                stream_id=decider.stream_id(cmd),
                seq=len(events) + 1,
                prev_hash=events[-1].hash if events else GENESIS_HASH,
                recorded_at=datetime.now(UTC),
            )
            events.append(env)
    return events


# -- decide ----------------------------------------------------------------------------


def test_a_put_creates_then_replaces_the_surfaces_config() -> None:
    events = history(put(), put({"description": "talk to it"}))

    assert [e.event_type for e in events] == ["seo_config.created", "seo_config.updated"]
    assert {e.stream_id for e in events} == {"seo_config/t1/lab/chat"}
    assert [e.payload for e in events] == [CONFIG, {"description": "talk to it"}]
    assert {e.family for e in events} == {"domain"}
    assert {(e.surface_id, e.project_id) for e in events} == {("chat", None)}


def test_a_config_is_created_on_a_surface_that_grants_projects_without_naming_one() -> None:
    (event,) = history(put(grants={"chat": frozenset({"p1"})}))

    assert (event.surface_id, event.project_id) == ("chat", None)


def test_the_same_config_again_appends_nothing() -> None:
    events = history(put(), put())

    assert [e.seq for e in events] == [1]


def test_a_config_on_a_surface_the_caller_is_not_granted_is_refused() -> None:
    with pytest.raises(ScopeMismatch):
        history(put(grants={"canvas": frozenset()}))


def test_a_caller_not_granted_the_surface_finds_no_config_to_replace() -> None:
    events = history(put())

    with pytest.raises(NotFound, match="SEO config 'chat' not found"):
        decider.decide(fold(decider, events), put(grants={"canvas": frozenset()}))


# -- the body --------------------------------------------------------------------------


def dumped(raw: dict[str, Any]) -> dict[str, Any]:
    body = SeoConfigBody.model_validate_json(orjson.dumps(raw))
    return body.model_dump(mode="json", exclude_unset=True)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"title": "Chat"},
        {"open_graph": {"image": "https://example.test/og.png"}},
        {
            "title": "Chat",
            "description": "Talk to it",
            "keywords": [],
            "canonical_url": "https://example.test/chat?ref=Nav",
            "robots": ["noindex", "max-snippet:50"],
            "open_graph": {"title": "Chat", "type": "website", "locale": "en_US"},
            "twitter_card": "summary",
        },
    ],
    ids=["empty", "title-only", "nested-only", "everything"],
)
def test_a_config_is_kept_exactly_as_given_with_nothing_defaulted(raw: dict[str, Any]) -> None:
    assert dumped(raw) == raw


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"title": None}, ("title",)),
        ({"open_graph": {"title": None}}, ("open_graph", "title")),
        ({"title": 7}, ("title",)),
        ({"title": ""}, ("title",)),
        ({"title": "x" * 201}, ("title",)),
        ({"keywords": "ai, chat"}, ("keywords",)),
        ({"keywords": ["ai"] * 65}, ("keywords",)),
        ({"canonical_url": "ftp://example.test/"}, ("canonical_url",)),
        ({"canonical_url": "/relative"}, ("canonical_url",)),
        ({"robots": "noindex"}, ("robots",)),
        ({"robots": ["No Index"]}, ("robots", 0)),
        ({"open_graph": {"colour": "red"}}, ("open_graph", "colour")),
        ({"open_graph": {"locale": "english"}}, ("open_graph", "locale")),
        ({"twitter_card": "huge"}, ("twitter_card",)),
        ({"favicon": "x.ico"}, ("favicon",)),
    ],
    ids=[
        "null",
        "nested-null",
        "number-as-title",
        "empty-title",
        "title-too-long",
        "keywords-as-string",
        "too-many-keywords",
        "not-http",
        "relative-url",
        "robots-as-string",
        "robots-directive",
        "unknown-open-graph-field",
        "locale",
        "twitter-card",
        "unknown-field",
    ],
)
def test_a_config_not_exactly_the_shape_is_refused_naming_the_field(
    raw: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    with pytest.raises(ValidationError) as info:
        dumped(raw)

    assert [tuple(e["loc"]) for e in info.value.errors()] == [loc]


def test_a_command_whose_scope_names_another_surface_than_its_path_is_refused() -> None:
    # who may see a config follows its record's surface: a command on the bus scoped to
    # one surface may not write another's stream
    payload = PutSeoConfig(path=("canvas",), body=CONFIG)
    command = Command[Any](scope=ADMIN, payload=payload)

    with pytest.raises(ScopeMismatch, match="'canvas'"):
        decider.decide(decider.initial(), command)
