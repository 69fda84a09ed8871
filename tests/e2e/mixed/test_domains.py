# ruff: noqa: F401 - each import is a test, collected here
"""Every domain's scenarios through the HTTP API, over mixed routing (see conftest).

Each name below is a test of the lab's end-to-end suite, imported as it is: collected
here, it runs with this package's ``settings`` (DynamoDB, Cosmos DB and Firestore at
once). Left out are the cases about the lab store itself (a locked SQLite file, a
missing lab route, the CLI's lab data directory)."""

from __future__ import annotations

from tests.e2e.test_blackboard_api import (
    test_20_concurrent_creates_of_distinct_keys_all_succeed,
    test_a_deleted_key_is_created_again_and_its_versions_keep_counting,
    test_of_20_concurrent_creates_of_one_key_exactly_one_wins,
    test_the_history_keeps_every_version_and_a_past_version_reads_as_it_was,
    test_the_list_pages_through_every_key_once,
    test_two_users_granted_the_project_see_and_edit_each_others_keys,
)
from tests.e2e.test_budget_api import (
    test_a_debit_over_the_limit_answers_402_and_is_recorded_as_a_budget_event,
    test_a_retried_debit_with_the_same_key_answers_the_same_and_appends_nothing,
    test_an_admin_sets_a_limit_and_the_budget_reads_limit_spent_remaining_and_version,
    test_another_tenant_sees_nothing_of_a_budget_and_keeps_its_own,
    test_fifty_concurrent_debits_never_overspend,
)
from tests.e2e.test_delivery import (
    test_readyz_answers_200_when_every_backend_answers,
)
from tests.e2e.test_documents_api import (
    test_a_document_is_absent_to_another_user_and_another_tenant,
    test_a_document_outside_the_callers_grants_is_absent,
    test_concurrent_updates_with_one_if_match_let_exactly_one_win,
    test_create_answers_201_with_the_record_its_etag_and_location,
    test_delete_drops_it_from_reads_and_lists_and_keeps_its_history,
    test_overlays_are_filtered_by_app_and_their_app_is_fixed,
    test_the_list_pages_newest_first_and_filters_by_project_and_surface,
    test_update_moves_the_version_and_every_version_stays_readable,
)
from tests.e2e.test_grants import (
    test_the_list_shows_exactly_the_notes_within_the_grants,
)
from tests.e2e.test_memory_api import (
    test_a_ttl_sets_expires_at_from_the_recorded_time,
    test_an_expired_key_is_absent_at_once_and_a_rebuild_never_revives_it,
    test_another_callers_keys_are_absent_to_them_and_untouched_by_them,
    test_list_pages_through_the_sessions_live_keys_in_key_order,
    test_put_answers_the_key_with_its_version_as_etag_and_get_reads_it_back,
    test_ten_concurrent_puts_with_the_same_if_match_let_exactly_one_win,
)
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
from tests.e2e.test_seo_config_api import (
    test_a_put_replaces_the_whole_config_and_every_version_stays_readable,
    test_another_tenant_never_sees_a_config,
    test_concurrent_puts_on_the_same_version_let_exactly_one_win,
)
from tests.e2e.test_strategy_locks_api import (
    test_a_given_version_is_read_as_it_was_taken,
    test_another_tenant_never_sees_a_lock,
    test_the_history_lists_every_snapshot_oldest_first_page_by_page,
    test_two_snapshots_on_top_of_the_same_version_let_exactly_one_win,
)
from tests.e2e.test_telemetry_api import (
    test_a_batch_is_one_append_per_run_and_family_answered_in_the_order_given,
    test_a_batch_with_one_invalid_event_writes_nothing,
    test_a_denied_decision_is_recorded_and_queryable_right_after_the_201,
    test_an_auditor_sees_the_tenant_and_no_other,
    test_analytics_counts_per_day_for_the_caller_and_the_tenant,
    test_analytics_counts_stay_within_the_callers_grants,
    test_events_are_paged_in_time_order_and_filtered_by_time,
    test_the_audit_view_holds_refusals_budget_and_strategy_lock_events,
)

__all__ = [name for name in dir() if name.startswith("test_")]
