"""Refusals recorded on the spine as ``audit`` events, aggregated so that a flood of
them costs no durable write each (DESIGN §7).

The first refusal of a (tenant, caller, status, reason) in an interval is appended at
once as ``audit.access_denied``, seq 1 of a stream of its own. Later ones in that
interval are only counted; when the interval ends (or the service shuts down) one
``audit.access_denied_summary`` event, seq 2 of the same stream, records how many there
were, when the last came, and a few of those that differed from the first (who, why,
where; beyond ``MAX_SAMPLES`` they are counted). At most ``refusal_max_keys`` callers
with verified tokens, and as many unknown callers, are tracked at once; refusals of
further callers are counted together under their tenant's overflow key (whose summary
samples them too; unknown callers' under the unauthenticated tenant's), so memory and
spine growth stay bounded whatever the callers do, and a flood of bad tokens never
moves a tenant's refusals out of its own audit trail. A refusal's first event says when
it came (``refused_at``), even when it is recorded later.

A refusal the spine cannot take at once (the store is down or locked) is not lost: its
interval stays open, and closing it appends the first refusal, then the summary, each
under a command id of its own that a retry repeats (so a write that did land is not
written twice). What cannot be appended when an interval closes waits, at most
``refusal_max_keys`` intervals of it, for the next close; a close stops at the first
failure, and a request never waits behind another close, so a store that is down
costs a refused request at most its own append's wait. What is still not on the spine
at shutdown is logged as an error, with how many refusals it held; the counts of open
intervals are in memory until they close, so a killed process loses those (never the
first refusal of an interval that was appended).

What a refusal records of the request is capped (:func:`request_summary`): a client
controls every header, and an audit event is no place to store them whole. A refusal
whose caller is unknown is recorded under :data:`UNAUTHENTICATED_TENANT`, which no token
can carry (:data:`engines.auth.RESERVED_TENANT_PREFIX`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from engines.auth import RESERVED_TENANT_PREFIX
from engines.settings import AuditSettings
from spine.errors import EnginesError
from spine.events import NO_STREAM, ExpectedVersion, Mode, NewEvent, Source, new_id
from spine.store import EventStore
from spine.streams import stream_id

log = logging.getLogger(__name__)

#: The tenant of refusals whose token did not verify (no tenant is known).
UNAUTHENTICATED_TENANT: Final = RESERVED_TENANT_PREFIX + "unauthenticated"

MAX_PATH_CHARS: Final = 256
MAX_REASON_CHARS: Final = 300
MAX_VALUE_CHARS: Final = 64
MAX_VALUES: Final = 4
#: How many distinct later refusals an interval's summary describes (beyond, counted).
MAX_SAMPLES: Final = 8


def capped(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} chars)"


def request_summary(
    *, method: str, path: str, client: str | None, claimed: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """What a refusal records of its request, every client-controlled part capped: the
    path, and at most a few short values of each tenant/mode/user claim."""
    summary: dict[str, Any] = {
        "method": capped(method, 16),
        "path": capped(path, MAX_PATH_CHARS),
        "client": capped(client, 64) if client else None,
    }
    shown: dict[str, list[str]] = {}
    dropped = 0
    for name, values in claimed.items():
        if values:
            shown[name] = [capped(v, MAX_VALUE_CHARS) for v in values[:MAX_VALUES]]
            dropped += max(0, len(values) - MAX_VALUES)
    summary["claimed"] = shown
    if dropped:
        summary["claimed_values_left_out"] = dropped
    return summary


@dataclass(frozen=True)
class Refusal:
    """One refused request. ``caller`` is the user id when the token verified, else the
    client address; ``reason_code`` is a stable name for the reason (the error class),
    ``reason`` the message."""

    status: int
    reason_code: str
    reason: str
    request: dict[str, Any]
    tenant_id: str | None = None
    user_id: str | None = None
    caller: str | None = None
    source: Source = "ui"

    @property
    def tenant(self) -> str:
        return self.tenant_id or UNAUTHENTICATED_TENANT

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.tenant, self.user_id or self.caller or "-", self.status, self.reason_code)


def overflow_key(tenant: str) -> tuple[str, str, int, str]:
    """Where a tenant's refusals are counted once its callers fill their share."""
    return (tenant, "*", 0, "overflow")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _sample(refusal: Refusal) -> dict[str, Any]:
    """A later refusal as a summary describes it: who, why and where, each short."""
    return {
        "caller": capped(refusal.caller or "-", MAX_VALUE_CHARS),
        "tenant_id": refusal.tenant_id,
        "user_id": refusal.user_id,
        "reason": capped(refusal.reason, 120),
        "path": capped(str(refusal.request.get("path", "")), 128),
        "client": refusal.request.get("client"),
    }


@dataclass
class _Window:
    tenant: str
    stream_id: str
    refusal: Refusal
    started: float
    first_at: str = field(default_factory=_now)
    last_at: str = ""
    count: int = 1
    samples: list[dict[str, Any]] = field(default_factory=list)
    """Distinct later refusals (at most ``MAX_SAMPLES``)."""
    unsampled: int = 0
    """Later refusals not like the first and not sampled."""
    overflow: bool = False
    """Counts many callers' refusals (so it names none as its user)."""
    first_payload: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False
    """The first refusal is on the spine."""
    command_ids: tuple[str, str] = field(default_factory=lambda: (new_id(), new_id()))
    """The first event's and the summary's, the same on every try."""

    def count_in(self, refusal: Refusal) -> None:
        self.count += 1
        self.last_at = _now()
        if refusal == self.refusal:
            return
        sample = _sample(refusal)
        if sample in self.samples:
            return
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(sample)
        else:
            self.unsampled += 1


class RefusalAudit:
    """Aggregates refusals per (tenant, caller, status, reason) and interval onto the
    spine (see the module's docstring). :meth:`start` runs a task that closes intervals
    as they end; :meth:`aclose` stops it and closes every open interval."""

    def __init__(
        self,
        spine: EventStore,
        mode: Mode,
        settings: AuditSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spine = spine
        self.mode = mode
        self.interval = settings.refusal_interval_seconds
        self.max_keys = settings.refusal_max_keys
        self._clock = clock
        self._windows: OrderedDict[tuple[str, str, int, str], _Window] = OrderedDict()
        self._held = {True: 0, False: 0}
        """Open intervals of single callers, by whether the caller was unknown: each side
        has ``max_keys`` of its own, so a flood of bad tokens cannot push a tenant's
        refusals into an overflow, out of its auditors' view."""
        self._unwritten: deque[_Window] = deque()
        """Closed intervals whose events the spine did not take yet (oldest first)."""
        self._closing = asyncio.Lock()
        """One close at a time appends what closed intervals left."""
        self._ticker: asyncio.Task[None] | None = None

    @property
    def open_intervals(self) -> int:
        return len(self._windows)

    async def refused(self, refusal: Refusal) -> None:
        """Count ``refusal``; append it at once if it opens an interval."""
        now = self._clock()
        await self.flush(now=now, wait=False)
        key = refusal.key
        unknown = refusal.tenant_id is None
        if key not in self._windows and self._held[unknown] >= self.max_keys:
            key = overflow_key(refusal.tenant)
        window = self._windows.get(key)
        if window is not None:
            window.count_in(refusal)
            return
        overflow = key == overflow_key(refusal.tenant)
        sid = stream_id("audit", refusal.tenant, self.mode, new_id())
        window = _Window(refusal.tenant, sid, refusal, now, overflow=overflow)
        self._windows[key] = window  # before the await: concurrent refusals count here
        if not overflow:
            self._held[unknown] += 1
        window.first_payload = payload = {
            "status": refusal.status,
            "reason_code": refusal.reason_code,
            "reason": capped(refusal.reason, MAX_REASON_CHARS),
            "refused_at": window.first_at,
            "caller": refusal.caller,
            "request": refusal.request,
            "interval_seconds": self.interval,
        }
        if overflow:
            payload["overflow"] = f"more than {self.max_keys} callers refused in one interval"
        await self._record_first(window)

    async def _record_first(self, window: _Window) -> bool:
        """Append the interval's first refusal unless it is on the spine; False if the
        spine did not take it (it is tried again when the interval closes)."""
        if window.recorded:
            return True
        try:
            await self._append(window, "audit.access_denied", window.first_payload, NO_STREAM, 0)
        except EnginesError as exc:
            log.warning("a refusal is not on the spine yet (%s); it is retried", exc)
            return False
        window.recorded = True
        return True

    async def flush(
        self, *, now: float | None = None, everything: bool = False, wait: bool = True
    ) -> int:
        """Close the intervals that have ended (all of them with ``everything``),
        appending a summary for each that counted more than its first refusal. Returns
        how many summaries were appended."""
        now = self._clock() if now is None else now
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if not everything and window.started + self.interval > now:
                break
            del self._windows[key]
            if not window.overflow:
                self._held[window.refusal.tenant_id is None] -= 1
            self._unwritten.append(window)
        while len(self._unwritten) > self.max_keys:
            lost = self._unwritten.popleft()
            log.error(
                "%d refusals of %s were never recorded: the spine did not take them",
                lost.count,
                lost.tenant,
            )
        appended = 0
        if not wait and self._closing.locked():
            return 0  # another close is appending (perhaps waiting out a locked store)
        async with self._closing:
            while self._unwritten:
                window = self._unwritten[0]
                if not await self._record_first(window):
                    break  # the spine takes no writes: the rest wait for the next close
                if window.count > 1:
                    if not await self._record_summary(window):
                        break
                    appended += 1
                self._unwritten.popleft()
        return appended

    async def _record_summary(self, window: _Window) -> bool:
        payload = {
            "status": window.refusal.status,
            "reason_code": window.refusal.reason_code,
            "caller": window.refusal.caller,
            "count": window.count,
            "first_at": window.first_at,
            "last_at": window.last_at,
            "interval_seconds": self.interval,
            "others": window.samples,
            "others_left_out": window.unsampled,
        }
        try:
            await self._append(window, "audit.access_denied_summary", payload, 1, 1)
        except EnginesError as exc:
            log.warning("a refusal summary is not on the spine yet (%s); it is retried", exc)
            return False
        return True

    async def _append(
        self,
        window: _Window,
        event_type: str,
        payload: dict[str, Any],
        expected: ExpectedVersion,
        which: int,
    ) -> None:
        refusal = window.refusal
        event = NewEvent(
            event_type=event_type,
            family="audit",
            tenant_id=window.tenant,
            mode=self.mode,
            user_id=None if window.overflow else refusal.user_id,
            source=refusal.source,
            command_id=window.command_ids[which],
            payload=payload,
        )
        await self.spine.append(window.stream_id, [event], expected)

    def start(self) -> None:
        """Close intervals as they end, in a task of the running loop."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(min(self.interval, 1.0))
            try:
                await self.flush()
            except Exception:  # keep ticking: the next flush retries what is left
                log.exception("closing refusal intervals failed")

    async def aclose(self) -> None:
        """Stop the task and close every open interval (on shutdown)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.flush(everything=True)
        if self._unwritten:
            log.error(
                "%d refusals (%d intervals) are not on the spine: it did not take them "
                "before shutdown",
                sum(w.count for w in self._unwritten),
                len(self._unwritten),
            )
