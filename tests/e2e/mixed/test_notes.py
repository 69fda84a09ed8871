# ruff: noqa: F401 - each import is a test or fixture, collected here
"""Notes over mixed routing (see conftest): the lab suite's cases, unchanged."""

from __future__ import annotations

from tests.e2e.test_notes_api import (
    test_a_deleted_note_leaves_the_list,
    test_a_note_updated_during_a_walk_of_the_pages_is_still_returned,
    test_a_write_is_visible_to_the_very_next_read,
    test_concurrent_puts_with_the_same_if_match_let_exactly_one_win,
    test_create_update_and_delete_are_chained_events_on_the_notes_stream,
    test_list_filters_by_surface_project_and_tag,
    test_list_pages_through_every_note_newest_first_without_duplicates,
    test_the_same_idempotency_key_twice_creates_one_note_and_one_event,
)
