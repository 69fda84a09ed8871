# ruff: noqa: F401 - each import is a test or fixture, collected here
"""Session memory over mixed routing (see conftest): the lab suite's cases, unchanged."""

from __future__ import annotations

from tests.e2e.test_memory_api import (
    test_a_ttl_sets_expires_at_from_the_recorded_time,
    test_an_expired_key_is_absent_at_once_and_a_rebuild_never_revives_it,
    test_another_callers_keys_are_absent_to_them_and_untouched_by_them,
    test_list_pages_through_the_sessions_live_keys_in_key_order,
    test_put_answers_the_key_with_its_version_as_etag_and_get_reads_it_back,
    test_ten_concurrent_puts_with_the_same_if_match_let_exactly_one_win,
)
