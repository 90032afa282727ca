"""`python -m genre ...`: the `genre` command, for environments whose scripts are not on PATH."""

import sys

from genre.cli import main

sys.exit(main())
