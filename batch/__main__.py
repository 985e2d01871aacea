"""`python -m batch` is `clfbatch`."""

from batch.cli import main

main()
