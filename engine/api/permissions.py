"""The one permission policy: which roles may call which endpoint, by (HTTP method, route path template).

``current_tenant`` (engine/api/app.py) resolves the matched route's template here on every tenant
request and answers 403 ``forbidden`` naming the roles that may. The roles are the seed's
(``../shared/seeds/002``: accountant, principal, auditor, admin) plus issue 14's consolidating
accountant (``consolidator``), see engine/users.py. Templates match by shape: a parameter's name
does not matter (``{id}`` and ``{expense_id}`` are the same). How a rule is found, first match wins:

1. an explicit rule for (method, template) in ``RULES``;
2. an admin-only area (``ADMIN_AREAS``: user and key management, integrations and their secrets,
   webhook endpoints), for every method;
3. the method's default: GET/HEAD of tenant data -> every role; anything else is a mutation ->
   admin and accountant (fail closed: a new mutating endpoint is not open to principals, auditors
   or consolidators until a rule says so).

docs/users-and-roles.md holds the table of every route's roles, kept in sync by
tests/unit/test_permissions.py.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from engine.users import ACCOUNTANT, ADMIN, AUDITOR, CONSOLIDATOR, PRINCIPAL, ROLES

Roles = frozenset[str]
Source = Literal["rule", "admin area", "read default", "write default"]

EVERY_ROLE: Roles = frozenset(ROLES)
WRITERS: Roles = frozenset({ADMIN, ACCOUNTANT})
ADMIN_ONLY: Roles = frozenset({ADMIN})
READ_METHODS = frozenset({"GET", "HEAD"})

# Paths under these (the path itself or anything below it) are the tenant administrator's alone, for
# every method: who may act (users, keys), where secrets live (integrations, webhook secrets).
ADMIN_AREAS: tuple[str, ...] = (
    "/v1/users",
    "/v1/tenant/api-keys",
    "/v1/tenant/ingest-keys",
    "/v1/integrations",
    "/v1/webhooks/endpoints",
)

_SUBMITTERS: Roles = frozenset({ADMIN, ACCOUNTANT})
_APPROVERS: Roles = frozenset({ADMIN, PRINCIPAL})
# Everyone who works in the college records audit entries; a consolidator only reads other colleges.
_AUDIT_WRITERS: Roles = frozenset({ADMIN, ACCOUNTANT, PRINCIPAL, AUDITOR})

RULES: dict[tuple[str, str], Roles] = {
    # The tenant profile: everyone may read it, only the administrator changes it.
    ("PATCH", "/v1/tenant"): ADMIN_ONLY,
    # Calculators and look-ups sent as POST: they change nothing, so every role may use them.
    ("POST", "/v1/gst/validate"): EVERY_ROLE,
    ("POST", "/v1/gst/calculate"): EVERY_ROLE,
    ("POST", "/v1/tds/calculate"): EVERY_ROLE,
    # Audit log (issue 14): read by auditors and administrators; the auditor's one mutation.
    ("GET", "/v1/audit-logs"): frozenset({AUDITOR, ADMIN}),
    ("GET", "/v1/audit-logs/{entry_id}"): frozenset({AUDITOR, ADMIN}),
    ("POST", "/v1/audit-logs"): _AUDIT_WRITERS,
    # Expenses and approvals (seed 1.2, 1.3): accountants submit and pay, the principal approves.
    ("POST", "/v1/expenses"): _SUBMITTERS,
    ("POST", "/v1/expenses/{expense_id}/pay"): _SUBMITTERS,
    ("POST", "/v1/approvals/expenses/{expense_id}/request"): _SUBMITTERS,
    ("POST", "/v1/expenses/{expense_id}/approve"): _APPROVERS,
    ("POST", "/v1/expenses/{expense_id}/reject"): _APPROVERS,
    # The principal portal's approval callback, when sent with a tenant key rather than a signature.
    ("POST", "/v1/webhooks/expense-approval"): _APPROVERS,
    ("GET", "/v1/expenses/export"): frozenset({ACCOUNTANT, AUDITOR, PRINCIPAL, ADMIN, CONSOLIDATOR}),
    ("POST", "/v1/budgets"): _SUBMITTERS,
    ("POST", "/v1/financial-reports/submit"): _SUBMITTERS,
}

# GET routes on which a consolidator may name another college with ``?college_id=<tenant id>`` (issue
# 14: "the consolidating accountant reads several colleges through an operator-granted cross-tenant
# role"). Only reads of the college's books; never secrets, integrations, users or keys.
CONSOLIDATOR_READS: frozenset[str] = frozenset(
    {
        "/v1/expenses",
        "/v1/expenses/{expense_id}",
        "/v1/expenses/export",
        "/v1/budgets",
        "/v1/budgets/summary",
        "/v1/financial-reports",
        "/v1/financial-reports/{report_id}",
        "/v1/fee-collections",
        "/v1/invoices",
        "/v1/invoices/{invoice_id}",
    }
)


_PARAMETER = re.compile(r"\{[^}]*\}")


def _shape(path: str) -> str:
    """A template with its parameters unnamed: ``/v1/expenses/{id}/approve`` and
    ``/v1/expenses/{expense_id}/approve`` are one route, whatever its author called the id."""
    return _PARAMETER.sub("{}", path)


_RULES_BY_SHAPE: dict[tuple[str, str], Roles] = {(m, _shape(p)): roles for (m, p), roles in RULES.items()}
_CONSOLIDATOR_SHAPES = frozenset(_shape(p) for p in CONSOLIDATOR_READS)


def _admin_area(path: str) -> bool:
    return any(path == area or path.startswith(area + "/") for area in ADMIN_AREAS)


@lru_cache(maxsize=1024)
def resolve(method: str, path: str) -> tuple[Roles, Source]:
    """The roles that may call ``method path`` (a route's path template) and which kind of rule said so."""
    method = method.upper()
    if method == "HEAD":
        method = "GET"
    explicit = _RULES_BY_SHAPE.get((method, _shape(path)))
    if explicit is not None:
        return explicit, "rule"
    if _admin_area(path):
        return ADMIN_ONLY, "admin area"
    if method in READ_METHODS:
        return EVERY_ROLE, "read default"
    return WRITERS, "write default"


def allowed_roles(method: str, path: str) -> Roles:
    return resolve(method, path)[0]


def permits(role: str, method: str, path: str) -> bool:
    return role in allowed_roles(method, path)


def readable_across_tenants(method: str, path: str) -> bool:
    """Whether a consolidator may select another (granted) college on this route."""
    return method.upper() in READ_METHODS and _shape(path) in _CONSOLIDATOR_SHAPES


def refusal_message(role: str, method: str, path: str) -> str:
    roles = ", ".join(sorted(allowed_roles(method, path)))
    return f"{method.upper()} {path} is for the roles {roles}; this key acts as {role}"
