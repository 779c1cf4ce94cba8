"""``python -m softmaxkit`` runs the command-line interface."""

import sys

from .cli.core import main

sys.exit(main())
