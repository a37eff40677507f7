"""``python -m pipeline.cli`` runs the console script."""

import sys

from pipeline.cli import main

sys.exit(main())
