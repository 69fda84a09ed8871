"""Budgets over HTTP: ``/budgets/{budget_id}``. Thin: parse, resolve identity, dispatch a
command or query the budget view, answer.

Access: a budget is tenant-wide. Any authenticated principal of the tenant may read it,
debit it and credit it; ``PUT .../limit`` needs the ``admin`` role (403, audited).
Another tenant's budget does not exist (404), and neither does a budget whose limit was
never set.

Every event records its writer: tenant, mode, user, and the surface (and project) the
request names (``X-Surface-Id`` / ``X-Project-Id``) or the token's only surface; a
token granting several surfaces and naming none writes with no surface, as a budget
belongs to no surface. Provenance comes from headers and the body's ``provenance``.

Debits and credits take ``Idempotency-Key``: a retry answers as the first request did
(201, or 402 for a refused debit) and appends nothing; the key reused for another
request is refused (409). A debit over the limit answers 402 and is recorded, as a
``budget.debit_refused`` event and a ``debit_refused`` ledger line. Reads come from the
view in ``budget_store``; a store that cannot answer is 503, never a default.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from commands.budget import (
    DEBIT_REFUSED,
    CreditBudget,
    DebitBudget,
    LimitBody,
    MovementBody,
    SetLimit,
    budget_command,
    budget_stream,
    format_minor,
    same_request_or_refuse,
)
from commands.envelope import Command, CommandResult
from engines.auth import Principal
from engines.domain import OnBus
from engines.http.access import require_role
from engines.http.errors import (
    AUTHENTICATED,
    Problem,
    problem,
    problem_responses,
    status_for,
)
from engines.http.identity import Auth, runtime_of, scope_for
from engines.http.jsonbody import StrictJsonRoute
from engines.http.responses import OrjsonResponse, etag, expected_version
from engines.http.writes import IdempotencyKey, IfMatch, IfNoneMatch, envelope, written
from projections.budget import KIND_OF
from projections.views import Filter, ViewQuery, ViewRecord
from spine.codec import timestamp_text
from spine.errors import LimitExceeded, NotFound
from spine.events import EventEnvelope, Identifier, Mode, Provenance

#: The projector whose view (``budget_store``) answers every read here.
VIEW = "budgets"


class LimitIn(LimitBody):
    """``PUT /budgets/{id}/limit``: the limit as ``amount`` (decimal string) or
    ``amount_minor`` (integer), and, on the first limit only, ``currency`` and ``scale``
    (default 2); optionally a reason and provenance."""

    provenance: Provenance | None = None


class MovementIn(MovementBody):
    """A debit or credit: ``amount`` (decimal string of major units, at most the budget's
    ``scale`` decimals) or ``amount_minor`` (integer minor units), more than zero, never a
    float; a reason; optionally provenance."""

    provenance: Provenance | None = None


class BudgetOut(BaseModel):
    budget_id: str
    tenant_id: str
    mode: Mode
    limit: str = Field(description="major units, as a decimal string")
    spent: str = Field(description="debits less credits")
    remaining: str = Field(description="limit less spent; below zero if the limit was lowered")
    limit_minor: int
    spent_minor: int
    remaining_minor: int
    scale: int
    currency: str | None
    version: int
    updated_at: str


class Entry(BaseModel):
    seq: int
    kind: str = Field(description="limit, debit, credit or debit_refused")
    amount: str = Field(description="for limit: the new limit")
    amount_minor: int
    reason: str | None
    event_id: str
    recorded_at: str


class LedgerLine(Entry):
    limit_minor: int
    spent_minor: int = Field(description="after this line")
    user_id: str | None
    surface_id: str | None
    project_id: str | None
    source: str
    agent_id: str | None
    run_id: str | None
    step_id: str | None
    trace_id: str | None


class MovementOut(BudgetOut):
    entry: Entry = Field(description="what this request recorded (the totals are the view's)")


class LimitExceededProblem(Problem):
    """A debit refused as over the limit (it is recorded: ``seq``)."""

    budget_id: str
    limit: str
    spent: str
    requested: str
    limit_minor: int
    spent_minor: int
    requested_minor: int
    seq: int = Field(description="the refusal's event on the budget's stream")


class LedgerPage(BaseModel):
    items: list[LedgerLine]
    next_cursor: str | None


class BudgetAccepted(BaseModel):
    budget_id: str
    version: int
    status: str = Field(default="accepted", description="the view does not reflect it yet")


def budget_out(record: ViewRecord) -> dict[str, Any]:
    d = record.data
    scale, remaining = d["scale"], d["limit_minor"] - d["spent_minor"]
    return BudgetOut(
        budget_id=d["budget_id"],
        tenant_id=record.scope.tenant_id,
        mode=record.scope.mode,
        limit=format_minor(d["limit_minor"], scale),
        spent=format_minor(d["spent_minor"], scale),
        remaining=format_minor(remaining, scale),
        limit_minor=d["limit_minor"],
        spent_minor=d["spent_minor"],
        remaining_minor=remaining,
        scale=scale,
        currency=d["currency"],
        version=record.version,
        updated_at=d["updated_at"],
    ).model_dump()


def line_out(data: dict[str, Any]) -> dict[str, Any]:
    return LedgerLine.model_validate(
        {**data, "amount": format_minor(data["amount_minor"], data["scale"])}
    ).model_dump()


def entry_of(event: EventEnvelope) -> dict[str, Any]:
    """What ``event`` (a debit or credit) recorded."""
    p = event.payload
    return Entry(
        seq=event.seq,
        kind=KIND_OF[event.event_type],
        amount=format_minor(p["amount_minor"], p["scale"]),
        amount_minor=p["amount_minor"],
        reason=p["reason"],
        event_id=event.event_id,
        recorded_at=timestamp_text(event.recorded_at),
    ).model_dump()


router = APIRouter(tags=["budgets"], route_class=StrictJsonRoute)


async def _totals(request: Request, principal: Principal, budget_id: str) -> ViewRecord:
    scope = await scope_for(request, principal, None, None)
    record = await runtime_of(request).view_of(VIEW).get(budget_stream(scope, budget_id))
    if record is None:
        raise NotFound(f"budget {budget_id!r} not found")
    return record


async def _written(
    request: Request,
    result: CommandResult,
    budget_id: str,
    status: int,
    *,
    entry: EventEnvelope | None = None,
) -> Response:
    def render(record: ViewRecord) -> dict[str, Any]:
        out = budget_out(record)
        if entry is None:
            return out
        return {**out, "entry": entry_of(entry)}

    return await written(
        runtime_of(request),
        result,
        projector=VIEW,
        key=result.stream_id,
        ident={"budget_id": budget_id},
        render=render,
        status=status,
        location=f"/budgets/{budget_id}" if status == 201 else None,
    )


@router.put(
    "/budgets/{budget_id:path}/limit",
    response_model=BudgetOut,
    responses={202: {"model": BudgetAccepted}, **problem_responses(*AUTHENTICATED, 409, 412, 415)},
)
async def set_limit(
    request: Request,
    budget_id: Identifier,
    body: LimitIn,
    principal: Auth,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Set the budget's limit (``admin`` role); the first limit creates the budget and
    fixes its ``currency`` and ``scale`` (a later change: 409). ``If-Match`` pins the
    version replaced, ``If-None-Match: *`` only creates (412 otherwise). The same limit
    again records nothing."""
    await require_role(request, principal, "admin")
    expected = expected_version(if_match, if_none_match)
    scope = await scope_for(request, principal, None, None)
    payload = SetLimit(
        budget_id=budget_id,
        existing=if_match is not None,
        **body.model_dump(exclude={"provenance"}),
    )
    command = budget_command(
        scope,
        payload,
        idempotency_key,
        expected_version=expected,
        **envelope(request, principal, body.provenance),
    )
    result = await runtime_of(request).dispatch(command)
    same_request_or_refuse(command, result)
    return await _written(request, result, budget_id, 200)


async def _move(
    request: Request,
    principal: Principal,
    payload: DebitBudget | CreditBudget,
    idempotency_key: str | None,
    provenance: Provenance | None,
    if_match: str | None,
    if_none_match: str | None,
) -> Response:
    rt = runtime_of(request)
    expected = expected_version(if_match, if_none_match)
    scope = await scope_for(request, principal, None, None)
    command = budget_command(
        scope,
        payload,
        idempotency_key,
        expected_version=expected,
        **envelope(request, principal, provenance),
    )
    result = await rt.dispatch(command)
    same_request_or_refuse(command, result)
    refusal = over_limit(command, result)
    (event,) = result.events
    if refusal is None:
        return await _written(request, result, payload.budget_id, 201, entry=event)
    # Recorded: let the view show the refusal too (bounded), then refuse.
    await rt.wait_for(VIEW, result.stream_id, result.version, rt.settings.write_wait_seconds)
    return problem(
        status_for(refusal),
        str(refusal),
        kind="limit-exceeded",
        extensions={"budget_id": payload.budget_id, **refused_amounts(event)},
    )


def refused_amounts(event: EventEnvelope) -> dict[str, Any]:
    """What a refused debit's event records: the limit, spent and requested, as decimal
    strings and in minor units, and its ``seq``."""
    p = event.payload
    minor = {"limit": p["limit_minor"], "spent": p["spent_minor"], "requested": p["amount_minor"]}
    shown = {name: format_minor(value, p["scale"]) for name, value in minor.items()}
    return {**shown, **{f"{name}_minor": value for name, value in minor.items()}, "seq": event.seq}


def over_limit(command: Command[Any], result: CommandResult) -> LimitExceeded | None:
    """The refusal (402) a debit's result answers, however the debit came (a request, a
    command on the bus), if it was refused as over the limit (and recorded)."""
    event = result.events[0] if len(result.events) == 1 else None
    if event is None or event.event_type != DEBIT_REFUSED:
        return None
    a = refused_amounts(event)
    return LimitExceeded(
        f"budget {command.payload.budget_id!r}: a debit of {a['requested']} would take spent "
        f"from {a['spent']} over the limit of {a['limit']}; refused and recorded "
        f"(seq {event.seq})"
    )


@router.post(
    "/budgets/{budget_id:path}/debits",
    status_code=201,
    response_model=MovementOut,
    responses={
        202: {"model": BudgetAccepted},
        **problem_responses(*AUTHENTICATED, 404, 409, 412, 415),
        402: {"model": LimitExceededProblem, "description": "Payment Required"},
    },
)
async def debit(
    request: Request,
    budget_id: Identifier,
    body: MovementIn,
    principal: Auth,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Spend from the budget. Decided on the budget's stream and appended with its exact
    version, so concurrent debits never overspend: one that would take ``spent`` over the
    limit answers 402 (naming limit, spent and requested) and is recorded. 404: no such
    budget (its limit was never set). 409: the Idempotency-Key was used for another
    request; or the budget is so contended that this debit lost every retry (nothing was
    written: retry it). ``If-Match: "N"``: only if the budget is at version N (412
    otherwise); ``If-None-Match: *`` can never hold (a debit needs a budget): 412."""
    payload = DebitBudget(budget_id=budget_id, **body.model_dump(exclude={"provenance"}))
    return await _move(
        request, principal, payload, idempotency_key, body.provenance, if_match, if_none_match
    )


@router.post(
    "/budgets/{budget_id:path}/credits",
    status_code=201,
    response_model=MovementOut,
    responses={
        202: {"model": BudgetAccepted},
        **problem_responses(*AUTHENTICATED, 404, 409, 412, 415),
    },
)
async def credit(
    request: Request,
    budget_id: Identifier,
    body: MovementIn,
    principal: Auth,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Give back what was spent. A credit of more than is spent is refused (409): spent
    never goes below zero, so only an admin's limit sets the headroom. ``If-Match`` and
    ``If-None-Match`` as for a debit."""
    payload = CreditBudget(budget_id=budget_id, **body.model_dump(exclude={"provenance"}))
    return await _move(
        request, principal, payload, idempotency_key, body.provenance, if_match, if_none_match
    )


#: The command bus takes limits, debits and credits as their endpoints do.
ON_BUS: dict[type[BaseModel], OnBus] = {
    SetLimit: OnBus(role="admin", same_request=same_request_or_refuse),
    DebitBudget: OnBus(same_request=same_request_or_refuse, answer=over_limit),
    CreditBudget: OnBus(same_request=same_request_or_refuse),
}


# Before GET /budgets/{budget_id:path}, which would take ".../ledger" as an id.
@router.get(
    "/budgets/{budget_id:path}/ledger",
    response_model=LedgerPage,
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def ledger(
    request: Request,
    budget_id: Identifier,
    principal: Auth,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> LedgerPage:
    """The budget's ledger, oldest first: one line per recorded event (limits, debits,
    credits and refused debits), with the totals after it. Cursor paged."""
    totals = await _totals(request, principal, budget_id)
    page = (
        await runtime_of(request)
        .view_of(VIEW)
        .query(
            ViewQuery(
                tenant_id=totals.scope.tenant_id,
                mode=totals.scope.mode,
                where=(
                    Filter(field="entry", value="ledger"),
                    Filter(field="budget_id", value=budget_id),
                ),
                order_by="seq",
                descending=False,
                limit=limit,
                cursor=cursor,
            )
        )
    )
    return LedgerPage.model_validate(
        {"items": [line_out(r.data) for r in page.items], "next_cursor": page.next_cursor}
    )


@router.get(
    "/budgets/{budget_id:path}",
    response_model=BudgetOut,
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_budget(request: Request, budget_id: Identifier, principal: Auth) -> Response:
    """The budget's limit, spent and remaining (decimal strings and minor units), and its
    version (also the ETag)."""
    record = await _totals(request, principal, budget_id)
    return OrjsonResponse(budget_out(record), headers={"ETag": etag(record.version)})
