"""One Firestore database: how its client is opened (the emulator without touching the
process environment), how long a request may take, and the one table that turns the
driver's errors into ours.

Every read goes with a retry on transient errors bounded by ``timeout_seconds`` in all,
never the SDK's defaults (60 to 300 s of retries on a server that is down). A commit is
never retried here: whether it was applied is unknown after a transient error, and only
the caller can find out (:meth:`FirestoreDatabase.commit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Final, TypeAlias

import google.auth
from google.api_core import exceptions as gexc
from google.api_core.retry import AsyncRetry, if_exception_type
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.firestore import AsyncClient, AsyncQuery, AsyncWriteBatch
from google.cloud.firestore_v1.async_document import AsyncDocumentReference
from google.cloud.firestore_v1.base_document import DocumentSnapshot

from routing.backends.firestore.layout import EMULATOR_LIMITS, Limits
from routing.config import FirestoreConnection
from spine.errors import BackendUnavailable, InvalidAppend

BACKEND: Final = "firestore"

Snapshot: TypeAlias = "DocumentSnapshot[AsyncDocumentReference]"

#: Errors after which a read is tried again, within the request's time.
TRANSIENT: Final = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.Unknown,
)

#: The driver's errors, as :class:`~spine.errors.BackendUnavailable` says them: the first
#: row whose type matches. Conflicts never come here: a commit's own outcomes are told
#: apart by :meth:`FirestoreDatabase.commit`.
ERRORS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (gexc.Unauthenticated, "credentials refused"),
    (gexc.PermissionDenied, "credentials refused (permission denied)"),
    (auth_exceptions.GoogleAuthError, "credentials unusable"),
    (gexc.RetryError, "no answer in time"),
    (gexc.ServiceUnavailable, "server unavailable"),
    (gexc.DeadlineExceeded, "no answer in time"),
    (gexc.NotFound, "not found (does the database exist?)"),
    (gexc.FailedPrecondition, "request refused (a missing index? provisioning creates them)"),
    (gexc.ResourceExhausted, "quota or request size exceeded"),
    (gexc.GoogleAPIError, "request failed"),
    (TimeoutError, "no answer in time"),
)
DRIVER_ERRORS: Final = tuple(kind for kind, _ in ERRORS)


def unavailable(route: str, exc: Exception) -> BackendUnavailable:
    """The driver error ``exc`` as :class:`~spine.errors.BackendUnavailable` for ``route``
    (retries that ran out are told by their last error)."""
    retried = ""
    if isinstance(exc, gexc.RetryError) and isinstance(exc.cause, DRIVER_ERRORS):
        retried = ", retried until the request's time ran out"
        exc = exc.cause
    what = next(text for kind, text in ERRORS if isinstance(exc, kind))
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    return BackendUnavailable(route, BACKEND, f"{what}{retried}: {detail}")


@contextlib.contextmanager
def translated(route: str) -> Iterator[None]:
    """Raise every driver error inside the block as :class:`BackendUnavailable`."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise unavailable(route, exc) from exc


class LostRace(Exception):
    """A document the commit creates exists already (or the commit met contention):
    nothing was written."""


class Uncertain(Exception):
    """The commit failed in a way that does not say whether it was applied."""


class FirestoreDatabase:
    """The client of one database, with the time budget every request gets."""

    def __init__(self, client: AsyncClient, settings: FirestoreConnection, limits: Limits) -> None:
        self.client = client
        self.settings = settings
        self.limits = limits
        self.timeout = settings.timeout_seconds
        self.retry = AsyncRetry(
            predicate=if_exception_type(*TRANSIENT),
            initial=0.05,
            maximum=1.0,
            multiplier=2.0,
            timeout=self.timeout,
        )
        self.name = database_name(settings)
        self.documents = f"{self.name}/documents"
        """The prefix of every document's full name."""

    async def get_all(
        self, refs: Sequence[AsyncDocumentReference], *, fields: Sequence[str] | None = None
    ) -> dict[str, Snapshot]:
        """The documents at ``refs`` (missing ones too), by path; only ``fields`` if given."""
        found = self.client.get_all(
            list(refs), field_paths=fields, retry=self.retry, timeout=self.timeout
        )
        return {snapshot.reference.path: snapshot async for snapshot in found}

    async def query(self, query: AsyncQuery) -> list[Snapshot]:
        return [snapshot async for snapshot in query.stream(retry=self.retry, timeout=self.timeout)]

    async def commit(self, batch: AsyncWriteBatch) -> None:
        """Commit ``batch`` atomically, once. Raises :class:`LostRace` if a create found its
        document (or contention aborted it): nothing was written; :class:`Uncertain` if
        it may or may not have been applied; :class:`~spine.errors.InvalidAppend` if the
        server refused its content."""
        try:
            await batch.commit(retry=None, timeout=self.timeout)
        except (gexc.AlreadyExists, gexc.Aborted) as exc:
            raise LostRace(str(exc)) from exc
        except gexc.InvalidArgument as exc:
            raise InvalidAppend(f"firestore refused the append: {exc.message}") from exc
        except (*TRANSIENT, gexc.Cancelled) as exc:
            raise Uncertain(str(exc)) from exc

    async def ping(self, route: str | None = None) -> None:
        """Read one (missing) document: :class:`BackendUnavailable` naming ``route`` (or
        the database) unless it answers."""
        with translated(route or self.name):
            await self.get_all([self.client.collection("engines~ping").document("ping")])

    async def aclose(self) -> None:
        """Close the gRPC channel (``AsyncClient.close`` leaves it open)."""
        closing = self.client._firestore_api.transport.close()
        if inspect.isawaitable(closing):
            await closing


def database_name(settings: FirestoreConnection) -> str:
    return f"projects/{settings.project}/databases/{settings.database}"


async def connect(settings: FirestoreConnection) -> FirestoreDatabase:
    """Open a client for ``settings``: the emulator at ``emulator_host`` if set, else
    Firestore with the usual Google credentials. ``FIRESTORE_EMULATOR_HOST`` in the
    environment is ignored either way: the routes file alone decides."""
    database = database_name(settings)
    if settings.emulator_host:
        client = AsyncClient(
            project=settings.project,
            database=settings.database,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
        # The SDK's own emulator path (a plaintext channel, the emulator's owner token),
        # which it takes from FIRESTORE_EMULATOR_HOST when a client is built: set on this
        # client alone, so no other client and no environment variable is touched.
        client._emulator_host = settings.emulator_host
        return FirestoreDatabase(client, settings, EMULATOR_LIMITS)
    try:  # the credential chain may ask a metadata server: not on the event loop
        credentials, _ = await asyncio.to_thread(google.auth.default, scopes=AsyncClient.SCOPE)
    except auth_exceptions.GoogleAuthError as exc:
        raise BackendUnavailable(database, BACKEND, f"no usable Google credentials: {exc}") from exc
    client = AsyncClient(
        project=settings.project, database=settings.database, credentials=credentials
    )
    client._emulator_host = None
    return FirestoreDatabase(client, settings, Limits())
