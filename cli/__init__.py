"""The command-line entry points: argument parsing and output over db and resolvers."""
