# ruff: noqa: F401 - each import is a test or fixture, collected here
"""``engines replay`` over mixed routing (see conftest): the spine on DynamoDB, notes on
Cosmos DB, the blackboard on Firestore; the sandbox views made on each live route's
backend. The lab suite's sandbox case, unchanged (the order cases read the same scan; the
hostile one tampers with SQLite: lab only)."""

from __future__ import annotations

from tests.e2e.test_replay import (
    test_replay_into_a_sandbox_builds_views_of_the_run_apart_from_the_live_ones,
)
