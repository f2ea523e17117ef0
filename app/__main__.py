"""`python -m app` is the `sentinel-sidecar` command."""

import sys

from app.cli import main

sys.exit(main())
