"""The domain registry: one entry per domain. Adding a domain means writing its own
modules (``commands/<d>.py``, ``projections/<d>.py``, ``engines/http/<d>.py``,
``engines/cli/<d>.py``) and adding one entry here."""

from __future__ import annotations

from commands import budget as budget_commands
from commands import notes as notes_commands
from engines.cli import budget as budget_cli
from engines.cli import notes as notes_cli
from engines.domain import Domain
from engines.http import budget as budget_http
from engines.http import notes as notes_http
from projections import budget as budget_projections
from projections import notes as notes_projections

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
    ),
)
