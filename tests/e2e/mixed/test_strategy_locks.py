# ruff: noqa: F401 - each import is a test or fixture, collected here
"""Strategy locks over mixed routing (see conftest): the lab suite's cases, unchanged."""

from __future__ import annotations

from tests.e2e.test_strategy_locks_api import (
    admin,
    test_a_given_version_is_read_as_it_was_taken,
    test_another_tenant_never_sees_a_lock,
    test_the_history_lists_every_snapshot_oldest_first_page_by_page,
    test_two_snapshots_on_top_of_the_same_version_let_exactly_one_win,
)
