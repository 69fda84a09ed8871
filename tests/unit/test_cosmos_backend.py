"""The Cosmos DB backend's pieces that need no server: its error table, its item ids and
its connection settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.cosmos.exceptions import CosmosHttpResponseError

from routing.backends.cosmos import account_key, open_backend
from routing.backends.cosmos.errors import STATUS_MEANINGS, translate, translated
from routing.backends.cosmos.spine import command_marker_id, event_item_id, outbox_marker_id
from routing.config import Connections, CosmosConnection
from spine.errors import BackendUnavailable, InvalidAppend, RoutingError
from tests.servers.fixtures import COSMOS_EMULATOR_KEY


@pytest.mark.parametrize(
    ("status", "kind", "says"),
    [
        (401, BackendUnavailable, "account key was refused"),
        (403, BackendUnavailable, "access was refused"),
        (404, BackendUnavailable, "does not exist"),
        (408, BackendUnavailable, "timed out"),
        (413, InvalidAppend, "request size limit"),
        (429, BackendUnavailable, "throttled"),
        (500, BackendUnavailable, "failed"),
        (503, BackendUnavailable, "unavailable (503)"),
        (599, BackendUnavailable, "HTTP 599"),
    ],
)
def test_each_status_translates_to_one_engines_error(
    status: int, kind: type[Exception], says: str
) -> None:
    error = translate(CosmosHttpResponseError(status_code=status, message="boom"), "events")
    assert type(error) is kind
    assert says in str(error)
    if isinstance(error, BackendUnavailable):
        assert (error.route, error.backend) == ("events", "cosmos")


def test_every_status_in_the_table_names_itself() -> None:
    for status, meaning in STATUS_MEANINGS.items():
        assert f"({status})" in meaning


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (ServiceRequestError("Cannot connect to host"), "cannot reach the service"),
        (ServiceResponseError("reset"), "did not answer"),
        (AzureError("anything else"), "AzureError"),
    ],
)
def test_no_sdk_error_escapes_untranslated(error: AzureError, says: str) -> None:
    with pytest.raises(BackendUnavailable, match=says) as info, translated("events"):
        raise error
    assert info.value.__cause__ is error
    assert "events" in str(info.value)


@pytest.mark.parametrize(
    "command_id",
    ["c1", "a/b", "a\\b", "what?", "#1", "ünï/cødé", "🙂" * 128, "x" * 128, " ", "c1="],
)
def test_any_command_id_makes_a_valid_cosmos_id(command_id: str) -> None:
    item_id = command_marker_id(command_id)
    assert not set(item_id) & set("/\\?#")
    assert item_id.isascii()
    assert len(item_id.encode()) <= 1023


def test_command_marker_ids_never_collide_nor_look_like_other_items() -> None:
    ids = ["c1", "c1=", "C1", "c", "cc", "a/b", "a_b", "a-b", "", "x" * 128]
    markers = [command_marker_id(c) for c in ids]
    assert len(set(markers)) == len(ids)
    assert all(m.startswith("c") for m in markers)
    assert event_item_id(12) == "e00000000000000000012"
    assert outbox_marker_id(12) == "o00000000000000000012"
    assert event_item_id(9) < event_item_id(10)


def settings(**fields: object) -> CosmosConnection:
    return CosmosConnection.model_validate({"endpoint": "https://localhost:8081", **fields})


def test_the_key_comes_from_key_or_from_a_file_beside_the_data(tmp_path: Path) -> None:
    (tmp_path / "cosmos.key").write_text(COSMOS_EMULATOR_KEY + "\n")
    assert account_key(settings(key=COSMOS_EMULATOR_KEY), tmp_path) == COSMOS_EMULATOR_KEY
    assert account_key(settings(key_file="cosmos.key"), tmp_path) == COSMOS_EMULATOR_KEY


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({}, "exactly one of `key` and `key_file`"),
        ({"key": COSMOS_EMULATOR_KEY, "key_file": "k"}, "exactly one"),
        ({"key_file": "missing.key"}, "cannot read"),
        ({"key": "not base64!"}, "not base64"),
    ],
)
def test_a_missing_or_malformed_key_is_a_routing_error(
    tmp_path: Path, fields: dict[str, str], says: str
) -> None:
    with pytest.raises(RoutingError, match=says):
        account_key(settings(**fields), tmp_path)


async def test_opening_without_a_cosmos_connection_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match=r"connections\.cosmos"):
        await open_backend(Connections(), tmp_path, create=True)
    with pytest.raises(RoutingError, match="https:// URL"):
        await open_backend(
            Connections(cosmos=settings(endpoint="localhost:8081", key=COSMOS_EMULATOR_KEY)),
            tmp_path,
            create=True,
        )
