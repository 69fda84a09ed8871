# ruff: noqa: F401 - each import is a test or fixture, collected here
"""Flows, graphs and overlays over mixed routing (see conftest): the lab suite's cases."""

from __future__ import annotations

from tests.e2e.test_documents_api import (
    base,
    test_a_document_is_absent_to_another_user_and_another_tenant,
    test_a_document_outside_the_callers_grants_is_absent,
    test_concurrent_updates_with_one_if_match_let_exactly_one_win,
    test_create_answers_201_with_the_record_its_etag_and_location,
    test_delete_drops_it_from_reads_and_lists_and_keeps_its_history,
    test_overlays_are_filtered_by_app_and_their_app_is_fixed,
    test_the_list_pages_newest_first_and_filters_by_project_and_surface,
    test_update_moves_the_version_and_every_version_stays_readable,
)
