"""End-to-end fixtures: the real composition root and the real HTTP app, in process.

Each test gets its own data directory (``tmp_path``), so its own SQLite spine, views and
lab signing secret. ``mint`` makes tokens signed with that same secret.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from engines.auth import mint_lab_token
from engines.runtime import Runtime, bootstrap
from engines.settings import Settings, load_settings
from tests.e2e.support import PROJECT, SURFACE, TENANT, USER, AppClient, Mint, client_for


@pytest.fixture
def settings() -> Settings:
    """The packaged lab configuration."""
    return load_settings(None)[0]


@pytest.fixture
async def runtime(settings: Settings, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with bootstrap(settings, tmp_path) as rt:
        yield rt


@pytest.fixture
def mint(tmp_path: Path) -> Mint:
    def make(
        *,
        tenant_id: str = TENANT,
        user_id: str = USER,
        surfaces: list[str] | None = None,
        projects: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        kind: str = "user",
        roles: Sequence[str] = (),
        ttl_seconds: int = 600,
    ) -> str:
        return mint_lab_token(
            tmp_path,
            tenant_id=tenant_id,
            user_id=user_id,
            surfaces=[SURFACE] if surfaces is None else surfaces,
            projects=[PROJECT] if projects is None else projects,
            kind=kind,
            roles=roles,
            ttl_seconds=ttl_seconds,
        )

    return make


@pytest.fixture
def token(mint: Mint) -> str:
    """The default caller: tenant t1, user u1 (kind user), surface s1, project p1."""
    return mint()


@pytest.fixture
async def client(runtime: Runtime, token: str) -> AsyncIterator[AppClient]:
    """An HTTP client for the default caller."""
    async with client_for(runtime, token) as c:
        yield c


@pytest.fixture
async def anonymous(runtime: Runtime) -> AsyncIterator[AppClient]:
    """An HTTP client that sends no token."""
    async with client_for(runtime) as c:
        yield c
