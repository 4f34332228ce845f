"""The ``specc`` command: ``main`` parses the arguments and runs one subcommand (``commands.py``)."""

from compiler.cli.commands import main

__all__ = ["main"]
