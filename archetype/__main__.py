"""``python -m archetype`` runs the CLI."""

import sys

from archetype.cli import main

sys.exit(main())
