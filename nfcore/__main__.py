"""`python -m nfcore` runs the command line."""

import sys

from nfcore.cli import main

sys.exit(main())
