"""`python -m nfcore` runs the command line."""

import sys

from nfcore.cli.main import main

sys.exit(main())
