"""`python -m mixer`: the `mixer` command."""

import sys

from mixer.cli import main

sys.exit(main())
