"""The servers' launcher (:mod:`engines.devservers.process`) as tests use it: a server
that fails to start fails the test; one that is not installed skips it (fails on CI).

Every server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NoReturn, Self

import pytest

from engines.devservers import process
from engines.devservers.process import HOST, ServerFailed, free_port

__all__ = ["HOST", "ServerProcess", "free_port", "unavailable"]


def unavailable(reason: str) -> NoReturn:
    """Skip the test that asked for a server, or fail it on CI, where every server must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: every test server must run on CI)", pytrace=False)
    pytest.skip(reason)


class ServerProcess(process.ServerProcess):
    """One server process group; a start that fails fails the test, quoting its output."""

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        ready_url: str,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> Self:
        try:
            return super().start(name, argv, ready_url=ready_url, timeout=timeout, env=env)
        except ServerFailed as exc:
            pytest.fail(str(exc), pytrace=False)
