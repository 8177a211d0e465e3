"""`python -m bench`: the side-by-side benchmark of jq and its peers (see bench/README.md)."""

import sys

from bench.compare import main

sys.exit(main())
