"""SendGrid's answers classified, and the alert mail as SendGrid's Mail Send takes it (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import ErrorClass
from connectors.sendgrid.errors import classify
from connectors.sendgrid.mapping import alert_mail


@pytest.mark.parametrize(
    ("status", "headers", "error_class", "retry_after"),
    [
        (429, {"retry-after": "12"}, ErrorClass.RETRYABLE, 12.0),
        (429, {"x-ratelimit-reset": "1000060"}, ErrorClass.RETRYABLE, 60.0),
        (429, {}, ErrorClass.RETRYABLE, None),
        (500, {}, ErrorClass.RETRYABLE, None),
        (503, {"retry-after": "3"}, ErrorClass.RETRYABLE, 3.0),
        (400, {}, ErrorClass.PERMANENT, None),
        (413, {}, ErrorClass.PERMANENT, None),
        (401, {}, ErrorClass.NEEDS_ATTENTION, None),
        (403, {}, ErrorClass.NEEDS_ATTENTION, None),
        (418, {}, ErrorClass.NEEDS_ATTENTION, None),
    ],
)
def test_answers_are_classified_by_status(
    status: int, headers: dict[str, str], error_class: ErrorClass, retry_after: float | None
) -> None:
    error = classify(status, {"errors": [{"message": "m", "field": "from.email"}]}, headers, now=1_000_000)
    assert (error.code, error.error_class, error.retry_after) == (f"http_{status}", error_class, retry_after)


def test_only_field_names_of_sendgrids_shape_are_kept_never_messages() -> None:
    body = {
        "errors": [
            {"message": "your key SG.secret is bad", "field": "personalizations.0.to"},
            {"message": "x", "field": "password=SG.secret"},
            {"message": "x", "field": None},
        ]
    }
    error = classify(400, body, {})
    assert error.details["fields"] == ["personalizations.0.to"]
    assert "SG.secret" not in f"{error} {error.details}"


ALERT: dict[str, Any] = {
    "alert_id": "6f1c1a52-3f2e-4a55-9f7b-1b2f6f0d8c11",
    "tenant_id": "7d1c1a52-3f2e-4a55-9f7b-1b2f6f0d8c11",
    "severity": "critical",
    "cause": "connector.dead_lettered",
    "subject": "connector:gst-irp\r\nBcc: x@evil.test",
    "message": "gst-irp gave up on a job",
    "details": {"job_id": "j-1"},
    "raised_at": "2026-12-02T10:00:00+00:00",
}


def test_the_mail_has_one_personalization_per_recipient_and_a_single_line_subject() -> None:
    mail = alert_mail(ALERT, ["a@example.com", "b@example.com"], "alerts@example.com")
    assert mail["personalizations"] == [
        {"to": [{"email": "a@example.com"}]},
        {"to": [{"email": "b@example.com"}]},
    ]
    assert "\r" not in mail["subject"] and "\n" not in mail["subject"]
    assert mail["subject"].startswith("[Ledgerflow critical] connector.dead_lettered")
    assert mail["custom_args"] == {"alert_id": ALERT["alert_id"], "tenant_id": ALERT["tenant_id"]}
    assert "job_id: j-1" in mail["content"][0]["value"]
