"""Who gets a tenant's alerts by email, and the alerts as the tenant lists them.

A policy is a list of rules ``{min_severity, recipients}``: an alert is emailed to the recipients of
every rule whose minimum severity it reaches (info < warning < critical), each address once. An
empty policy emails nobody; alerts still reach the tenant's outbound webhook endpoints that
subscribe to ``ledgerflow.alert.raised`` (docs/webhooks.md). The emails themselves go out through
the ``sendgrid`` connector (connectors/sendgrid/), see docs/integrations.md "Alerts".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from email_validator import EmailNotValidError, validate_email
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from engine.domain.alert import SEVERITIES
from engine.errors import InvalidInput
from engine.tax.errors import Violation

MAX_RULES = 10
MAX_RECIPIENTS = 50
MAX_PAGE = 200


class InvalidPolicy(InvalidInput):
    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__("; ".join(v.message for v in violations))
        self.violations = tuple(violations)


def rank(severity: str) -> int:
    """0, 1, 2 for info, warning, critical; an unknown severity counts as warning (docs/topics.md)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else SEVERITIES.index("warning")


def check_policy(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rules as stored (addresses normalised, each once per rule); InvalidPolicy names each bad field."""
    violations: list[Violation] = []
    if len(rules) > MAX_RULES:
        violations.append(Violation("email", "too_many_rules", f"at most {MAX_RULES} rules"))
    clean: list[dict[str, Any]] = []
    for i, rule in enumerate(rules[:MAX_RULES]):
        severity = rule.get("min_severity")
        if severity not in SEVERITIES:
            violations.append(
                Violation(
                    f"email[{i}].min_severity",
                    "unknown_severity",
                    f"min_severity must be one of {', '.join(SEVERITIES)}",
                )
            )
        recipients = rule.get("recipients")
        if not isinstance(recipients, list) or not recipients or len(recipients) > MAX_RECIPIENTS:
            violations.append(
                Violation(
                    f"email[{i}].recipients",
                    "invalid_recipients",
                    f"recipients is a list of 1 to {MAX_RECIPIENTS} email addresses",
                )
            )
            continue
        addresses: list[str] = []
        for j, address in enumerate(recipients):
            normalised = check_address(address)
            if normalised is None:
                violations.append(
                    Violation(f"email[{i}].recipients[{j}]", "invalid_email", "not an email address")
                )
            elif normalised not in addresses:
                addresses.append(normalised)
        clean.append({"min_severity": severity, "recipients": addresses})
    if violations:
        raise InvalidPolicy(violations)
    return clean


def check_address(address: object) -> str | None:
    """The address as email-validator normalises it, or None. No DNS look-up: a policy is saved
    whatever the network says, and SendGrid reports undeliverable addresses itself."""
    if not isinstance(address, str) or len(address) > 254:
        return None
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def recipients_for(rules: Iterable[Mapping[str, Any]], severity: str) -> list[str]:
    """Every address of the rules ``severity`` reaches, each once, in policy order."""
    found: list[str] = []
    for rule in rules:
        if rank(severity) >= rank(str(rule["min_severity"])):
            found += [a for a in rule["recipients"] if a not in found]
    return found


# -- storage ----------------------------------------------------------------------------------------


def load(conn: psycopg.Connection, tenant_id: UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT email, updated_at FROM alert_policies WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
    if row is None:
        return {"email": [], "updated_at": None}
    return {"email": row["email"], "updated_at": row["updated_at"].isoformat()}


def save(conn: psycopg.Connection, tenant_id: UUID, rules: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    clean = check_policy(rules)
    conn.execute(
        "INSERT INTO alert_policies (tenant_id, email) VALUES (%s, %s) ON CONFLICT (tenant_id)"
        " DO UPDATE SET email = EXCLUDED.email, updated_at = now()",
        (tenant_id, Jsonb(clean)),
    )
    return load(conn, tenant_id)


def record_alert(conn: psycopg.Connection, alert: Mapping[str, Any]) -> bool:
    """Keep an alert of ``ledger.alert.v1`` for ``GET /v1/alerts``; False when it was already kept."""
    cur = conn.execute(
        "INSERT INTO alert_log (alert_id, tenant_id, severity, cause, subject, message, details, raised_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (alert_id) DO NOTHING",
        (
            alert["alert_id"],
            alert["tenant_id"],
            alert["severity"],
            alert["cause"],
            alert["subject"],
            alert["message"],
            Jsonb(dict(alert.get("details") or {})),
            alert["raised_at"],
        ),
    )
    return cur.rowcount == 1


def list_alerts(
    conn: psycopg.Connection,
    tenant_id: UUID,
    *,
    limit: int,
    cursor: UUID | None = None,
    min_severity: str | None = None,
) -> dict[str, Any]:
    """The tenant's alerts, newest first; ``next_cursor`` (an alert id) gives the next page."""
    limit = max(1, min(limit, MAX_PAGE))
    severities = list(SEVERITIES[rank(min_severity) :]) if min_severity else list(SEVERITIES)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT alert_id, severity, cause, subject, message, details, raised_at FROM alert_log a
                WHERE tenant_id = %(t)s AND severity = ANY(%(s)s)
                  AND (%(c)s::uuid IS NULL OR (raised_at, alert_id) < (
                       SELECT raised_at, alert_id FROM alert_log
                        WHERE alert_id = %(c)s AND tenant_id = %(t)s))
                ORDER BY raised_at DESC, alert_id DESC LIMIT %(n)s""",
            {"t": tenant_id, "s": severities, "c": cursor, "n": limit + 1},
        ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [
            {
                "alert_id": str(r["alert_id"]),
                "severity": r["severity"],
                "cause": r["cause"],
                "subject": r["subject"],
                "message": r["message"],
                "details": r["details"],
                "raised_at": _iso(r["raised_at"]),
            }
            for r in rows
        ],
        "next_cursor": str(rows[-1]["alert_id"]) if more else None,
    }


def _iso(at: datetime) -> str:
    return at.isoformat()
