"""`python -m db.seed`: the command line of cli.seed, under its documented name."""

from cli.seed import main

raise SystemExit(main())
