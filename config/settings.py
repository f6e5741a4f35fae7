"""Settings: read once from the environment (and `.env`), validated, frozen."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

T = TypeVar("T")
_NO_VALUES: tuple[str, ...] = ()

PAYPAL_LIVE_VERIFY_URL = "https://ipnpb.paypal.com/cgi-bin/webscr"
PAYPAL_SANDBOX_VERIFY_URL = "https://ipnpb.sandbox.paypal.com/cgi-bin/webscr"
PAYPAL_LIVE_HOSTS = frozenset({"ipnpb.paypal.com", "www.paypal.com", "ipn.paypal.com"})
PAYPAL_LIVE_API_URL = "https://api-m.paypal.com"
STRIPE_API_URL = "https://api.stripe.com"
# REDIS_URL when REDIS_SENTINELS is set without it: no password, database 0, no TLS.
SENTINEL_DEFAULT_URL = "redis://localhost:6379/0"
# A webhook waits this long at most for its replicas (the web's request deadline is 10 s).
MAX_WAIT_TIMEOUT = 5.0


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


# ASCII digits with an optional decimal fraction: float() would also take "²", "١٢", "1_0",
# "1e3", "inf" and "nan", none of which an operator means as a number of seconds.
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_WHOLE_SECONDS = re.compile(r"[0-9]{1,9}")
# Sockets wait with poll(), whose timeout must fit in a C int of milliseconds (~24 days).
MAX_DELIVERY_TIMEOUT = 600.0


def _positive_number(variable: str, raw: str) -> float:
    text = raw.strip(" \t\r\n")
    if not _SECONDS.fullmatch(text):
        raise ConfigError(
            variable, f"expected a number of seconds (ASCII digits, e.g. 10 or 2.5), got {raw!r}"
        )
    value = float(text)
    if value <= 0:
        raise ConfigError(variable, f"must be a positive number of seconds, got {raw!r}")
    return value


def _timeout(variable: str, raw: str) -> float:
    value = _positive_number(variable, raw)
    if value > MAX_DELIVERY_TIMEOUT:
        raise ConfigError(
            variable, f"must be at most {MAX_DELIVERY_TIMEOUT:g} seconds, got {raw!r}"
        )
    return value


def _whole_seconds(variable: str, raw: str) -> int:
    text = raw.strip(" \t\r\n")
    # 0 would switch the signature's age check off (the SDK skips it): never allow that.
    if not _WHOLE_SECONDS.fullmatch(text) or int(text) < 1:
        raise ConfigError(variable, f"expected a whole number of seconds >= 1, got {raw!r}")
    return int(text)


def _interval(variable: str, raw: str) -> int:
    """Whole seconds, 0 meaning off."""
    text = raw.strip(" \t\r\n")
    if not _WHOLE_SECONDS.fullmatch(text):
        raise ConfigError(variable, f"expected a whole number of seconds (0 = off), got {raw!r}")
    return int(text)


# A day number is kept in two bytes beside each remembered entry (bridge/delivery/memory.py):
# far more than anyone keeps an affiliate's customer.
MAX_MEMORY_DAYS = 10000


def _days(variable: str, raw: str) -> int:
    """Whole days, at least 1."""
    text = raw.strip(" \t\r\n")
    if not _WHOLE_SECONDS.fullmatch(text) or not 1 <= int(text) <= MAX_MEMORY_DAYS:
        raise ConfigError(
            variable, f"expected a whole number of days from 1 to {MAX_MEMORY_DAYS}, got {raw!r}"
        )
    return int(text)


def _boolean(variable: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(variable, f"expected true or false, got {raw!r}")


def _http_url(variable: str, raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(variable, "expected an http(s) URL")
    return raw.strip().rstrip("/")


def _https_unless_loopback(variable: str, raw: str) -> str:
    """An http(s) URL that is https:// unless its host is this machine: what it carries (a
    Bearer key, or PayPal's VERIFIED) must not travel in clear or be answerable by the path."""
    url = _http_url(variable, raw)
    parts = urlsplit(url)
    if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        raise ConfigError(
            variable, "must be an https:// URL (http:// only for localhost, 127.0.0.0/8 or ::1)"
        )
    return url


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(variable: str, raw: str) -> str:
    return raw.strip()


def _redis_url(variable: str, raw: str) -> str:
    if urlsplit(raw.strip()).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(variable, "expected a redis://, rediss:// or unix:// URL")
    return raw.strip()


def _sentinels(variable: str, raw: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port`: where Redis Sentinels answer (an IPv6 host in brackets)."""
    found = []
    for item in _csv(variable, raw):
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
            raise ConfigError(variable, f"expected host:port, comma-separated; got {item!r}")
        found.append((host, int(port)))
    return tuple(found)


def _wait_timeout(variable: str, raw: str) -> float:
    value = _positive_number(variable, raw)
    if value > MAX_WAIT_TIMEOUT:
        raise ConfigError(variable, f"must be at most {MAX_WAIT_TIMEOUT:g} seconds, got {raw!r}")
    return value


def _replicas(variable: str, raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,3}", raw.strip()):  # ASCII digits: isdigit() takes "²"
        raise ConfigError(variable, "expected a whole number of replicas (0 or more)")
    return int(raw.strip())


def _csv(variable: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _stripe_secrets(variable: str, raw: str) -> tuple[str, ...]:
    secrets = _csv(variable, raw)
    for secret in secrets:
        if not secret.startswith("whsec_"):
            # The message never repeats the value: it is a secret.
            raise ConfigError(variable, "each secret must start with whsec_")
    return secrets


@dataclass(frozen=True)
class Settings:
    """Every variable of the README's configuration table, typed."""

    refcampaign_api_key: str | None = field(default=None, repr=False)
    refcampaign_api_url: str = "https://app.refcampaign.com"
    stripe_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    stripe_signature_tolerance: int = 300
    paypal_ipn_verify_url: str = PAYPAL_LIVE_VERIFY_URL
    paypal_receiver_emails: tuple[str, ...] = field(default=(), repr=False)
    redis_url: str | None = field(default=None, repr=False)
    delivery_backoff_base: float = 10.0
    delivery_backoff_max: float = 3600.0
    delivery_max_age: float = 259200.0
    delivery_timeout: float = 10.0
    recurring_conversions: bool = True
    metrics_bearer_token: str | None = field(default=None, repr=False)
    paypal_webhook_id: str | None = None
    paypal_client_id: str | None = field(default=None, repr=False)
    paypal_client_secret: str | None = field(default=None, repr=False)
    paypal_api_url: str = PAYPAL_LIVE_API_URL
    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_api_url: str = STRIPE_API_URL
    catchup_interval: int = 0
    catchup_window: int = 259200
    attribution_memory_days: int = 400
    refund_clawbacks: bool = True
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_min_replicas: int = 0
    redis_wait_timeout: float = 1.0

    @property
    def postback_url(self) -> str:
        """Where postbacks go."""
        return f"{self.refcampaign_api_url}/api/v1/conversions/postback"

    @property
    def refund_url(self) -> str:
        """Where refunds and lost chargebacks go."""
        return f"{self.refcampaign_api_url}/api/v1/conversions/refund"

    @property
    def paypal_verifies_live(self) -> bool:
        """True when IPNs are verified against PayPal's live (not sandbox) service."""
        return (urlsplit(self.paypal_ipn_verify_url).hostname or "") in PAYPAL_LIVE_HOSTS

    def require(self, *variables: str) -> Settings:
        """Raise ConfigError for the first of `variables` that is unset; return self."""
        for variable in variables:
            if getattr(self, variable.lower()) in (None, "", ()):
                raise ConfigError(variable, "is not set")
        return self

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = None
    ) -> Settings:
        """Build settings from `environ` (default os.environ) over the values of `.env`."""
        if environ is None:
            env_file = dotenv or Path.cwd() / ".env"
            file_values = dotenv_values(env_file) if env_file.is_file() else {}
            merged = {k: v for k, v in file_values.items() if v is not None}
            merged.update(os.environ)
            environ = merged
        env = environ

        def read(variable: str, coerce: Callable[[str, str], T], default: T) -> T:
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                return default
            return coerce(variable, raw)

        settings = cls(
            refcampaign_api_key=read("REFCAMPAIGN_API_KEY", lambda _, v: v.strip(), None),
            refcampaign_api_url=read(
                "REFCAMPAIGN_API_URL", _https_unless_loopback, cls.refcampaign_api_url
            ),
            stripe_webhook_secrets=read("STRIPE_WEBHOOK_SECRET", _stripe_secrets, _NO_VALUES),
            stripe_signature_tolerance=read("STRIPE_SIGNATURE_TOLERANCE", _whole_seconds, 300),
            paypal_ipn_verify_url=read(
                "PAYPAL_IPN_VERIFY_URL", _https_unless_loopback, PAYPAL_LIVE_VERIFY_URL
            ),
            paypal_receiver_emails=tuple(
                e.lower() for e in read("PAYPAL_RECEIVER_EMAILS", _csv, _NO_VALUES)
            ),
            redis_url=read("REDIS_URL", _redis_url, None),
            delivery_backoff_base=read("DELIVERY_BACKOFF_BASE", _positive_number, 10.0),
            delivery_backoff_max=read("DELIVERY_BACKOFF_MAX", _positive_number, 3600.0),
            delivery_max_age=read("DELIVERY_MAX_AGE", _positive_number, 259200.0),
            delivery_timeout=read("DELIVERY_TIMEOUT", _timeout, 10.0),
            recurring_conversions=read("RECURRING_CONVERSIONS", _boolean, True),
            metrics_bearer_token=read("METRICS_BEARER_TOKEN", _token, None),
            paypal_webhook_id=read("PAYPAL_WEBHOOK_ID", _token, None),
            paypal_client_id=read("PAYPAL_CLIENT_ID", _token, None),
            paypal_client_secret=read("PAYPAL_CLIENT_SECRET", _token, None),
            # The client secret and the OAuth token travel to it: https unless loopback.
            paypal_api_url=read("PAYPAL_API_URL", _https_unless_loopback, PAYPAL_LIVE_API_URL),
            stripe_api_key=read("STRIPE_API_KEY", _token, None),
            stripe_api_url=read("STRIPE_API_URL", _https_unless_loopback, STRIPE_API_URL),
            catchup_interval=read("CATCHUP_INTERVAL", _interval, 0),
            catchup_window=read("CATCHUP_WINDOW", _whole_seconds, 259200),
            attribution_memory_days=read("ATTRIBUTION_MEMORY_DAYS", _days, 400),
            refund_clawbacks=read("REFUND_CLAWBACKS", _boolean, True),
            redis_sentinels=read("REDIS_SENTINELS", _sentinels, ()),
            redis_sentinel_master=read("REDIS_SENTINEL_MASTER", _token, "mymaster"),
            redis_sentinel_password=read("REDIS_SENTINEL_PASSWORD", _token, None),
            redis_min_replicas=read("REDIS_MIN_REPLICAS", _replicas, 0),
            redis_wait_timeout=read("REDIS_WAIT_TIMEOUT", _wait_timeout, 1.0),
        )
        if settings.redis_sentinels and settings.redis_url is None:
            # The Sentinels name the primary; REDIS_URL would only add a password, a database
            # number or TLS: none of them.
            settings = replace(settings, redis_url=SENTINEL_DEFAULT_URL)
        if settings.delivery_backoff_max < settings.delivery_backoff_base:
            raise ConfigError("DELIVERY_BACKOFF_MAX", "must not be below DELIVERY_BACKOFF_BASE")
        return settings
