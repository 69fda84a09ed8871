# ruff: noqa: F401 - each import is a test or fixture, collected here
"""Telemetry, audit and analytics over mixed routing (see conftest): the lab's cases."""

from __future__ import annotations

from tests.e2e.test_telemetry_api import (
    agent,
    auditor,
    served,
    test_a_batch_is_one_append_per_run_and_family_answered_in_the_order_given,
    test_a_batch_with_one_invalid_event_writes_nothing,
    test_a_denied_decision_is_recorded_and_queryable_right_after_the_201,
    test_an_auditor_sees_the_tenant_and_no_other,
    test_analytics_counts_per_day_for_the_caller_and_the_tenant,
    test_analytics_counts_stay_within_the_callers_grants,
    test_events_are_paged_in_time_order_and_filtered_by_time,
    test_the_audit_view_holds_refusals_budget_and_strategy_lock_events,
    two_tenants,
)
