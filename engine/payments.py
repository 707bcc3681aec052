"""Payments in: the inbox of verified webhook deliveries, the Payment aggregate's commands, payments
applied to invoices, and the read model behind ``/v1/payments``, the invoice's payment fields and
``/v1/receivables``.

The inbox is an event store of its own (eventsourcing application ``Inbox``, table ``inbox_events``):
every accepted delivery is an ``InboundWebhook.Received`` event there before the provider gets its
200. It is kept apart from the ledger's store because the relay publishes every ledger event on
Kafka, and a provider's raw body (customer e-mail, phone, card network) is no downstream consumer's
business; what the ledger publishes is the Payment's own events on ``ledger.payment.v1``.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, OperationalError, PersistenceError
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from engine import db
from engine.application import LedgerService, open_event_store
from engine.config import Settings
from engine.domain.inbound_webhook import InboundWebhook, delivery_id_for
from engine.domain.invoice import Invoice, invoice_id_for
from engine.domain.payment import Payment, payment_id_for
from engine.tax.india_gst import financial_year, today_in_india

log = logging.getLogger(__name__)

# How often a payment change is re-applied after losing a race for the aggregate's next version
# (two processors, or a duplicate handled twice): each retry reloads and re-judges.
APPLY_ATTEMPTS = 10
AGEING_BUCKETS = ("0_30", "31_60", "61_90", "over_90")


class Inbox(Application[UUID]):
    """The store of verified inbound webhook deliveries (table ``inbox_events``)."""

    name = "Inbox"


def open_inbox(settings: Settings) -> Inbox:
    """The inbox store, created as the ledger's is (one process at a time creates its tables)."""
    return open_event_store(settings, Inbox, POSTGRES_POOL_SIZE="2", POSTGRES_MAX_OVERFLOW="4")


@dataclass(frozen=True)
class PaymentFact:
    """What one gateway event says about one payment (connectors map their payloads to this)."""

    tenant_id: UUID
    provider: str
    provider_payment_id: str
    provider_event_id: str
    occurred_at: datetime
    amount: Decimal
    currency: str
    paid_at: datetime
    status: str | None = None
    """The gateway status this event reports (None: a refund only)."""
    refund_id: str | None = None
    refund_amount: Decimal | None = None
    method: str | None = None
    customer: dict[str, str] = field(default_factory=dict)
    reference: dict[str, str] = field(default_factory=dict)
    """``invoice_id`` and/or ``invoice_number`` (and ``order_id``) the payment names, from its notes."""
    error_code: str | None = None
    error_description: str | None = None


def apply_fact(payment: Payment | None, fact: PaymentFact) -> Payment:
    """The payment after ``fact`` (a new one on first sight); pure, so the rules are unit-tested."""
    if payment is None:
        payment = Payment(
            tenant_id=fact.tenant_id,
            provider=fact.provider,
            provider_payment_id=fact.provider_payment_id,
            amount=fact.amount,
            currency=fact.currency,
            method=fact.method,
            customer=dict(fact.customer),
            reference=dict(fact.reference),
            paid_at=fact.paid_at,
            provider_event_id=fact.provider_event_id,
        )
    if fact.status is not None:
        payment.report_status(
            fact.status,
            provider_event_id=fact.provider_event_id,
            occurred_at=fact.occurred_at,
            error_code=fact.error_code,
            error_description=fact.error_description,
        )
    if fact.refund_id is not None and fact.refund_amount is not None:
        payment.record_refund(
            fact.refund_id,
            fact.refund_amount,
            provider_event_id=fact.provider_event_id,
            occurred_at=fact.occurred_at,
        )
    return payment


class PaymentBook:
    """Command handling for deliveries and payments, beside the ledger's ``LedgerService``."""

    def __init__(self, service: LedgerService, inbox: Inbox) -> None:
        self.service = service
        self.inbox = inbox

    def close(self) -> None:
        self.inbox.close()

    # -- deliveries ------------------------------------------------------------------------------

    def record_delivery(
        self,
        tenant_id: UUID,
        provider: str,
        provider_event_id: str,
        event_type: str,
        body: str,
        received_at: datetime,
    ) -> bool:
        """Store a verified delivery; False when the same provider event was stored already
        (a duplicate, possibly concurrent: the event store refuses the second version 1)."""
        delivery_id = delivery_id_for(tenant_id, provider, provider_event_id)
        try:
            self.inbox.repository.get(delivery_id)
            return False
        except AggregateNotFoundError:
            pass
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        delivery = InboundWebhook(
            tenant_id=tenant_id,
            provider=provider,
            provider_event_id=provider_event_id,
            event_type=event_type,
            body=body,
            received_at=received_at,
        )
        try:
            self.inbox.save(delivery)
        except IntegrityError:
            return False
        except (OperationalError, PersistenceError) as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        return True

    # -- payments --------------------------------------------------------------------------------

    def apply(self, fact: PaymentFact) -> Payment:
        """Apply one gateway fact to its payment (creating it on first sight), then refresh the
        read model. Idempotent and order-tolerant (engine/domain/payment.py)."""
        payment_id = payment_id_for(fact.tenant_id, fact.provider, fact.provider_payment_id)
        for attempt in range(APPLY_ATTEMPTS):
            payment = apply_fact(self._load(payment_id), fact)
            if not payment.pending_events:
                self.project(payment)  # nothing new; the read model may still lag after a crash
                return payment
            try:
                self.service._save(payment)
            except IntegrityError:
                log.info("payment %s changed concurrently (attempt %d): reloading", payment_id, attempt + 1)
                continue
            self.project(payment)
            return payment
        raise db.DatabaseUnavailable(f"payment {payment_id} kept changing concurrently; retry later")

    def _load(self, payment_id: UUID) -> Payment | None:
        try:
            found: Payment = self.service.ledger.repository.get(payment_id)
        except AggregateNotFoundError:
            return None
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        return found

    def get_payment(self, tenant_id: UUID, payment_id: UUID) -> Payment | None:
        """The payment from the event store, only if it is this tenant's."""
        payment = self._load(payment_id)
        if not isinstance(payment, Payment) or payment.tenant_id != tenant_id:
            return None
        return payment

    def resolve_invoice(self, payment: Payment) -> Invoice | None:
        """The tenant's invoice the payment names: by ``invoice_id``, else by ``invoice_number``
        within the Indian financial year of the payment date (invoice numbers restart each year)."""
        reference = payment.reference
        candidates: list[UUID] = []
        if reference.get("invoice_id"):
            with suppress(ValueError):
                candidates.append(UUID(reference["invoice_id"]))
        if reference.get("invoice_number"):
            year = financial_year(today_in_india(payment.paid_at))
            candidates.append(invoice_id_for(payment.tenant_id, year, reference["invoice_number"]))
        for invoice_id in candidates:
            try:
                invoice: Any = self.service.ledger.repository.get(invoice_id)
            except AggregateNotFoundError:
                continue
            except OperationalError as exc:
                raise db.DatabaseUnavailable(str(exc)) from exc
            # Another tenant's invoice id is as good as none: tenants are strangers.
            if isinstance(invoice, Invoice) and invoice.tenant_id == payment.tenant_id:
                if invoice.currency != payment.currency:
                    continue
                return invoice
        return None

    def project(self, payment: Payment) -> None:
        """Write the payment's state into ``payment_register`` (never over a newer version)."""
        invoice = self.resolve_invoice(payment) if payment.reference else None
        document = payment_view(payment, invoice.id if invoice else None)
        customer = payment.customer
        customer_key = customer.get("customer_id") or customer.get("email") or customer.get("contact")
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                "INSERT INTO payment_register (payment_id, tenant_id, provider, provider_payment_id, status,"
                " amount, amount_refunded, amount_applied, currency, customer_key, invoice_id, paid_at,"
                " document, version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (payment_id) DO UPDATE SET status = EXCLUDED.status,"
                " amount_refunded = EXCLUDED.amount_refunded, amount_applied = EXCLUDED.amount_applied,"
                " invoice_id = EXCLUDED.invoice_id, document = EXCLUDED.document,"
                " version = EXCLUDED.version, updated_at = now()"
                " WHERE payment_register.version <= EXCLUDED.version",
                (
                    payment.id,
                    payment.tenant_id,
                    payment.provider,
                    payment.provider_payment_id,
                    payment.status,
                    payment.amount,
                    payment.amount_refunded,
                    payment.amount_applicable if invoice else Decimal(0),
                    payment.currency,
                    customer_key,
                    invoice.id if invoice else None,
                    payment.paid_at,
                    Jsonb(document),
                    payment.version,
                ),
            )


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")) if value == value.quantize(Decimal("0.01")) else value)


def payment_view(payment: Payment, invoice_id: UUID | None) -> dict[str, Any]:
    """A payment as the API shows it; money as decimal strings."""
    return {
        "id": str(payment.id),
        "provider": payment.provider,
        "provider_payment_id": payment.provider_payment_id,
        "status": payment.status,
        "gateway_status": payment.gateway_status,
        "amount": _money(payment.amount),
        "amount_refunded": _money(payment.amount_refunded),
        "currency": payment.currency,
        "method": payment.method,
        "customer": dict(payment.customer),
        "reference": dict(payment.reference),
        "invoice_id": str(invoice_id) if invoice_id else None,
        "failure": payment.failure,
        "refunds": sorted(payment.refunds.values(), key=lambda r: (r["refunded_at"], r["refund_id"])),
        "paid_at": payment.paid_at.astimezone(UTC).isoformat(),
        "version": payment.version,
    }


# -- queries (the read model) -----------------------------------------------------------------


def get_payment_row(conn: psycopg.Connection, tenant_id: UUID, payment_id: UUID) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT document FROM payment_register WHERE tenant_id = %s AND payment_id = %s",
            (tenant_id, payment_id),
        ).fetchone()
    if row is None:
        return None
    document: dict[str, Any] = row["document"]
    return document


def search_payments(
    conn: psycopg.Connection,
    tenant_id: UUID,
    *,
    status: str | None = None,
    provider: str | None = None,
    invoice_id: UUID | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    after: tuple[datetime, UUID] | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], tuple[datetime, UUID] | None]:
    """The tenant's payments by payment date (then id), filtered, one page at a time."""
    where = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    for column, value in (("status", status), ("provider", provider), ("invoice_id", invoice_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if date_from is not None:
        where.append("paid_at >= %s")
        params.append(datetime(date_from.year, date_from.month, date_from.day, tzinfo=UTC))
    if date_to is not None:
        where.append("paid_at < %s::date + 1")
        params.append(date_to)
    if after is not None:
        where.append("(paid_at, payment_id) > (%s, %s)")
        params.extend(after)
    params.append(limit + 1)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT document, paid_at, payment_id FROM payment_register WHERE "
            + " AND ".join(where)
            + " ORDER BY paid_at, payment_id LIMIT %s",
            params,
        ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    last = (rows[-1]["paid_at"], rows[-1]["payment_id"]) if more and rows else None
    return [r["document"] for r in rows], last


def payment_status_of(total: Decimal, paid: Decimal) -> str:
    """An invoice's payment status from its total and what is applied to it."""
    if paid <= 0:
        return "unpaid"
    if paid < total:
        return "partially_paid"
    return "paid" if paid == total else "overpaid"


def invoice_payment(
    conn: psycopg.Connection, tenant_id: UUID, invoice_id: UUID, total: Decimal
) -> dict[str, str]:
    """``payment_status``, ``amount_paid`` and ``outstanding`` of one invoice (decimal strings)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT coalesce(sum(amount_applied), 0) AS paid FROM payment_register"
            " WHERE tenant_id = %s AND invoice_id = %s",
            (tenant_id, invoice_id),
        ).fetchone()
    paid = Decimal(row["paid"] if row else 0)
    return {
        "payment_status": payment_status_of(total, paid),
        "amount_paid": _money(paid),
        "outstanding": _money(max(total - paid, Decimal(0))),
    }


def ageing_bucket(days: int) -> str:
    """The ageing bucket of an amount open for ``days`` since the invoice date."""
    if days <= 30:
        return "0_30"
    if days <= 60:
        return "31_60"
    if days <= 90:
        return "61_90"
    return "over_90"


def receivables(conn: psycopg.Connection, tenant_id: UUID, as_of: date) -> dict[str, Any]:
    """Open amounts of the tenant's issued invoices by customer, aged from the invoice date."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT r.invoice_id, r.number, r.invoice_date, r.buyer_name, r.buyer_gstin, r.total,"
            " coalesce(p.paid, 0) AS paid"
            " FROM invoice_register r LEFT JOIN ("
            "   SELECT invoice_id, sum(amount_applied) AS paid FROM payment_register"
            "   WHERE tenant_id = %s AND invoice_id IS NOT NULL GROUP BY invoice_id"
            " ) p ON p.invoice_id = r.invoice_id"
            " WHERE r.tenant_id = %s AND r.status = 'issued' AND r.document_type = 'invoice'"
            " AND r.invoice_date <= %s AND r.total > coalesce(p.paid, 0)"
            " ORDER BY r.buyer_name, r.invoice_date, r.number",
            (tenant_id, tenant_id, as_of),
        ).fetchall()
    customers: dict[tuple[str, str | None], dict[str, Any]] = {}
    totals = dict.fromkeys(AGEING_BUCKETS, Decimal(0))
    for row in rows:
        open_amount = Decimal(row["total"]) - Decimal(row["paid"])
        bucket = ageing_bucket((as_of - row["invoice_date"]).days)
        key = (row["buyer_name"], row["buyer_gstin"])
        customer = customers.setdefault(
            key,
            {
                "customer": {"name": row["buyer_name"], "gstin": row["buyer_gstin"]},
                "buckets": dict.fromkeys(AGEING_BUCKETS, Decimal(0)),
                "invoices": [],
            },
        )
        customer["buckets"][bucket] += open_amount
        totals[bucket] += open_amount
        customer["invoices"].append(
            {
                "invoice_id": str(row["invoice_id"]),
                "number": row["number"],
                "invoice_date": row["invoice_date"].isoformat(),
                "total": _money(Decimal(row["total"])),
                "amount_paid": _money(Decimal(row["paid"])),
                "outstanding": _money(open_amount),
                "days_open": (as_of - row["invoice_date"]).days,
                "bucket": bucket,
            }
        )
    items = []
    for customer in customers.values():
        buckets = customer["buckets"]
        items.append(
            {
                **customer,
                "buckets": {k: _money(v) for k, v in buckets.items()},
                "outstanding": _money(sum(buckets.values(), Decimal(0))),
            }
        )
    return {
        "as_of": as_of.isoformat(),
        "items": items,
        "totals": {
            "buckets": {k: _money(v) for k, v in totals.items()},
            "outstanding": _money(sum(totals.values(), Decimal(0))),
        },
    }
