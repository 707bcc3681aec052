"""Fee collections for a college (a tenant): recording receipts from the fee portal (FeeCollection
events), listing them for a period in the seed's shape, and reconciling them against the bank's
deposits (docs/fees.md).

The read model is ``fee_collections`` (engine/fees.sql), written right after each collection is
stored; bank deposits are the credit lines of ``bank_transactions`` (the bank connector's read model of
``ledger.bank_transaction.v1``, written as statements are imported). Every query is scoped to one
tenant.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

import psycopg
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, OperationalError
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from engine import db
from engine.application import LedgerService, ServiceError
from engine.commands import Money
from engine.domain.fee_collection import FeeCollection, collection_id_for
from engine.errors import Conflict, InvalidInput
from engine.fee_reconciliation_rules import Collection, FeeReconciliation, reconcile_fees
from engine.fields import IsoDate, SafeStr, text
from engine.reconciliation_rules import BankLine

ZERO = Decimal("0")
# A period longer than this is refused: a reconciliation is a month or a quarter, and the whole
# period is matched in memory.
MAX_PERIOD_DAYS = 400
MAX_TOLERANCE_DAYS = 31


class ReceiptReused(ServiceError, Conflict):
    """The receipt number names a collection already recorded with different content."""

    code = "receipt_reused"


class InvalidCursor(ServiceError, InvalidInput):
    code = "invalid_cursor"


class InvalidPeriod(ServiceError, InvalidInput):
    code = "invalid_period"


@dataclass(frozen=True)
class CollectionInput:
    """``POST /v1/fee-collections`` after validation."""

    receipt_number: str
    student_id: str
    student_name: str
    amount: Decimal
    payment_mode: str
    payment_date: date
    payment_reference: str | None
    fee_type: str
    academic_year: str
    semester: int | None


PaymentMode = Literal["upi", "card", "netbanking", "neft", "rtgs", "imps", "cash", "cheque", "demand_draft"]


class CollectionBody(BaseModel):
    """The seed's fee collection, plus the transfer's own reference for the reconciliation."""

    model_config = ConfigDict(extra="forbid")

    receipt_number: Annotated[
        SafeStr, text(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9/_.-]*$")
    ]
    student_id: Annotated[SafeStr, text(min_length=1, max_length=40)] | StrictInt
    student_name: Annotated[SafeStr, text(min_length=1, max_length=200)]
    amount: Money = Field(description="Rupees, a decimal string with at most two places; more than zero.")
    payment_mode: PaymentMode
    payment_date: IsoDate
    payment_reference: Annotated[SafeStr, text(min_length=1, max_length=60)] | None = Field(
        default=None, description="UPI/IMPS reference, UTR or cheque number: what the bank statement shows."
    )
    fee_type: Annotated[SafeStr, text(min_length=1, max_length=40)]
    academic_year: Annotated[SafeStr, text(min_length=7, max_length=7, pattern=r"^[0-9]{4}-[0-9]{2}$")]
    semester: Annotated[StrictInt, Field(ge=1, le=12)] | None = None

    @field_validator("amount")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("a fee collected is more than zero")
        return value

    def as_input(self) -> CollectionInput:
        return CollectionInput(
            receipt_number=self.receipt_number,
            student_id=str(self.student_id),
            student_name=self.student_name,
            amount=self.amount,
            payment_mode=self.payment_mode,
            payment_date=self.payment_date,
            payment_reference=self.payment_reference,
            fee_type=self.fee_type,
            academic_year=self.academic_year,
            semester=self.semester,
        )


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def collection_view(c: FeeCollection | dict[str, Any]) -> dict[str, Any]:
    """The seed's fields (money as a decimal string), plus our id, currency and the transfer's reference."""
    row: dict[str, Any] = c if isinstance(c, dict) else {**vars(c), "collection_id": c.id}

    def get(key: str) -> Any:
        return row[key]

    cid = row["collection_id"]
    return {
        "id": str(cid),
        "receipt_number": get("receipt_number"),
        "student_id": get("student_id"),
        "student_name": get("student_name"),
        "amount": money(get("amount")),
        "currency": get("currency"),
        "payment_mode": get("payment_mode"),
        "payment_date": get("payment_date").isoformat(),
        "payment_reference": get("payment_reference"),
        "fee_type": get("fee_type"),
        "academic_year": get("academic_year"),
        "semester": get("semester"),
    }


def encode_cursor(day: date, receipt: str) -> str:
    return base64.urlsafe_b64encode(f"{day.isoformat()}|{receipt}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[date, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        day, _, receipt = raw.partition("|")
        return date.fromisoformat(day), receipt
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("cursor: not a cursor this endpoint returned", {"cursor": cursor[:100]}) from exc


def check_period(from_date: date, to_date: date) -> None:
    if to_date < from_date:
        raise InvalidPeriod(
            "to_date is before from_date",
            {"from_date": from_date.isoformat(), "to_date": to_date.isoformat()},
        )
    if (to_date - from_date).days > MAX_PERIOD_DAYS:
        raise InvalidPeriod(
            f"a period is at most {MAX_PERIOD_DAYS} days",
            {"from_date": from_date.isoformat(), "to_date": to_date.isoformat()},
        )


class FeeBook:
    """Command handling and queries for fee collections, beside the ledger's ``LedgerService``."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service

    def record(
        self, tenant_id: UUID, given: CollectionInput, recorded_by: str, source: str = "api"
    ) -> tuple[dict[str, Any], bool]:
        """Record one collection; (its view, True when new). The same receipt with the same content
        again is the same collection (False); with other content, :class:`ReceiptReused`."""
        existing = self._load(tenant_id, collection_id_for(tenant_id, given.receipt_number))
        if existing is not None:
            return self._same_or_refuse(existing, given), False
        collection = FeeCollection(
            tenant_id=tenant_id,
            receipt_number=given.receipt_number,
            student_id=given.student_id,
            student_name=given.student_name,
            amount=given.amount,
            currency="INR",
            payment_mode=given.payment_mode,
            payment_date=given.payment_date,
            payment_reference=given.payment_reference,
            fee_type=given.fee_type,
            academic_year=given.academic_year,
            semester=given.semester,
            source=source,
            recorded_by=recorded_by,
        )
        try:
            self.service._save(collection)
        except IntegrityError:
            # Recorded concurrently under the same receipt number: that one is the collection.
            raced = self._load(tenant_id, collection.id)
            if raced is None:
                raise
            return self._same_or_refuse(raced, given), False
        self.project(collection)
        return collection_view(collection), True

    def _same_or_refuse(self, existing: FeeCollection, given: CollectionInput) -> dict[str, Any]:
        same = (
            existing.amount == given.amount
            and existing.payment_date == given.payment_date
            and existing.student_id == given.student_id
            and existing.fee_type == given.fee_type
            and existing.payment_mode == given.payment_mode
            and existing.payment_reference == given.payment_reference
        )
        if not same:
            raise ReceiptReused(
                f"receipt {existing.receipt_number!r} is already a recorded collection with other details",
                {"receipt_number": existing.receipt_number, "collection_id": str(existing.id)},
            )
        self.project(existing)  # the read model may lag after a crash between the two writes
        return collection_view(existing)

    def _load(self, tenant_id: UUID, collection_id: UUID) -> FeeCollection | None:
        try:
            found: Any = self.service.ledger.repository.get(collection_id)
        except AggregateNotFoundError:
            return None
        except OperationalError as exc:
            raise db.DatabaseUnavailable(str(exc)) from exc
        if not isinstance(found, FeeCollection) or found.tenant_id != tenant_id:
            return None
        return found

    def project(self, c: FeeCollection) -> None:
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                "INSERT INTO fee_collections (collection_id, tenant_id, receipt_number, student_id,"
                " student_name, amount, currency, payment_mode, payment_date, payment_reference, fee_type,"
                " academic_year, semester, source, recorded_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (collection_id) DO NOTHING",
                (
                    c.id,
                    c.tenant_id,
                    c.receipt_number,
                    c.student_id,
                    c.student_name,
                    c.amount,
                    c.currency,
                    c.payment_mode,
                    c.payment_date,
                    c.payment_reference,
                    c.fee_type,
                    c.academic_year,
                    c.semester,
                    c.source,
                    c.recorded_by,
                ),
            )

    # -- queries -------------------------------------------------------------------------------------

    def page(
        self, tenant_id: UUID, from_date: date, to_date: date, cursor: str | None, limit: int
    ) -> dict[str, Any]:
        """The period's collections by (payment date, receipt number), a page at a time, and the
        seed's summary over the whole period."""
        check_period(from_date, to_date)
        where = "tenant_id = %s AND payment_date BETWEEN %s AND %s"
        params: list[Any] = [tenant_id, from_date, to_date]
        after = ""
        page_params = list(params)
        if cursor:
            day, receipt = decode_cursor(cursor)
            after = " AND (payment_date, receipt_number) > (%s, %s)"
            page_params += [day, receipt]
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT * FROM fee_collections WHERE {where}{after}"
                " ORDER BY payment_date, receipt_number LIMIT %s",
                [*page_params, limit + 1],
            ).fetchall()
            total = cur.execute(
                f"SELECT coalesce(sum(amount), 0) AS total, count(*) AS n FROM fee_collections WHERE {where}",
                params,
            ).fetchone()
        assert total is not None
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        return {
            "data": [collection_view(r) for r in rows],
            "summary": {
                "total_collected": money(Decimal(total["total"])),
                "transaction_count": int(total["n"]),
            },
            "period": {"from_date": from_date.isoformat(), "to_date": to_date.isoformat()},
            "next_cursor": encode_cursor(last["payment_date"], last["receipt_number"])
            if more and last
            else None,
        }

    def reconcile(
        self,
        tenant_id: UUID,
        from_date: date,
        to_date: date,
        *,
        account: str | None,
        tolerance_days: int,
        requested_by: str,
    ) -> dict[str, Any]:
        """Reconcile the period's collections against the account's (or every account's) credits
        from ``from_date`` to ``tolerance_days`` after ``to_date``; store and return the result."""
        check_period(from_date, to_date)
        tolerance = timedelta(days=tolerance_days)
        with db.transaction(self.service.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            collections = cur.execute(
                "SELECT * FROM fee_collections WHERE tenant_id = %s AND payment_date BETWEEN %s AND %s"
                " ORDER BY payment_date, receipt_number",
                (tenant_id, from_date, to_date),
            ).fetchall()
            deposits = self._deposits(cur, tenant_id, from_date, to_date + tolerance, account)
        result = reconcile_fees(
            [
                Collection(
                    collection_id=str(r["collection_id"]),
                    receipt_number=r["receipt_number"],
                    student_id=r["student_id"],
                    student_name=r["student_name"],
                    amount=r["amount"],
                    currency=r["currency"],
                    payment_date=r["payment_date"],
                    fee_type=r["fee_type"],
                    payment_reference=r["payment_reference"],
                )
                for r in collections
            ],
            [
                BankLine(
                    line_id=str(d["transaction_id"]),
                    account=d["account"],
                    value_date=d["value_date"],
                    amount=d["amount"],
                    currency=d["currency"],
                    reference=d["reference"],
                    description=d["description"],
                )
                for d in deposits
            ],
            tolerance=tolerance,
            period_end=to_date,
        )
        reconciliation_id = uuid4()
        document = report_document(
            reconciliation_id,
            result,
            {str(r["collection_id"]): collection_view(r) for r in collections},
            {str(d["transaction_id"]): deposit_view(d) for d in deposits},
            from_date=from_date,
            to_date=to_date,
            account=account,
            tolerance_days=tolerance_days,
        )
        with db.transaction(self.service.pool) as conn:
            conn.execute(
                "INSERT INTO fee_reconciliations (reconciliation_id, tenant_id, from_date, to_date, result,"
                " requested_by) VALUES (%s, %s, %s, %s, %s, %s)",
                (reconciliation_id, tenant_id, from_date, to_date, Jsonb(document), requested_by),
            )
        return document

    @staticmethod
    def _deposits(
        cur: psycopg.Cursor[Any], tenant_id: UUID, start: date, end: date, account: str | None
    ) -> list[dict[str, Any]]:
        query = (
            "SELECT * FROM bank_transactions"
            " WHERE tenant_id = %s AND value_date BETWEEN %s AND %s AND amount > 0"
        )
        params: list[Any] = [tenant_id, start, end]
        if account is not None:
            query += " AND account = %s"
            params.append(account)
        return list(cur.execute(query + " ORDER BY value_date, statement_id, position", params).fetchall())

    def stored(self, tenant_id: UUID, reconciliation_id: UUID) -> dict[str, Any] | None:
        with db.transaction(self.service.pool) as conn:
            row = conn.execute(
                "SELECT result FROM fee_reconciliations WHERE tenant_id = %s AND reconciliation_id = %s",
                (tenant_id, reconciliation_id),
            ).fetchone()
        return None if row is None else dict(row[0] if isinstance(row, tuple) else row["result"])


def deposit_view(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(d["transaction_id"]),
        "account": d["account"],
        "value_date": d["value_date"].isoformat(),
        "amount": money(d["amount"]),
        "currency": d["currency"],
        "reference": d["reference"],
        "description": d["description"],
    }


_MESSAGES = {
    "amount_differs": "the deposit names the collection but its amount differs",
    "date_outside_tolerance": "the deposit names the collection but was banked outside the date tolerance",
    "duplicate_deposit": "a second deposit names a collection another deposit already settled",
    "duplicate_collection": (
        "receipts for the same student, fee type, amount and day: one payment receipted twice?"
    ),
}


def report_document(
    reconciliation_id: UUID,
    result: FeeReconciliation,
    collections: dict[str, dict[str, Any]],
    deposits: dict[str, dict[str, Any]],
    *,
    from_date: date,
    to_date: date,
    account: str | None,
    tolerance_days: int,
) -> dict[str, Any]:
    """The answer of ``POST /v1/reconciliation/fees``: the seed's totals and status, and every line."""
    matched_total = sum((Decimal(collections[p.collection_id]["amount"]) for p in result.matched), ZERO)
    unmatched_c = sum((Decimal(collections[i]["amount"]) for i in result.unmatched_collections), ZERO)
    unmatched_d = sum((Decimal(deposits[i]["amount"]) for i in result.unmatched_deposits), ZERO)
    return {
        "reconciliation_id": str(reconciliation_id),
        "status": "completed",
        "reconciliation_status": "matched" if result.balanced else "discrepancies",
        "period": {"from_date": from_date.isoformat(), "to_date": to_date.isoformat()},
        "bank_account": account,
        "tolerance_days": tolerance_days,
        "fee_collections_total": money(result.collections_total),
        "bank_deposits_total": money(result.deposits_total),
        "totals": {
            "collections": len(collections),
            "deposits_considered": len(deposits),
            "matched": len(result.matched),
            "matched_amount": money(matched_total),
            "unmatched_collections": len(result.unmatched_collections),
            "unmatched_collections_amount": money(unmatched_c),
            "unmatched_deposits": len(result.unmatched_deposits),
            "unmatched_deposits_amount": money(unmatched_d),
            "discrepancies": len(result.discrepancies),
            "difference": money(result.deposits_total - result.collections_total),
        },
        "matched": [
            {
                "collection": collections[p.collection_id],
                "deposit": deposits[p.deposit_id],
                "method": p.method,
                "days_apart": p.days_apart,
            }
            for p in result.matched
        ],
        "discrepancies": [
            {
                "kind": d.kind,
                "message": _MESSAGES[d.kind],
                "collections": [collections[i] for i in d.collection_ids],
                "deposits": [deposits[i] for i in d.deposit_ids],
                "collection_amount": money(d.collection_amount),
                "deposit_amount": money(d.deposit_amount),
                "difference": money(d.difference),
                "days_apart": d.days_apart,
            }
            for d in result.discrepancies
        ],
        "unmatched_collections": [collections[i] for i in result.unmatched_collections],
        "unmatched_deposits": [deposits[i] for i in result.unmatched_deposits],
        "verified_at": datetime.now(UTC).isoformat(),
    }
