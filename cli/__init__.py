"""The command-line entry points: argument parsing and output, calling db and resolvers."""
