"""``python -m fastworker`` runs the command line."""

import sys

from fastworker.cli import main

sys.exit(main())
