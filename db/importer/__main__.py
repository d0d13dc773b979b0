"""`python -m db.importer`: the command line of cli.importer, under its documented name."""

from cli.importer import main

raise SystemExit(main())
