"""The argument parser of the commands: a usage error is one line on stderr, exit 2."""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument prints `<prog>: error: <message>` alone: the
    usage is what --help is for."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive(text: str) -> int:
    """A whole number of at least 1 (argparse `type=`)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of at least 1: {text!r}"
        )
    return int(text)
