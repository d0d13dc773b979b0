"""The one Settings object: profile defaults for ENVIRONMENT, overridden by env vars."""

from settings.config import PROFILES, Settings, SettingsError, load_settings

__all__ = ["PROFILES", "Settings", "SettingsError", "load_settings"]
