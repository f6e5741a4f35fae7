"""The Prometheus alerting rules in deploy/prometheus/: valid, unit-tested with promtool, each
naming its runbook section, over metrics that /metrics really shows."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "refbridge.rules.yml"
RULE_TESTS = sorted(RULES_DIR.glob("*.test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
METRIC = re.compile(r"\brefbridge_[a-z0-9_]+")
# label="value", label!="value", label=~"a|b": what a selector matches on.
MATCHER = re.compile(r'\b([a-z_]+)\s*(=~|!=|=)\s*"([^"]*)"')


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def test_promtool_checks_and_tests_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, cwd=ROOT
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=100,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(RULE_TESTS) == 2


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        suite = load(path)
        assert suite["rule_files"] == [RULES.name]
        for case in suite["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - firing == set(), "never shown firing"
    assert names - silent == set(), "never shown silent"
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of `markdown`: lower case, punctuation other than
    `-` and `_` dropped, spaces as `-`; a repeated one gets `-1`, `-2`…"""
    seen: dict[str, int] = {}
    out = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_anchors_follow_github() -> None:
    text = "## RefCampaign's plan quota is reached (`refcampaign_limit_exceeded`)\n## A b\n## A b\n"
    assert anchors(text) == {
        "refcampaigns-plan-quota-is-reached-refcampaign_limit_exceeded",
        "a-b",
        "a-b-1",
    }


def test_every_rule_is_complete_and_names_its_runbook_section() -> None:
    sections = anchors(RUNBOOK.read_text(encoding="utf-8"))
    rules = alerting_rules()
    assert len(rules) == 8
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Refbridge[A-Za-z]+", name), name
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), name
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        notes = rule["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbook.md", name
        assert anchor in sections, f"{name}: no section #{anchor} in docs/runbook.md"


def exposed_names(text: str) -> set[str]:
    """Every series name a /metrics text can carry, samples or not yet (a counter appears once
    it has counted something, but its family is always described)."""
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


def test_the_rules_read_metrics_the_web_exposes(client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    exposed = exposed_names(response.get_data(as_text=True))
    assert "refbridge_workers" in exposed
    read = {m for rule in alerting_rules() for m in METRIC.findall(rule["expr"])}
    assert len(read) == 8
    assert read - exposed == set()
    # The tests' series are real ones too.
    fed = set()
    for path in RULE_TESTS:
        for case in load(path)["tests"]:
            fed |= {METRIC.match(s["series"]).group() for s in case["input_series"]}
    assert fed - exposed == set()


def test_the_label_values_the_rules_match_are_ones_the_code_counts() -> None:
    source = "\n".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "bridge").rglob("*.py"))
    )
    values = set()
    for rule in alerting_rules():
        for _label, _op, value in MATCHER.findall(rule["expr"]):
            values |= set(value.split("|"))
    assert values >= {"retried", "crashed", "dead_lettered", "delivered", "limit_exceeded"}
    assert {v for v in values if f'"{v}"' not in source} == set()
