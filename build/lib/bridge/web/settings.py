"""The web process's settings, or one clear line and an exit (gunicorn's master checks them too).

Kept apart from the app so that gunicorn's master can check the configuration without importing
redis-py or requests: the gevent worker patches the standard library after the fork, and modules
that took names from `ssl` before that would keep the unpatched ones.
"""

from __future__ import annotations

import sys

from config import ConfigError, Settings

# gunicorn stops (rather than restarting workers forever) when a worker exits with this.
WORKER_BOOT_ERROR = 3


def web_settings_or_exit() -> Settings:
    """The web process's settings from the environment, or one clear line and an exit."""
    try:
        return Settings.from_env().require("REDIS_URL")
    except ConfigError as exc:
        print(f"refbridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(WORKER_BOOT_ERROR) from None
