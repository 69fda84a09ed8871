# ruff: noqa: F401 - each import is a test or fixture, collected here
"""SEO config over mixed routing (see conftest): the lab suite's cases, unchanged."""

from __future__ import annotations

from tests.e2e.test_seo_config_api import (
    admin,
    test_a_put_replaces_the_whole_config_and_every_version_stays_readable,
    test_another_tenant_never_sees_a_config,
    test_concurrent_puts_on_the_same_version_let_exactly_one_win,
)
