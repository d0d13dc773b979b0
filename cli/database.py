"""The database URL every command works on: its option, else the settings."""

from __future__ import annotations

import sys


def database_url(option: str | None) -> str | None:
    """`--database-url` when given, else DATABASE_URL from the settings; None (after
    printing the one-line reason) when the settings are invalid."""
    if option is not None:
        return option
    # Imported here: pydantic-settings costs start-up time a given URL can skip.
    from settings import SettingsError, load_settings

    try:
        return load_settings().database_url
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
