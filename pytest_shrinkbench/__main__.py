"""``python -m pytest_shrinkbench report RESULTS...`` (see :mod:`pytest_shrinkbench.cli`)."""

import sys

from .cli import main

sys.exit(main())
