"""`python -m pytest_dbguard`: the `dbguard` command without the console script on PATH."""

import sys

from .cli import main

sys.exit(main())
