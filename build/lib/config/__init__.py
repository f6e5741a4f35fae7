"""Configuration of refbridge: `Settings.from_env()`."""

from config.settings import ConfigError, Settings

__all__ = ["ConfigError", "Settings"]
