# ruff: noqa: F401 - each import is a test or fixture, collected here
"""Grants over mixed routing (see conftest): the lab suite's cases, unchanged."""

from __future__ import annotations

from tests.e2e.test_grants import (
    canvas_p2_note,
    test_the_list_shows_exactly_the_notes_within_the_grants,
)
