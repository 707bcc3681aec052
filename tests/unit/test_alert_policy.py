"""The alert policy's rules: who gets an alert of each severity, and what a policy may hold."""

from __future__ import annotations

from typing import Any

import pytest

from engine.alert_policy import InvalidPolicy, check_policy, rank, recipients_for

RULES = [
    {"min_severity": "critical", "recipients": ["cfo@example.com", "oncall@example.com"]},
    {"min_severity": "warning", "recipients": ["oncall@example.com", "ops@example.com"]},
    {"min_severity": "info", "recipients": ["log@example.com"]},
]


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("critical", ["cfo@example.com", "oncall@example.com", "ops@example.com", "log@example.com"]),
        ("warning", ["oncall@example.com", "ops@example.com", "log@example.com"]),
        ("info", ["log@example.com"]),
        # docs/topics.md: treat an unknown severity as warning.
        ("emergency", ["oncall@example.com", "ops@example.com", "log@example.com"]),
    ],
)
def test_an_alert_goes_to_every_rule_it_reaches_each_address_once(severity: str, expected: list[str]) -> None:
    assert recipients_for(RULES, severity) == expected


def test_an_empty_policy_emails_nobody() -> None:
    assert recipients_for([], "critical") == []


def test_severities_rank_in_order() -> None:
    assert rank("info") < rank("warning") < rank("critical")


def test_addresses_are_normalised_and_deduplicated_within_a_rule() -> None:
    [rule] = check_policy([{"min_severity": "info", "recipients": ["Ops@Example.COM", "Ops@example.com"]}])
    assert rule["recipients"] == ["Ops@example.com"]


@pytest.mark.parametrize(
    ("rules", "path", "code"),
    [
        (
            [{"min_severity": "fatal", "recipients": ["a@example.com"]}],
            "email[0].min_severity",
            "unknown_severity",
        ),
        ([{"min_severity": "info", "recipients": []}], "email[0].recipients", "invalid_recipients"),
        (
            [{"min_severity": "info", "recipients": "a@example.com"}],
            "email[0].recipients",
            "invalid_recipients",
        ),
        ([{"min_severity": "info", "recipients": ["nobody"]}], "email[0].recipients[0]", "invalid_email"),
        (
            [{"min_severity": "info", "recipients": ["a\r\nBcc: x@evil.test"]}],
            "email[0].recipients[0]",
            "invalid_email",
        ),
        ([{"min_severity": "info", "recipients": [42]}], "email[0].recipients[0]", "invalid_email"),
        (
            [{"min_severity": "info", "recipients": ["a" * 250 + "@example.com"]}],
            "email[0].recipients[0]",
            "invalid_email",
        ),
        ([{"min_severity": "info", "recipients": ["a@x.test"]}] * 11, "email", "too_many_rules"),
    ],
    ids=[
        "severity",
        "empty",
        "not-a-list",
        "not-an-address",
        "header-injection",
        "number",
        "huge",
        "too-many",
    ],
)
def test_a_bad_rule_names_its_field(rules: list[dict[str, Any]], path: str, code: str) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        check_policy(rules)
    assert (path, code) in [(v.path, v.code) for v in caught.value.violations]
