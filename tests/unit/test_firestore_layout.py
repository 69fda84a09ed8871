"""The Firestore backend without a server: its names, its size arithmetic and its error
table."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions

from routing.backends.firestore import open_backend
from routing.backends.firestore.client import DRIVER_ERRORS, connect, translated, unavailable
from routing.backends.firestore.layout import (
    EMULATOR_LIMITS,
    OUTBOX_SHARDS,
    FieldValue,
    Limits,
    command_doc_id,
    document_size,
    outbox_collection,
    outbox_doc_id,
    outbox_shard,
    seq_doc_id,
    stream_doc_id,
    stream_of,
)
from routing.config import Connections, FirestoreConnection
from spine.appending import MAX_SEQ
from spine.errors import BackendUnavailable, RoutingError

#: What Firestore accepts as a document id: not "." or "..", not __.*__, no "/", 1500 bytes.
VALID_ID = re.compile(r"^(?!\.\.?$)(?!__.*__$)[^/]{1,1500}$", re.DOTALL)


def test_a_stream_document_id_keeps_the_stream_id_and_its_prefixes() -> None:
    sid = "notes/t1/lab/n-1:a@b+c.d_e"
    assert stream_doc_id(sid) == "notes~t1~lab~n-1:a@b+c.d_e"
    assert stream_of(stream_doc_id(sid)) == sid
    assert stream_doc_id(sid).startswith(stream_doc_id("notes/t1/"))
    assert VALID_ID.fullmatch(stream_doc_id(sid))


@pytest.mark.parametrize(
    "command_id", ["c1", "a/b", ".", "..", "__x__", "é ü\n\t", "~" * 128, "x" * 128, "=="]
)
def test_any_command_id_makes_a_valid_distinct_document_id(command_id: str) -> None:
    doc_id = command_doc_id(command_id)
    assert VALID_ID.fullmatch(doc_id)
    assert doc_id != command_doc_id(command_id + "x")


def test_seq_keys_sort_as_seqs_up_to_the_last_seq() -> None:
    seqs = [1, 2, 9, 10, 99, 100, 12345, MAX_SEQ - 1, MAX_SEQ]
    assert sorted(seqs, key=seq_doc_id) == seqs
    assert len({len(seq_doc_id(s)) for s in seqs}) == 1


def test_outbox_names_cannot_be_another_routes_and_spread_over_the_shards() -> None:
    assert "~" in outbox_collection("spine")  # no route name holds "~"
    assert outbox_doc_id("notes/t1/lab/a", 7).startswith("notes~t1~lab~a~")
    shards = {outbox_shard("notes/t1/lab/a", seq) for seq in range(1, 100)}
    assert shards == set(range(OUTBOX_SHARDS))  # one busy stream uses every shard


def test_document_size_is_firestores_own_arithmetic() -> None:
    # The example of Firestore's "Storage size calculations" page: 147 bytes.
    fields: dict[str, FieldValue] = {
        "type": "Personal",
        "done": False,
        "priority": 1,
        "description": "Learn Cloud Firestore",
    }
    assert document_size(["users", "jeff", "tasks", "my_task_id"], fields) == 147


def test_the_limits_leave_room_for_the_markers() -> None:
    assert Limits().max_events == 497  # 500 writes: the two markers and a new stream's doc
    assert Limits().max_request_bytes == 10 * 2**20
    assert EMULATOR_LIMITS.max_request_bytes == 4 * 2**20


def _every_driver_error() -> list[type[Exception]]:
    api_errors = [
        kind
        for _, kind in inspect.getmembers(gexc, inspect.isclass)
        if issubclass(kind, gexc.GoogleAPIError)
    ]
    auth_errors = [
        kind
        for _, kind in inspect.getmembers(auth_exceptions, inspect.isclass)
        if issubclass(kind, auth_exceptions.GoogleAuthError)
    ]
    return [*api_errors, *auth_errors, TimeoutError]


def _instance(kind: type[Exception]) -> Exception:
    if issubclass(kind, gexc.RetryError):
        return kind("Timeout of 1.0s exceeded", gexc.ServiceUnavailable("refused"))
    if issubclass(kind, gexc.GoogleAPICallError):
        return kind("what the server said")
    return kind("what the driver said")


@pytest.mark.parametrize("kind", _every_driver_error(), ids=lambda k: k.__name__)
def test_every_driver_error_is_unavailable_naming_route_and_backend(
    kind: type[Exception],
) -> None:
    with pytest.raises(BackendUnavailable) as info, translated("spine_x"):
        raise _instance(kind)
    assert (info.value.route, info.value.backend) == ("spine_x", "firestore")
    assert isinstance(info.value.__cause__, kind)
    assert issubclass(kind, DRIVER_ERRORS)


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (gexc.Unauthenticated("bad token"), "credentials refused: 401 bad token"),
        (gexc.PermissionDenied("no"), "credentials refused (permission denied)"),
        (auth_exceptions.RefreshError("expired"), "credentials unusable: expired"),
        (gexc.ServiceUnavailable("down"), "server unavailable: 503 down"),
        (
            gexc.RetryError("Timeout of 1.0s exceeded", gexc.ServiceUnavailable("down")),
            "server unavailable, retried until the request's time ran out: 503 down",
        ),
        (gexc.FailedPrecondition("needs an index"), "a missing index?"),
        (gexc.NotFound("no database"), "does the database exist?"),
    ],
)
def test_driver_errors_say_what_went_wrong(error: Exception, says: str) -> None:
    assert says in str(unavailable("spine_x", error))


async def test_a_route_to_firestore_without_its_connection_says_what_to_add() -> None:
    with pytest.raises(RoutingError, match=r"connections\.firestore.*project.*emulator_host"):
        await open_backend(Connections(), Path("."))


async def test_without_usable_google_credentials_firestore_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(BackendUnavailable, match="no usable Google credentials") as info:
        await connect(FirestoreConnection(project="engines-test"))
    assert info.value.backend == "firestore"
    assert info.value.route == "projects/engines-test/databases/(default)"
