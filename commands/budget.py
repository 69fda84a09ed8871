"""Budgets: one stream per budget, ``budget/{tenant}/{mode}/{budget_id}``.

A budget is tenant-wide: any principal of the tenant may read it, debit it and credit
it; setting its limit needs the ``admin`` role (checked where the caller's roles are
known: the HTTP edge). Commands set the limit, debit and credit; their events are of
the ``budget`` family.

Amounts are integers of minor units, never floats. A request gives one either as
``amount_minor`` (an integer) or as ``amount`` (a decimal string of major units, with at
most ``scale`` decimals); ``scale`` (decimal places, 0..6, default 2) and ``currency``
are fixed by the budget's first limit. Each decision is made on the state folded from
the stream and appended with its exact version, so concurrent debits never overspend:

* a debit that would take ``spent`` over the limit is refused, and the refusal is
  recorded (``budget.debit_refused``, naming the limit and what was spent);
* a credit gives back what was spent: ``spent`` is debits less credits, and a credit
  that would take it below zero is refused (409, nothing written), so a credit can
  never raise the headroom above the limit an admin set;
* a limit may be lowered below what is spent (every debit is then refused) and may be
  zero (a frozen budget);
* a debit or credit on a budget whose limit was never set: the budget does not exist
  (404).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from commands.envelope import Command, CommandResult, idempotent_id
from commands.text import VisibleLine
from spine.errors import AlreadyExists, ConcurrencyError, InvalidField, InvalidInput, NotFound
from spine.events import EventEnvelope, Family, Identifier, NewEvent, Scope, new_id
from spine.streams import stream_id

DOMAIN: Final = "budget"
FAMILY: Final[Family] = "budget"

LIMIT_SET: Final = "budget.limit_set"
DEBITED: Final = "budget.debited"
CREDITED: Final = "budget.credited"
DEBIT_REFUSED: Final = "budget.debit_refused"

#: The largest amount, limit or total, in minor units (well inside 64 bits).
MAX_MINOR: Final = 10**18
MAX_SCALE: Final = 6
DEFAULT_SCALE: Final = 2

DecimalAmount = Annotated[
    StrictStr,
    StringConstraints(pattern=r"^(0|[1-9][0-9]{0,18})(\.[0-9]{1,6})?$"),
    Field(description='major units as a decimal string, e.g. "12.50"; at most `scale` decimals'),
]
MinorAmount = Annotated[
    StrictInt, Field(ge=0, le=MAX_MINOR, description="integer minor units, e.g. 1250")
]
Currency = Annotated[
    StrictStr, StringConstraints(pattern=r"^[A-Z]{3}$"), Field(description="e.g. EUR")
]
Scale = Annotated[
    StrictInt, Field(ge=0, le=MAX_SCALE, description="decimal places of a major unit")
]

Reason = Annotated[StrictStr, StringConstraints(min_length=1, max_length=500), VisibleLine]


def to_minor(amount: str, scale: int) -> int:
    """``amount`` (a :data:`DecimalAmount`) in minor units at ``scale``; refused
    (:class:`InvalidField`) with more decimals than ``scale`` or over :data:`MAX_MINOR`."""
    whole, _, fraction = amount.partition(".")
    if len(fraction) > scale:
        raise InvalidField(
            ("body", "amount"),
            f"amount {amount!r} has {len(fraction)} decimals; this budget's scale is {scale}",
        )
    value: int = int(whole) * 10**scale + int(fraction.ljust(scale, "0") or "0")
    if value > MAX_MINOR:
        raise InvalidField(
            ("body", "amount"), f"amount is over the largest, {MAX_MINOR} minor units"
        )
    return value


def format_minor(value: int, scale: int) -> str:
    """Minor units as a decimal string of major units: ``1250, 2`` → ``"12.50"``."""
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**scale)
    return f"{sign}{whole}.{fraction:0{scale}d}" if scale else f"{sign}{whole}"


class AmountBody(BaseModel):
    """An amount, as exactly one of ``amount`` (decimal string) or ``amount_minor``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: DecimalAmount | None = None
    amount_minor: MinorAmount | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.amount is None) == (self.amount_minor is None):
            raise ValueError("give exactly one of amount (a decimal string) or amount_minor")
        return self

    def minor(self, scale: int) -> int:
        """The amount in minor units at ``scale``."""
        if self.amount_minor is not None:
            return self.amount_minor
        assert self.amount is not None  # one of the two, by validation
        return to_minor(self.amount, scale)


class LimitBody(AmountBody):
    """The limit, and (fixed by the first limit) the currency and scale."""

    currency: Currency | None = None
    scale: Scale | None = Field(default=None, description=f"default {DEFAULT_SCALE}")
    reason: Reason | None = None


class MovementBody(AmountBody):
    """A debit or credit: a positive amount, and why."""

    reason: Reason

    @model_validator(mode="after")
    def _positive(self) -> Self:
        zero = self.amount_minor == 0 or (
            self.amount is not None and not any(d in "123456789" for d in self.amount)
        )
        if zero:
            raise ValueError("an amount must be more than zero")
        return self


class SetLimit(LimitBody):
    budget_id: Identifier
    existing: bool = False
    """The caller names a version of the budget (``If-Match``): it must exist already, a
    first limit is refused as a failed precondition."""


class DebitBudget(MovementBody):
    budget_id: Identifier


class CreditBudget(MovementBody):
    budget_id: Identifier


BudgetCommand = SetLimit | DebitBudget | CreditBudget


class BudgetConflict(AlreadyExists):
    """The budget as it stands refuses the request (HTTP 409, by way of
    :class:`AlreadyExists`): a change of its fixed scale or currency, or a credit of more
    than is spent. Nothing was written."""


@dataclass(frozen=True)
class BudgetState:
    version: int = 0
    limit_minor: int | None = None
    """``None``: no limit was ever set, so the budget does not exist."""
    spent_minor: int = 0
    scale: int = DEFAULT_SCALE
    currency: str | None = None

    @property
    def exists(self) -> bool:
        return self.limit_minor is not None


def budget_stream(scope: Scope, budget_id: str) -> str:
    return stream_id(DOMAIN, scope.tenant_id, scope.mode, budget_id)


class BudgetDecider:
    def stream_id(self, command: Command[Any]) -> str:
        return budget_stream(command.scope, command.payload.budget_id)

    def initial(self) -> BudgetState:
        return BudgetState()

    def evolve(self, state: BudgetState, event: EventEnvelope) -> BudgetState:
        p = event.payload
        if event.event_type == LIMIT_SET:
            return replace(
                state,
                version=event.seq,
                limit_minor=p["limit_minor"],
                scale=p["scale"],
                currency=p["currency"],
            )
        if event.event_type == DEBITED:
            return replace(
                state, version=event.seq, spent_minor=state.spent_minor + p["amount_minor"]
            )
        if event.event_type == CREDITED:
            return replace(
                state, version=event.seq, spent_minor=state.spent_minor - p["amount_minor"]
            )
        return replace(state, version=event.seq)  # a refusal changes no total

    def decide(self, state: BudgetState, command: Command[Any]) -> Sequence[NewEvent]:
        payload = command.payload
        if isinstance(payload, SetLimit):
            return self._set_limit(state, command, payload)
        if state.limit_minor is None:
            raise NotFound(f"budget {payload.budget_id!r} not found (no limit has been set)")
        if isinstance(payload, DebitBudget):
            amount = payload.minor(state.scale)
            fields = {"amount_minor": amount, "scale": state.scale, "reason": payload.reason}
            if state.spent_minor + amount > state.limit_minor:
                refused = {
                    **fields,
                    "limit_minor": state.limit_minor,
                    "spent_minor": state.spent_minor,
                }
                return [command.event(DEBIT_REFUSED, refused, family=FAMILY)]
            return [command.event(DEBITED, fields, family=FAMILY)]
        if isinstance(payload, CreditBudget):
            amount = payload.minor(state.scale)
            if amount > state.spent_minor:
                s = state.scale
                raise BudgetConflict(
                    f"budget {payload.budget_id!r}: a credit of {format_minor(amount, s)} is "
                    f"more than is spent ({format_minor(state.spent_minor, s)}); a credit only "
                    "gives back what was spent"
                )
            fields = {"amount_minor": amount, "scale": state.scale, "reason": payload.reason}
            return [command.event(CREDITED, fields, family=FAMILY)]
        raise TypeError(f"budgets cannot handle {type(payload).__name__}")

    def _set_limit(
        self, state: BudgetState, command: Command[Any], payload: SetLimit
    ) -> Sequence[NewEvent]:
        scale = DEFAULT_SCALE if payload.scale is None else payload.scale
        currency = payload.currency
        if payload.existing and not state.exists:
            raise ConcurrencyError(
                self.stream_id(command), f"budget {payload.budget_id!r} to exist (If-Match)", 0
            )
        if state.exists:
            if payload.scale is not None and payload.scale != state.scale:
                raise BudgetConflict(
                    f"budget {payload.budget_id!r} has scale {state.scale}, fixed by its first "
                    f"limit; a limit cannot change it to {payload.scale}"
                )
            if currency is not None and state.currency is not None and currency != state.currency:
                raise BudgetConflict(
                    f"budget {payload.budget_id!r} is in {state.currency}, fixed by its first "
                    f"limit; a limit cannot change it to {currency}"
                )
            scale, currency = state.scale, currency or state.currency
        limit = payload.minor(scale)
        if state.exists and (limit, currency) == (state.limit_minor, state.currency):
            return []  # the budget says this already: nothing to record
        fields = {
            "limit_minor": limit,
            "scale": scale,
            "currency": currency,
            "reason": payload.reason,
        }
        return [command.event(LIMIT_SET, fields, family=FAMILY)]


#: What kind of request made each event type (for a repeated Idempotency-Key).
REQUEST_OF: Final[dict[str, type[BaseModel]]] = {
    LIMIT_SET: SetLimit,
    DEBITED: DebitBudget,
    DEBIT_REFUSED: DebitBudget,
    CREDITED: CreditBudget,
}


def budget_command(
    scope: Scope, payload: BudgetCommand, idempotency_key: str | None = None, **envelope: Any
) -> Command[Any]:
    """The command carrying ``payload``; ``envelope`` holds the other command fields
    (source, provenance, grants, expected version). With an idempotency key, the command
    id derives from it per tenant, mode, budget and user (not per kind: a key reused for
    another kind of request is found, and refused by :func:`same_request_or_refuse`), so
    a retried request is the same command: the spine answers it with the original
    result, and appends nothing."""
    if idempotency_key is None:
        command_id = new_id()
    else:
        command_id = "budget:" + idempotent_id(scope, DOMAIN, idempotency_key, payload.budget_id)
    return Command[Any](command_id=command_id, scope=scope, payload=payload, **envelope)


def _same(payload: BaseModel, original: EventEnvelope) -> bool:
    recorded = original.payload
    if REQUEST_OF.get(original.event_type) is not type(payload):
        return False
    try:
        if isinstance(payload, SetLimit):
            return bool(
                payload.minor(recorded["scale"]) == recorded["limit_minor"]
                and payload.scale in (None, recorded["scale"])
                and payload.currency in (None, recorded["currency"])
                and payload.reason == recorded["reason"]
            )
        assert isinstance(payload, DebitBudget | CreditBudget)
        return bool(
            payload.minor(recorded["scale"]) == recorded["amount_minor"]
            and payload.reason == recorded["reason"]
        )
    except InvalidInput:  # too many decimals for the budget: not what was asked before
        return False


def same_request_or_refuse(command: Command[Any], result: CommandResult) -> None:
    """A repeated request must be the same request: an idempotency key reused for a
    different one (another kind, amount, reason, surface or project) is refused rather
    than answered with another request's result."""
    if not result.deduplicated:
        return
    original = result.events[0]
    scope = command.scope
    if not _same(command.payload, original) or (original.surface_id, original.project_id) != (
        scope.surface_id,
        scope.project_id,
    ):
        raise AlreadyExists("this Idempotency-Key was used for a different request; use a new key")
