# ruff: noqa: F401 - each import is a test or fixture, collected here
"""Budgets over mixed routing (see conftest): the lab suite's cases, unchanged."""

from __future__ import annotations

from tests.e2e.test_budget_api import (
    admin,
    served,
    test_a_debit_over_the_limit_answers_402_and_is_recorded_as_a_budget_event,
    test_a_retried_debit_with_the_same_key_answers_the_same_and_appends_nothing,
    test_an_admin_sets_a_limit_and_the_budget_reads_limit_spent_remaining_and_version,
    test_another_tenant_sees_nothing_of_a_budget_and_keeps_its_own,
    test_fifty_concurrent_debits_never_overspend,
)
