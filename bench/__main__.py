"""`python -m bench`: the command line (bench/cli.py)."""

from bench.cli import main

raise SystemExit(main())
