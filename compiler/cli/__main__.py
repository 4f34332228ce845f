"""``python -m compiler.cli``: the same as the ``specc`` command."""

import sys

from compiler.cli.commands import main

sys.exit(main())
