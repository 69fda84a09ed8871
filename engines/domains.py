"""The domain registry: one entry per domain. Adding a domain means writing its own
modules (``commands/<d>.py``, ``projections/<d>.py``, ``engines/http/<d>.py``,
``engines/cli/<d>.py``) and adding one entry here."""

from __future__ import annotations

import functools

from fastapi import APIRouter

from commands import notes as notes_commands
from commands.entities import EntityDecider
from engines.cli import notes as notes_cli
from engines.cli.entities import entity_group
from engines.domain import Domain
from engines.http import notes as notes_http
from engines.http import seo_config as seo_config_http
from engines.http import strategy_locks as strategy_locks_http
from engines.http import tabular as tabular_http
from engines.http.entities import EntityApi
from projections import notes as notes_projections
from projections import seo_config as seo_config_views
from projections import strategy_locks as strategy_locks_views
from projections import tabular as tabular_views
from projections.entities import EntityProjector


def _entities(
    api: EntityApi, projector: EntityProjector, router: APIRouter, *, command: str
) -> Domain:
    """A domain of versioned entities (:mod:`commands.entities`)."""
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
    ),
    _entities(
        tabular_http.FLOWS_API, tabular_views.FLOWS_VIEW, tabular_http.flows_router, command="flows"
    ),
    _entities(
        tabular_http.GRAPHS_API,
        tabular_views.GRAPHS_VIEW,
        tabular_http.graphs_router,
        command="graphs",
    ),
    _entities(
        tabular_http.OVERLAYS_API,
        tabular_views.OVERLAYS_VIEW,
        tabular_http.overlays_router,
        command="overlays",
    ),
    _entities(
        strategy_locks_http.STRATEGY_LOCKS_API,
        strategy_locks_views.STRATEGY_LOCKS_VIEW,
        strategy_locks_http.router,
        command="strategy-locks",
    ),
    _entities(
        seo_config_http.SEO_CONFIG_API,
        seo_config_views.SEO_CONFIG_VIEW,
        seo_config_http.router,
        command="seo-config",
    ),
)
