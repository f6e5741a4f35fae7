"""Import shim for `celery -A celery_app worker`: the app built from the environment."""

import sys

from config import ConfigError, Settings
from tasks.app import make_celery

try:
    app = make_celery(Settings.from_env())
except ConfigError as exc:
    print(f"refbridge: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
