"""The domain registry: one entry per domain. Adding a domain means writing its own
modules (``commands/<d>.py``, ``projections/<d>.py``, ``engines/http/<d>.py``,
``engines/cli/<d>.py``) and adding one entry here."""

from __future__ import annotations

from commands import memory as memory_commands
from commands import notes as notes_commands
from engines.cli import memory as memory_cli
from engines.cli import notes as notes_cli
from engines.domain import Domain
from engines.http import memory as memory_http
from engines.http import notes as notes_http
from projections import memory as memory_projections
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
        name=memory_commands.DOMAIN,
        decider=memory_commands.MemoryDecider(),
        commands=(memory_commands.SetMemory, memory_commands.DeleteMemory),
        projectors=(memory_projections.MemoryProjector(),),
        reads="memory",
        router=memory_http.router,
        cli=memory_cli.register,
    ),
)
