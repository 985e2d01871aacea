"""`python -m serve` runs clfserve (see serve/app.py)."""

import sys

from serve.app import main

sys.exit(main())
