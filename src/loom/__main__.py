"""`python -m loom` runs the command-line tool."""

import sys

from loom.cli.main import main

sys.exit(main())
