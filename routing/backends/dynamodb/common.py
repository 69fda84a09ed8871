"""What the DynamoDB modules share: attribute values, and the one translation of the
SDK's errors into ours."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from spine.errors import BackendUnavailable, EnginesError, InvalidAppend

BACKEND: Final = "dynamodb"

T = TypeVar("T")

Item = dict[str, Any]
"""An item in the low-level client's attribute-value form."""


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def translate(route: str, exc: Exception) -> EnginesError:
    """The one translation table from the SDK's errors to ours (the original kept as
    ``__cause__`` by the caller's ``raise ... from``)."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code == "ValidationException" and "size" in str(exc).lower():
            return InvalidAppend(f"DynamoDB refused the write as too large: {exc}")
        return BackendUnavailable(route, BACKEND, f"{code}: {exc}")
    return BackendUnavailable(route, BACKEND, f"{type(exc).__name__}: {exc}")


async def call(route: str, what: Callable[..., Awaitable[T]], **request: Any) -> T:
    """``await what(**request)``, its errors translated."""
    try:
        return await what(**request)
    except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
        raise translate(route, exc) from exc
