"""The `cs-relay` command line: `commands` (the subcommands), `inspect` (`inspect` and `status`)."""

from streams.cli.commands import main

__all__ = ["main"]
