"""Settings: every variable of the README's configuration table, its default, and its validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, Settings

API_KEY = "rc_live_supersecret_9f3a1c"
STRIPE_SECRET = "whsec_supersecret_b7e2"
PAYPAL_SECRET = "EGnHDxD_qRPdaLdZz8iCr8N7_MzF-YHPTkjs6NKYQvQSBngp4PTTVWkPZRbL"
STRIPE_KEY = "rk_live_51restrictedsecret"
REDIS_WITH_PASSWORD = "redis://:redis-pass-4c1d@cache.internal:6379/0"

TABLE = (
    "REFCAMPAIGN_API_KEY",
    "REFCAMPAIGN_API_URL",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_SIGNATURE_TOLERANCE",
    "PAYPAL_IPN_VERIFY_URL",
    "PAYPAL_RECEIVER_EMAILS",
    "REDIS_URL",
    "DELIVERY_BACKOFF_BASE",
    "DELIVERY_BACKOFF_MAX",
    "DELIVERY_MAX_AGE",
    "DELIVERY_TIMEOUT",
    "RECURRING_CONVERSIONS",
    "METRICS_BEARER_TOKEN",
    "PAYPAL_WEBHOOK_ID",
    "PAYPAL_CLIENT_ID",
    "PAYPAL_CLIENT_SECRET",
    "PAYPAL_API_URL",
    "STRIPE_API_KEY",
    "STRIPE_API_URL",
    "CATCHUP_INTERVAL",
    "CATCHUP_WINDOW",
    "ATTRIBUTION_MEMORY_DAYS",
    "REFUND_CLAWBACKS",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_MIN_REPLICAS",
    "REDIS_WAIT_TIMEOUT",
)

# (variable, attribute, documented default)
DEFAULTS = [
    ("REFCAMPAIGN_API_KEY", "refcampaign_api_key", None),
    ("REFCAMPAIGN_API_URL", "refcampaign_api_url", "https://app.refcampaign.com"),
    ("STRIPE_WEBHOOK_SECRET", "stripe_webhook_secrets", ()),
    ("STRIPE_SIGNATURE_TOLERANCE", "stripe_signature_tolerance", 300),
    (
        "PAYPAL_IPN_VERIFY_URL",
        "paypal_ipn_verify_url",
        "https://ipnpb.paypal.com/cgi-bin/webscr",
    ),
    ("PAYPAL_RECEIVER_EMAILS", "paypal_receiver_emails", ()),
    ("REDIS_URL", "redis_url", None),
    ("DELIVERY_BACKOFF_BASE", "delivery_backoff_base", 10),
    ("DELIVERY_BACKOFF_MAX", "delivery_backoff_max", 3600),
    ("DELIVERY_MAX_AGE", "delivery_max_age", 259200),
    ("DELIVERY_TIMEOUT", "delivery_timeout", 10),
    ("RECURRING_CONVERSIONS", "recurring_conversions", True),
    ("METRICS_BEARER_TOKEN", "metrics_bearer_token", None),
    ("PAYPAL_WEBHOOK_ID", "paypal_webhook_id", None),
    ("PAYPAL_CLIENT_ID", "paypal_client_id", None),
    ("PAYPAL_CLIENT_SECRET", "paypal_client_secret", None),
    ("PAYPAL_API_URL", "paypal_api_url", "https://api-m.paypal.com"),
    ("STRIPE_API_KEY", "stripe_api_key", None),
    ("STRIPE_API_URL", "stripe_api_url", "https://api.stripe.com"),
    ("CATCHUP_INTERVAL", "catchup_interval", 0),
    ("CATCHUP_WINDOW", "catchup_window", 259200),
    ("ATTRIBUTION_MEMORY_DAYS", "attribution_memory_days", 400),
    ("REFUND_CLAWBACKS", "refund_clawbacks", True),
    ("REDIS_SENTINELS", "redis_sentinels", ()),
    ("REDIS_SENTINEL_MASTER", "redis_sentinel_master", "mymaster"),
    ("REDIS_SENTINEL_PASSWORD", "redis_sentinel_password", None),
    ("REDIS_MIN_REPLICAS", "redis_min_replicas", 0),
    ("REDIS_WAIT_TIMEOUT", "redis_wait_timeout", 1),
]

# (variable, raw value, attribute, expected value) — one row per variable of the table.
READS = [
    ("REFCAMPAIGN_API_KEY", f"  {API_KEY} ", "refcampaign_api_key", API_KEY),
    (
        "REFCAMPAIGN_API_URL",
        "http://127.0.0.1:8080/",
        "refcampaign_api_url",
        "http://127.0.0.1:8080",
    ),
    ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET, "stripe_webhook_secrets", (STRIPE_SECRET,)),
    ("STRIPE_SIGNATURE_TOLERANCE", "600", "stripe_signature_tolerance", 600),
    (
        "PAYPAL_IPN_VERIFY_URL",
        "https://ipnpb.sandbox.paypal.com/cgi-bin/webscr",
        "paypal_ipn_verify_url",
        "https://ipnpb.sandbox.paypal.com/cgi-bin/webscr",
    ),
    ("PAYPAL_RECEIVER_EMAILS", "shop@example.com", "paypal_receiver_emails", ("shop@example.com",)),
    ("REDIS_URL", "redis://127.0.0.1:6379/2", "redis_url", "redis://127.0.0.1:6379/2"),
    ("DELIVERY_BACKOFF_BASE", "2.5", "delivery_backoff_base", 2.5),
    ("DELIVERY_BACKOFF_MAX", "120", "delivery_backoff_max", 120),
    ("DELIVERY_MAX_AGE", "3600", "delivery_max_age", 3600),
    ("DELIVERY_TIMEOUT", "0.5", "delivery_timeout", 0.5),
    ("RECURRING_CONVERSIONS", "false", "recurring_conversions", False),
    ("METRICS_BEARER_TOKEN", " prom-token-81c2 ", "metrics_bearer_token", "prom-token-81c2"),
    (
        "PAYPAL_WEBHOOK_ID",
        " WH-2WR32451HC0233532-67976317FL4543714 ",
        "paypal_webhook_id",
        "WH-2WR32451HC0233532-67976317FL4543714",
    ),
    ("PAYPAL_CLIENT_ID", "AYSq3RDGsmBLJE-otTkBtM", "paypal_client_id", "AYSq3RDGsmBLJE-otTkBtM"),
    ("PAYPAL_CLIENT_SECRET", PAYPAL_SECRET, "paypal_client_secret", PAYPAL_SECRET),
    (
        "PAYPAL_API_URL",
        "https://api-m.sandbox.paypal.com/",
        "paypal_api_url",
        "https://api-m.sandbox.paypal.com",
    ),
    ("STRIPE_API_KEY", STRIPE_KEY, "stripe_api_key", STRIPE_KEY),
    ("STRIPE_API_URL", "http://127.0.0.1:12111", "stripe_api_url", "http://127.0.0.1:12111"),
    ("CATCHUP_INTERVAL", "900", "catchup_interval", 900),
    ("CATCHUP_WINDOW", "3600", "catchup_window", 3600),
    ("ATTRIBUTION_MEMORY_DAYS", "30", "attribution_memory_days", 30),
    ("REFUND_CLAWBACKS", "off", "refund_clawbacks", False),
    (
        "REDIS_SENTINELS",
        "10.0.0.1:26379, sentinel-b:26380,[::1]:26381",
        "redis_sentinels",
        (("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)),
    ),
    ("REDIS_SENTINEL_MASTER", " refbridge ", "redis_sentinel_master", "refbridge"),
    (
        "REDIS_SENTINEL_PASSWORD",
        "sentinel-pass-5e2a",
        "redis_sentinel_password",
        "sentinel-pass-5e2a",
    ),
    ("REDIS_MIN_REPLICAS", "2", "redis_min_replicas", 2),
    ("REDIS_WAIT_TIMEOUT", "0.25", "redis_wait_timeout", 0.25),
]

BAD_SECONDS = ["abc", "0", "-5", "", "nan", "inf", "1e400", "10s"]
# float() takes every one of these; none is ASCII digits with an optional decimal fraction.
NOT_ASCII_NUMBERS = [
    "²",
    "1²",
    "١٢",  # Arabic-Indic digits
    "１０",  # fullwidth digits
    "1_0",
    "1e3",
    " 1e3",
    "+5",
    "0x10",
    "Infinity",
    "NaN",
    "1.",
    ".5",
    "1.2.3",
    "9" * 400,  # float() gives inf
    "0.0",
    "00",
]
SECONDS_VARIABLES = [
    "STRIPE_SIGNATURE_TOLERANCE",
    "DELIVERY_BACKOFF_BASE",
    "DELIVERY_BACKOFF_MAX",
    "DELIVERY_MAX_AGE",
    "DELIVERY_TIMEOUT",
]

# (variable, bad value, a secret that must not be repeated in the message)
BAD_VALUES = [
    *[(v, raw, None) for v in SECONDS_VARIABLES for raw in BAD_SECONDS if raw],
    *[(v, raw, None) for v in SECONDS_VARIABLES for raw in NOT_ASCII_NUMBERS],
    ("DELIVERY_TIMEOUT", "601", None),  # sockets cannot wait that long (poll's int of ms)
    ("REFCAMPAIGN_API_URL", "http://app.refcampaign.com", None),  # the key would go in clear
    ("REFCAMPAIGN_API_URL", "http://10.0.0.5:8080", None),
    ("REFCAMPAIGN_API_URL", "http://localhost.example.test", None),
    ("REFCAMPAIGN_API_URL", "http://127.0.0.1.nip.io", None),
    ("REFCAMPAIGN_API_URL", "http://[::ffff:127.0.0.1]", None),
    ("REFCAMPAIGN_API_URL", "http://user:url-pass-78@rc.example.test", "url-pass-78"),
    ("PAYPAL_IPN_VERIFY_URL", "http://ipnpb.paypal.com/cgi-bin/webscr", None),
    ("RECURRING_CONVERSIONS", "maybe", None),
    ("RECURRING_CONVERSIONS", "2", None),
    ("REFCAMPAIGN_API_URL", "ftp://app.refcampaign.com", None),
    ("REFCAMPAIGN_API_URL", "app.refcampaign.com", None),
    ("REFCAMPAIGN_API_URL", "https://user:url-pass-77@", "url-pass-77"),
    ("PAYPAL_IPN_VERIFY_URL", "file:///etc/passwd", None),
    ("PAYPAL_IPN_VERIFY_URL", "javascript:alert(1)", None),
    ("REDIS_URL", "not-a-url", None),
    ("REDIS_URL", "http://:redis-pass-4c1d@cache.internal:6379", "redis-pass-4c1d"),
    ("REDIS_URL", "127.0.0.1:6379", None),
    ("REDIS_SENTINELS", "sentinel-a", None),
    ("REDIS_SENTINELS", "sentinel-a:0", None),
    ("REDIS_SENTINELS", "sentinel-a:26379,:26380", None),
    ("REDIS_SENTINELS", "sentinel-a:port", None),
    ("REDIS_SENTINELS", "sentinel-a:²", None),
    ("REDIS_MIN_REPLICAS", "-1", None),
    ("REDIS_MIN_REPLICAS", "1.5", None),
    ("REDIS_MIN_REPLICAS", "²", None),
    ("REDIS_WAIT_TIMEOUT", "0", None),
    ("REDIS_WAIT_TIMEOUT", "6", None),
    ("REDIS_WAIT_TIMEOUT", "abc", None),
    ("STRIPE_WEBHOOK_SECRET", "sk_live_51secretvalue", "sk_live_51secretvalue"),
    ("PAYPAL_API_URL", "http://api-m.paypal.com", None),  # the client secret would go in clear
    ("STRIPE_API_URL", "http://api.stripe.com", None),
    ("CATCHUP_INTERVAL", "-1", None),
    ("CATCHUP_INTERVAL", "15m", None),
    ("CATCHUP_INTERVAL", "²", None),
    ("CATCHUP_WINDOW", "0", None),
    ("CATCHUP_WINDOW", "1.5", None),
    ("ATTRIBUTION_MEMORY_DAYS", "0", None),
    ("ATTRIBUTION_MEMORY_DAYS", "10001", None),
    ("ATTRIBUTION_MEMORY_DAYS", "1.5", None),
    ("ATTRIBUTION_MEMORY_DAYS", "²", None),
    ("STRIPE_WEBHOOK_SECRET", f"{STRIPE_SECRET},not_a_whsec_value", STRIPE_SECRET),
]


def test_every_variable_has_its_documented_default():
    settings = Settings.from_env({})
    for _, attribute, default in DEFAULTS:
        assert getattr(settings, attribute) == default, attribute
    assert settings.postback_url == "https://app.refcampaign.com/api/v1/conversions/postback"
    assert settings.paypal_verifies_live is True


@pytest.mark.parametrize("variable", [row[0] for row in DEFAULTS])
def test_blank_value_means_the_default(variable):
    attribute, default = {v: (a, d) for v, a, d in DEFAULTS}[variable]
    assert getattr(Settings.from_env({variable: "   "}), attribute) == default


def test_defaults_cover_the_whole_readme_table():
    assert {row[0] for row in DEFAULTS} == set(TABLE)
    assert {row[0] for row in READS} == set(TABLE)


@pytest.mark.parametrize(("variable", "raw", "attribute", "expected"), READS)
def test_each_variable_is_read(variable, raw, attribute, expected):
    settings = Settings.from_env({variable: raw})
    assert getattr(settings, attribute) == expected
    # REDIS_SENTINELS alone gives REDIS_URL a default too (test_sentinels_without_redis_url).
    skip = {variable, "REDIS_URL"} if variable == "REDIS_SENTINELS" else {variable}
    others = [(a, d) for v, a, d in DEFAULTS if v not in skip]
    for other_attribute, default in others:
        assert getattr(settings, other_attribute) == default, other_attribute


def test_postback_url_is_built_from_the_base_url():
    settings = Settings.from_env({"REFCAMPAIGN_API_URL": "https://rc.example.test/"})
    assert settings.postback_url == "https://rc.example.test/api/v1/conversions/postback"
    assert settings.refund_url == "https://rc.example.test/api/v1/conversions/refund"


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " True "])
def test_true_spellings(raw):
    assert Settings.from_env({"RECURRING_CONVERSIONS": raw}).recurring_conversions is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off"])
def test_false_spellings(raw):
    assert Settings.from_env({"RECURRING_CONVERSIONS": raw}).recurring_conversions is False


@pytest.mark.parametrize("raw", ["redis://h:1/0", "rediss://h:6380/0", "unix:///tmp/redis.sock"])
def test_redis_url_schemes_accepted(raw):
    assert Settings.from_env({"REDIS_URL": raw}).redis_url == raw


@pytest.mark.parametrize(("variable", "raw", "secret"), BAD_VALUES)
def test_bad_value_raises_config_error_naming_the_variable(variable, raw, secret):
    environ = {"REFCAMPAIGN_API_KEY": API_KEY, variable: raw}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    message = str(caught.value)
    assert caught.value.variable == variable
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert API_KEY not in message
    if secret is not None:
        assert secret not in message


@pytest.mark.parametrize(
    ("raw", "value"),
    [("10", 10.0), ("2.5", 2.5), (" 10 ", 10.0), ("0.5", 0.5), ("007", 7.0), ("600", 600.0)],
)
def test_seconds_are_ascii_digits_with_an_optional_fraction(raw, value):
    assert Settings.from_env({"DELIVERY_TIMEOUT": raw}).delivery_timeout == value


@pytest.mark.parametrize("raw", ["1", " 300 ", "86400"])
def test_signature_tolerance_is_whole_ascii_digits(raw):
    expected = int(raw)
    assert (
        Settings.from_env({"STRIPE_SIGNATURE_TOLERANCE": raw}).stripe_signature_tolerance
        == expected
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://app.refcampaign.com",
        "http://localhost:8001",
        "http://LOCALHOST:8001",
        "http://127.0.0.1:8001",
        "http://127.3.4.5",
        "http://[::1]:8001",
    ],
)
@pytest.mark.parametrize(
    ("variable", "attribute"),
    [
        ("REFCAMPAIGN_API_URL", "refcampaign_api_url"),
        ("PAYPAL_IPN_VERIFY_URL", "paypal_ipn_verify_url"),
    ],
)
def test_http_only_for_a_loopback_host(variable, attribute, url):
    assert getattr(Settings.from_env({variable: url}), attribute) == url


def test_a_clear_text_api_url_is_refused_with_one_line_naming_the_rule():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REFCAMPAIGN_API_URL": "http://app.refcampaign.com"})
    assert str(caught.value) == (
        "REFCAMPAIGN_API_URL: must be an https:// URL"
        " (http:// only for localhost, 127.0.0.0/8 or ::1)"
    )


def test_backoff_max_below_base_is_refused():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DELIVERY_BACKOFF_BASE": "100", "DELIVERY_BACKOFF_MAX": "50"})
    assert caught.value.variable == "DELIVERY_BACKOFF_MAX"
    assert "DELIVERY_BACKOFF_BASE" in str(caught.value)


def test_backoff_max_below_default_base_is_refused():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DELIVERY_BACKOFF_MAX": "5"})
    assert caught.value.variable == "DELIVERY_BACKOFF_MAX"


def test_backoff_max_equal_to_base_is_allowed():
    settings = Settings.from_env({"DELIVERY_BACKOFF_BASE": "30", "DELIVERY_BACKOFF_MAX": "30"})
    assert settings.delivery_backoff_base == settings.delivery_backoff_max == 30


def test_fractional_signature_tolerance_never_disables_the_age_check():
    try:
        settings = Settings.from_env({"STRIPE_SIGNATURE_TOLERANCE": "0.5"})
    except ConfigError as exc:
        assert exc.variable == "STRIPE_SIGNATURE_TOLERANCE"
    else:
        assert settings.stripe_signature_tolerance >= 1


def test_stripe_secrets_are_comma_separated_with_blanks_dropped():
    raw = " whsec_one , ,whsec_two,, whsec_three ,"
    settings = Settings.from_env({"STRIPE_WEBHOOK_SECRET": raw})
    assert settings.stripe_webhook_secrets == ("whsec_one", "whsec_two", "whsec_three")


def test_only_commas_means_no_stripe_secret():
    assert Settings.from_env({"STRIPE_WEBHOOK_SECRET": " , ,"}).stripe_webhook_secrets == ()


def test_paypal_receiver_emails_are_split_trimmed_and_lower_cased():
    raw = " Shop@Example.COM, ,billing@EXAMPLE.com "
    settings = Settings.from_env({"PAYPAL_RECEIVER_EMAILS": raw})
    assert settings.paypal_receiver_emails == ("shop@example.com", "billing@example.com")


def test_sandbox_verify_url_is_not_live():
    url = "https://ipnpb.sandbox.paypal.com/cgi-bin/webscr"
    assert Settings.from_env({"PAYPAL_IPN_VERIFY_URL": url}).paypal_verifies_live is False


def test_require_names_the_first_missing_variable():
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert settings.require("REDIS_URL") is settings
    with pytest.raises(ConfigError) as caught:
        settings.require("REDIS_URL", "REFCAMPAIGN_API_KEY")
    assert caught.value.variable == "REFCAMPAIGN_API_KEY"
    assert str(caught.value) == "REFCAMPAIGN_API_KEY: is not set"


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.delivery_timeout = 1  # type: ignore[misc]


def test_repr_never_shows_key_secrets_or_redis_url():
    settings = Settings.from_env(
        {
            "REFCAMPAIGN_API_KEY": API_KEY,
            "STRIPE_WEBHOOK_SECRET": f"{STRIPE_SECRET},whsec_second_7d",
            "REDIS_URL": REDIS_WITH_PASSWORD,
            "METRICS_BEARER_TOKEN": "prom-token-81c2",
            "PAYPAL_CLIENT_ID": "AYSq3RDGsmBLJE-otTkBtM",
            "PAYPAL_CLIENT_SECRET": PAYPAL_SECRET,
            "STRIPE_API_KEY": STRIPE_KEY,
        }
    )
    for text in (repr(settings), str(settings)):
        assert PAYPAL_SECRET not in text
        assert "AYSq3RDGsmBLJE" not in text
        assert STRIPE_KEY not in text
        assert API_KEY not in text
        assert STRIPE_SECRET not in text
        assert "whsec_" not in text
        assert "redis-pass-4c1d" not in text
        assert "cache.internal" not in text
        assert "prom-token-81c2" not in text
        assert "delivery_timeout=10" in text  # it is still a useful repr


# --- `.env` in the working directory -----------------------------------------------------------


@pytest.fixture()
def clean_environ(monkeypatch, tmp_path):
    for variable in TABLE:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_dotenv(directory: Path, text: str) -> None:
    (directory / ".env").write_text(text, encoding="utf-8")


def test_no_dotenv_and_empty_environment_gives_defaults(clean_environ):
    settings = Settings.from_env()
    assert settings == Settings.from_env({})


def test_dotenv_in_working_directory_is_read(clean_environ):
    write_dotenv(
        clean_environ,
        "REFCAMPAIGN_API_KEY=from_file_key\n"
        "REDIS_URL=redis://file-host:6379/3\n"
        'DELIVERY_TIMEOUT="7"\n'
        "# a comment\n"
        "RECURRING_CONVERSIONS=off\n",
    )
    settings = Settings.from_env()
    assert settings.refcampaign_api_key == "from_file_key"
    assert settings.redis_url == "redis://file-host:6379/3"
    assert settings.delivery_timeout == 7
    assert settings.recurring_conversions is False


def test_real_environment_wins_over_dotenv(clean_environ, monkeypatch):
    write_dotenv(
        clean_environ,
        "REFCAMPAIGN_API_KEY=from_file_key\nDELIVERY_TIMEOUT=7\nREDIS_URL=redis://file:1/0\n",
    )
    monkeypatch.setenv("DELIVERY_TIMEOUT", "3")
    monkeypatch.setenv("REFCAMPAIGN_API_KEY", "from_env_key")
    settings = Settings.from_env()
    assert settings.delivery_timeout == 3
    assert settings.refcampaign_api_key == "from_env_key"
    assert settings.redis_url == "redis://file:1/0"  # only in the file: still read


def test_dotenv_of_another_directory_is_not_read(clean_environ, tmp_path_factory, monkeypatch):
    write_dotenv(clean_environ, "DELIVERY_TIMEOUT=7\n")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert Settings.from_env().delivery_timeout == 10


def test_bad_value_in_dotenv_names_the_variable(clean_environ):
    write_dotenv(clean_environ, f"REFCAMPAIGN_API_KEY={API_KEY}\nREDIS_URL=mysql://db/x\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env()
    assert caught.value.variable == "REDIS_URL"
    assert API_KEY not in str(caught.value)


def test_bad_dotenv_value_is_overridden_by_good_environment(clean_environ, monkeypatch):
    write_dotenv(clean_environ, "DELIVERY_MAX_AGE=forever\n")
    monkeypatch.setenv("DELIVERY_MAX_AGE", "60")
    assert Settings.from_env().delivery_max_age == 60


def test_explicit_environ_ignores_dotenv(clean_environ):
    write_dotenv(clean_environ, "DELIVERY_TIMEOUT=7\n")
    assert Settings.from_env({}).delivery_timeout == 10


def test_sentinels_without_redis_url_need_no_password_database_or_tls():
    settings = Settings.from_env({"REDIS_SENTINELS": "127.0.0.1:26379"})
    assert settings.redis_url == "redis://localhost:6379/0"
    settings.require("REDIS_URL")  # the web and workers start on the Sentinels alone
    given = Settings.from_env(
        {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_URL": REDIS_WITH_PASSWORD}
    )
    assert given.redis_url == REDIS_WITH_PASSWORD
    assert "sentinel-pass" not in repr(
        Settings.from_env({"REDIS_SENTINEL_PASSWORD": "sentinel-pass-5e2a"})
    )
