"""The domain registry: one entry per domain. Adding a domain means writing its own
modules (``commands/<d>.py``, ``projections/<d>.py``, ``engines/http/<d>.py``,
``engines/cli/<d>.py``) and adding one entry here. A domain of versioned entities
(:mod:`commands.entities`) needs only ``commands/<d>.py`` and ``engines/http/<d>.py``:
its entry, ``_entities(...)``, builds its projector and CLI group."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from fastapi import APIRouter
from pydantic import BaseModel

from commands import budget as budget_commands
from commands import memory as memory_commands
from commands import notes as notes_commands
from commands import telemetry as telemetry_commands
from commands.entities import EntityDecider
from engines.cli import budget as budget_cli
from engines.cli import memory as memory_cli
from engines.cli import notes as notes_cli
from engines.cli import telemetry as telemetry_cli
from engines.cli.entities import entity_group
from engines.domain import Domain, OnBus
from engines.http import blackboard as blackboard_http
from engines.http import budget as budget_http
from engines.http import memory as memory_http
from engines.http import notes as notes_http
from engines.http import seo_config as seo_config_http
from engines.http import strategy_locks as strategy_locks_http
from engines.http import tabular as tabular_http
from engines.http import telemetry as telemetry_http
from engines.http.entities import EntityApi
from projections import budget as budget_projections
from projections import memory as memory_projections
from projections import notes as notes_projections
from projections import telemetry as telemetry_projections
from projections.entities import EntityProjector


def _entities(
    api: EntityApi,
    router: APIRouter,
    *,
    store: str,
    command: str,
    bus: Mapping[type[BaseModel], OnBus],
    history: bool = True,
) -> Domain:
    """A domain of versioned entities (:mod:`commands.entities`): its view in ``store``
    (with the version history unless ``history`` is false), its CLI group ``command``,
    the commands the bus takes (``bus``)."""
    projector = EntityProjector(api.kind, name=api.view, resource_kind=store, history=history)
    cli = functools.partial(
        entity_group,
        command=command,
        kind=api.kind,
        view=api.view,
        body_fields=tuple(api.body.model_fields),
    )
    return Domain(
        name=api.kind.domain,
        decider=EntityDecider(api.kind),
        commands=(api.put_type,) + ((api.delete_type,) if api.delete_type else ()),
        projectors=(projector,),
        reads=api.view,
        router=router,
        cli=cli,
        bus=bus,
    )


DOMAINS: tuple[Domain, ...] = (
    Domain(
        name=notes_commands.DOMAIN,
        decider=notes_commands.NotesDecider(),
        commands=(notes_commands.CreateNote, notes_commands.UpdateNote, notes_commands.DeleteNote),
        projectors=(notes_projections.NotesProjector(),),
        reads="notes",
        router=notes_http.router,
        cli=notes_cli.register,
        bus={
            notes_commands.CreateNote: OnBus(
                require_surface=True, same_request=notes_commands.same_request_or_refuse
            ),
            notes_commands.UpdateNote: OnBus(),
            notes_commands.DeleteNote: OnBus(),
        },
    ),
    _entities(
        tabular_http.FLOWS_API,
        tabular_http.flows_router,
        store="flow_store",
        command="flows",
        bus=tabular_http.FLOWS_ON_BUS,
    ),
    _entities(
        tabular_http.GRAPHS_API,
        tabular_http.graphs_router,
        store="graph_store",
        command="graphs",
        bus=tabular_http.GRAPHS_ON_BUS,
    ),
    _entities(
        tabular_http.OVERLAYS_API,
        tabular_http.overlays_router,
        store="overlay_store",
        command="overlays",
        bus=tabular_http.OVERLAYS_ON_BUS,
    ),
    Domain(
        name=memory_commands.DOMAIN,
        decider=memory_commands.MemoryDecider(),
        commands=(memory_commands.SetMemory, memory_commands.DeleteMemory),
        projectors=(memory_projections.MemoryProjector(),),
        reads="memory",
        router=memory_http.router,
        cli=memory_cli.register,
        bus=memory_http.ON_BUS,
    ),
    _entities(
        blackboard_http.API,
        blackboard_http.router,
        store="blackboard_store",
        command="blackboard",
        bus=blackboard_http.ON_BUS,
    ),
    Domain(
        name=budget_commands.DOMAIN,
        decider=budget_commands.BudgetDecider(),
        commands=(
            budget_commands.SetLimit,
            budget_commands.DebitBudget,
            budget_commands.CreditBudget,
        ),
        projectors=(budget_projections.BudgetProjector(),),
        reads="budgets",
        router=budget_http.router,
        cli=budget_cli.register,
        bus=budget_http.ON_BUS,
    ),
    _entities(
        strategy_locks_http.STRATEGY_LOCKS_API,
        strategy_locks_http.router,
        store="strategy_lock_store",
        command="strategy-locks",
        bus=strategy_locks_http.ON_BUS,
    ),
    _entities(
        seo_config_http.SEO_CONFIG_API,
        seo_config_http.router,
        store="seo_config_store",
        command="seo-config",
        bus=seo_config_http.ON_BUS,
    ),
    Domain(
        name=telemetry_commands.DOMAIN,
        decider=telemetry_commands.TelemetryRecorder(),
        commands=(telemetry_commands.EmitEvents,),
        projectors=(
            telemetry_projections.events_index(),
            telemetry_projections.audit_index(),
            telemetry_projections.AnalyticsProjector(),
        ),
        reads=telemetry_http.EVENTS_VIEW,
        router=telemetry_http.router,
        cli=telemetry_cli.register,
    ),
)
