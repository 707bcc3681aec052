"""Wires the write side together once per process: settings, schema, event store, pool, service."""

from __future__ import annotations

from engine import db
from engine.application import LedgerService, open_ledger
from engine.audit_log import open_audit_log
from engine.config import Settings
from engine.payments import open_inbox
from engine.webhooks import open_store as open_webhook_store


def build_service(settings: Settings, *, pool_size: int = 10) -> LedgerService:
    db.ensure_schema(settings)
    return LedgerService(settings, open_ledger(settings), db.make_pool(settings, max_size=pool_size))


def migrate(settings: Settings) -> None:
    """Everything that changes the schema, as the owner role: the engine's tables and views, the
    event store's tables, and the runtime role's privileges (``ledgerflow db migrate``)."""
    owner = settings.as_owner()
    db.ensure_schema(owner)
    open_ledger(owner).close()
    open_webhook_store(owner).close()
    open_inbox(owner).close()  # the inbound webhook inbox's tables (engine/payments.py)
    open_audit_log(owner).close()  # the audit log's entries (engine/audit_log.py)
