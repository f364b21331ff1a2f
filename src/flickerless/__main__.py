"""``python -m flickerless``: the command line, as the ``flickerless`` script."""

import sys

from .cli import main

sys.exit(main())
