"""``python -m cli`` runs the console script."""

import sys

from cli import main

sys.exit(main())
