"""Text people read back (titles, reasons, notes, URLs) is one visible line in every
domain: a control, line-separator or bidirectional-override character, or nothing
visible at all, is refused (422) and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from engines.runtime import Runtime
from tests.e2e.support import Mint, client_for, field_paths, spine_events

BAD_LINES = [
    "\u200b",
    " ",
    "a\nb",
    "a\u2028b",
    "\u202egnp.exe",
    "a\x00b",
    "\u3164",  # a Hangul filler: a letter that draws nothing
    "\u2800",  # the blank Braille pattern
    "\u0301",  # a combining mark alone
    "\U000e0041",  # a tag character
    "\u00ad",  # a soft hyphen
    "abc\u200f",  # a right-to-left mark: every bidirectional control is refused
    "\u061cabc",  # an Arabic letter mark
]


def requests(text: str) -> list[tuple[str, str, dict[str, Any], dict[str, str], tuple[Any, ...]]]:
    return [
        ("post", "/notes", {"title": text}, {}, ("body", "title")),
        ("post", "/notes", {"title": "t", "tags": [text]}, {}, ("body", "tags", 0)),
        (
            "post",
            "/budgets/b1/debits",
            {"amount_minor": 1, "reason": text},
            {},
            ("body", "reason"),
        ),
        ("put", "/seo-config/s1", {"title": text}, {}, ("body", "title")),
        ("put", "/seo-config/s1", {"keywords": [text]}, {}, ("body", "keywords", 0)),
        (
            "post",
            "/strategy-locks/st1/snapshots",
            {"toggles": {}, "flags": {}, "note": text},
            {"X-Project-Id": "p1"},
            ("body", "note"),
        ),
    ]


@pytest.mark.parametrize("text", BAD_LINES, ids=repr)
async def test_a_line_of_text_that_is_not_one_visible_line_is_refused(
    runtime: Runtime, mint: Mint, text: str
) -> None:
    async with client_for(runtime, mint(roles=["admin"])) as admin:
        limit = await admin.put("/budgets/b1/limit", json={"amount_minor": 100})
        assert limit.status_code == 200, limit.text
        before = await spine_events(runtime)
        for method, url, body, headers, field in requests(text):
            response = await admin.request(method, url, json=body, headers=headers)
            assert field in [loc[: len(field)] for loc in field_paths(response)], (url, body)
        assert await spine_events(runtime) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"canonical_url": "https://example.com/\u0000"}, ("body", "canonical_url")),
        ({"canonical_url": "https://example.com/\u202e"}, ("body", "canonical_url")),
    ],
)
async def test_a_url_with_a_control_character_is_refused(
    runtime: Runtime, mint: Mint, body: dict[str, Any], field: tuple[str, ...]
) -> None:
    async with client_for(runtime, mint(roles=["admin"])) as admin:
        response = await admin.put("/seo-config/s1", json=body)
    assert field in field_paths(response)
    assert await spine_events(runtime) == 0


async def test_a_line_with_emoji_marks_and_joiners_is_visible_and_kept(
    runtime: Runtime, mint: Mint
) -> None:
    title = "Plan \U0001f468\u200d\U0001f469\u200d\U0001f467 caf\u0065\u0301"
    async with client_for(runtime, mint()) as client:
        response = await client.post("/notes", json={"title": title})
    assert (response.status_code, response.json()["title"]) == (201, title)


@pytest.mark.parametrize(
    "tag", ["\U0001f469\u200d\U0001f4bb", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"]
)
async def test_a_tag_may_hold_the_joiners_emoji_and_scripts_need(
    runtime: Runtime, mint: Mint, tag: str
) -> None:
    async with client_for(runtime, mint()) as client:
        response = await client.post("/notes", json={"title": "t", "tags": [tag]})
    assert (response.status_code, response.json()["tags"]) == (201, [tag])


async def test_a_flags_string_may_be_anything_but_control_characters(
    runtime: Runtime, mint: Mint
) -> None:
    async with client_for(runtime, mint(roles=["admin"])) as admin:
        url = "/strategy-locks/st1/snapshots"
        headers = {"X-Project-Id": "p1"}
        bad = await admin.post(url, json={"toggles": {}, "flags": {"f": "\x00"}}, headers=headers)
        fine = await admin.post(url, json={"toggles": {}, "flags": {"f": ""}}, headers=headers)

    assert field_paths(bad)
    assert fine.status_code == 201, fine.text
