"""Pure: an alert of ``ledger.alert.v1`` -> the body of SendGrid's ``POST /v3/mail/send``.

One personalization per recipient, so that recipients never see each other's address (SendGrid
docs, "Personalizations": every address in one ``to`` list is visible to all of them). The alert id
goes in ``custom_args`` so that SendGrid's event webhook can tie a bounce back to the alert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SUBJECT_MAX = 200


def alert_mail(alert: Mapping[str, Any], recipients: Sequence[str], from_email: str) -> dict[str, Any]:
    severity = str(alert["severity"])
    subject = f"[Ledgerflow {severity}] {alert['cause']}: {alert['subject']}"
    lines = [
        str(alert["message"]),
        "",
        f"Severity: {severity}",
        f"Cause: {alert['cause']}",
        f"About: {alert['subject']}",
        f"Raised at: {alert['raised_at']}",
        f"Alert id: {alert['alert_id']}",
    ]
    lines += [f"{k}: {v}" for k, v in sorted((alert.get("details") or {}).items())]
    return {
        "personalizations": [{"to": [{"email": r}]} for r in recipients],
        "from": {"email": from_email, "name": "Ledgerflow alerts"},
        "subject": _one_line(subject)[:SUBJECT_MAX],
        "content": [{"type": "text/plain", "value": "\n".join(lines)}],
        "custom_args": {"alert_id": str(alert["alert_id"]), "tenant_id": str(alert["tenant_id"])},
    }


def _one_line(text: str) -> str:
    # A subject is a header: no line breaks or other control characters may reach it.
    return "".join(c if c.isprintable() else " " for c in text)
