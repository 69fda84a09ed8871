# ruff: noqa: F401 - each import is a test or fixture, collected here
"""The blackboard over mixed routing (see conftest): the lab suite's cases, unchanged."""

from __future__ import annotations

from tests.e2e.test_blackboard_api import (
    served,
    test_20_concurrent_creates_of_distinct_keys_all_succeed,
    test_a_deleted_key_is_created_again_and_its_versions_keep_counting,
    test_of_20_concurrent_creates_of_one_key_exactly_one_wins,
    test_the_history_keeps_every_version_and_a_past_version_reads_as_it_was,
    test_the_list_pages_through_every_key_once,
    test_two_users_granted_the_project_see_and_edit_each_others_keys,
)
