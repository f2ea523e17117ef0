"""`python -m sentinel_sidecar` is the `sentinel-sidecar` command."""

import sys

from sentinel_sidecar.cli import main

sys.exit(main())
