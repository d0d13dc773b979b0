"""`python -m resolvers.keys`: the command line of cli.keys, under its documented name."""

from cli.keys import main

raise SystemExit(main())
