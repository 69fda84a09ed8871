"""Cosmos DB's errors, translated into :mod:`spine.errors` in one place.

Conflicts (409 on a create) and absences (404 on a point read) are answers, not
failures: the store handles them where it asks. Everything else the SDK raises goes
through :func:`translate`: a request too large for the service is the caller's
:class:`~spine.errors.InvalidAppend`; anything else means the store cannot serve the
route now, :class:`~spine.errors.BackendUnavailable` naming the route, the backend and
why (the SDK's error kept as ``__cause__``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError

from spine.errors import BackendUnavailable, EnginesError, InvalidAppend

BACKEND: Final = "cosmos"

#: What each HTTP status means for a route, when the store did not expect it.
STATUS_MEANINGS: Final[dict[int, str]] = {
    400: "the service refused a request as malformed (400)",
    401: "the account key was refused (401)",
    403: "access was refused: key, firewall or permissions (403)",
    404: "the database or container does not exist (404)",
    408: "the service timed out (408)",
    409: "an unexpected conflict (409)",
    410: "the partition moved and the SDK gave up (410)",
    412: "an unexpected precondition failure (412)",
    429: "throttled: more request units than provisioned, after the SDK's retries (429)",
    449: "a transient write conflict, after the SDK's retries (449)",
    500: "the service failed (500)",
    502: "bad gateway (502)",
    503: "the service is unavailable (503)",
}
#: The status of a request over the service's size limit.
TOO_LARGE: Final = 413


def translate(exc: AzureError, route: str) -> EnginesError:
    """The :mod:`spine.errors` error an unexpected SDK error means for ``route``."""
    status = getattr(exc, "status_code", None)
    message = (str(getattr(exc, "message", None) or exc) or type(exc).__name__).splitlines()[0]
    if status == TOO_LARGE:
        return InvalidAppend(
            f"the append to route {route!r} is over Cosmos DB's request size limit "
            f"(413: {message[:200]}); it is refused, not split"
        )
    if isinstance(status, int):
        meaning = STATUS_MEANINGS.get(status, f"HTTP {status}")
    elif isinstance(exc, ServiceRequestError):
        meaning = "cannot reach the service"
    elif isinstance(exc, ServiceResponseError):
        meaning = "the service did not answer"
    else:
        meaning = type(exc).__name__
    return BackendUnavailable(route, BACKEND, f"{meaning}: {message[:300]}")


@contextmanager
def translated(route: str) -> Iterator[None]:
    """Raise every SDK error from the block as :func:`translate` says."""
    try:
        yield
    except AzureError as exc:
        raise translate(exc, route) from exc
