"""``python -m engines.cli``: the ``engines`` command."""

from engines.console import entry

entry()
