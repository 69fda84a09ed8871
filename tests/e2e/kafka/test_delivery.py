"""The Kafka spine feed end to end: ``engines serve --no-projectors`` and ``engines
projections run`` as processes of their own, the relay's crash between commit and
publish, and two projector processes splitting the partitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.settings import Settings
from tests.e2e.kafka.conftest import HttpFor
from tests.e2e.kafka.deployment import run_projectors, serve
from tests.e2e.kafka.fold import assert_views_are_folds_of_the_spine
from tests.e2e.support import Mint

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


async def test_a_write_answers_201_once_another_process_applies_it_from_the_topic(
    routes: Path, kafka_settings: Settings, tmp_path: Path, mint: Mint, http_for: HttpFor
) -> None:
    token = mint()
    with await run_projectors(routes, tmp_path, ["notes"]), await serve(routes, tmp_path) as server:
        http = http_for(server, token)
        created = await http.post("/notes", json={"title": "through the topic"})
        note_id = created.json()["note_id"]
        updated = await http.put(f"/notes/{note_id}", json={"title": "and again"})
        fetched = await http.get(f"/notes/{note_id}")

    assert created.status_code == 201, created.text
    assert (updated.status_code, updated.json()["version"]) == (200, 2), updated.text
    assert fetched.json()["title"] == "and again"
    await assert_views_are_folds_of_the_spine(
        kafka_settings, tmp_path, tmp_path / "fold", ["notes"]
    )
