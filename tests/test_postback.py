"""The outbound session: the environment's proxy and CA settings, per destination, read once."""

from __future__ import annotations

import pytest

from bridge.delivery.http_client import new_session

POSTBACK = "https://app.refcampaign.com/api/v1/conversions/postback"
VERIFY = "https://ipnpb.paypal.com/cgi-bin/webscr"


@pytest.fixture()
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    monkeypatch.setenv("NO_PROXY", "ipnpb.paypal.com")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/own-ca.pem")
    return monkeypatch


def test_each_destination_gets_its_own_proxy_decision(environment):
    session = new_session()
    postback = session.merge_environment_settings(POSTBACK, {}, None, None, None)
    verify = session.merge_environment_settings(VERIFY, {}, None, None, None)
    assert postback["proxies"]["https"] == "http://proxy.example.test:3128"
    assert "https" not in verify["proxies"]  # NO_PROXY
    assert postback["verify"] == verify["verify"] == "/etc/ssl/own-ca.pem"


def test_the_environment_is_read_once_per_destination(environment):
    session = new_session()
    first = session.environment_for(POSTBACK)
    environment.setenv("HTTPS_PROXY", "http://elsewhere.example.test:1")
    assert session.environment_for(POSTBACK + "?again") is first
    assert session.environment_for("https://u:p@app.refcampaign.com/other") is first
    assert session.environment_for(VERIFY) is not first


def test_an_explicit_verify_setting_wins(environment):
    session = new_session()
    assert session.merge_environment_settings(POSTBACK, {}, None, False, None)["verify"] is False
