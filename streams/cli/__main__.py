"""`python -m streams.cli ...` runs the `cs-relay` command (tests and `dev` start workers this way)."""

import sys

from streams.cli.commands import main

sys.exit(main())
