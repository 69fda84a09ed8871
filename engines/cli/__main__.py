"""``python -m engines.cli``: the ``engines`` command."""

from engines.cli import entry

entry()
