"""Which ledger events become ``tally`` jobs (pure); docs/tally.md has the whole map.

* an Indian invoice issued -> ``post_sales`` (a Sales voucher); an Indian credit note -> ``post_credit_note``;
* a payment captured (``ledger.payment.v1``, money taken: created, authorised or failed payments are
  not income) -> ``post_receipt`` (a Receipt voucher), in real time: the seed's sync strategy puts
  payment transactions in real time;
* an expense approved (``ledger.expense.v1``) -> ``post_purchase`` (a Purchase voucher), and an expense
  paid -> ``post_payment`` (a Payment voucher). The seed syncs approvals hourly; posting each as it
  happens meets that bound. Both jobs are keyed by the expense, so its Payment never overtakes its
  Purchase.

Debit notes and Kenyan documents are not posted (docs/tally.md says why). The router keeps only
tenants whose ``tally`` integration is enabled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.tally.client import PROVIDER
from streams.connectors.jobs import Job

ISSUED = "ledgerflow.invoice.issued"
PAYMENT_STATUS_CHANGED = "ledgerflow.payment.status_changed"
EXPENSE_APPROVED = "ledgerflow.expense.approved"
EXPENSE_PAID = "ledgerflow.expense.paid"
EVENT_TYPES = frozenset({ISSUED, PAYMENT_STATUS_CHANGED, EXPENSE_APPROVED, EXPENSE_PAID})
POST_SALES = "post_sales"
POST_CREDIT_NOTE = "post_credit_note"
POST_RECEIPT = "post_receipt"
POST_PURCHASE = "post_purchase"
POST_PAYMENT = "post_payment"
# Queued by POST /v1/tally/vouchers (connectors/tally/posting.py), not by an event.
POST_VOUCHER = "post_voucher"
KINDS = (POST_SALES, POST_CREDIT_NOTE, POST_RECEIPT, POST_PURCHASE, POST_PAYMENT, POST_VOUCHER)
_EXPENSE_KINDS = {EXPENSE_APPROVED: POST_PURCHASE, EXPENSE_PAID: POST_PAYMENT}


def routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> Sequence[Job]:
    tenant = str(record["tenant_id"])
    if ce_type == ISSUED and (record.get("country") or "IN") == "IN":
        kind = {"invoice": POST_SALES, None: POST_SALES, "credit_note": POST_CREDIT_NOTE}.get(
            record.get("document_type")
        )
        if kind is None:
            return []
        return [
            Job.for_event(
                PROVIDER,
                kind,
                ce_id=ce_id,
                tenant_id=tenant,
                subject=str(record["invoice_id"]),
                payload={"invoice": dict(record)},
            )
        ]
    if ce_type == PAYMENT_STATUS_CHANGED and record.get("status") == "captured":
        return [
            Job.for_event(
                PROVIDER,
                POST_RECEIPT,
                ce_id=ce_id,
                tenant_id=tenant,
                subject=str(record["payment_id"]),
                payload={"payment_id": str(record["payment_id"])},
            )
        ]
    if ce_type in _EXPENSE_KINDS:
        return [
            Job.for_event(
                PROVIDER,
                _EXPENSE_KINDS[ce_type],
                ce_id=ce_id,
                tenant_id=tenant,
                subject=str(record["expense_id"]),
                payload={"expense_id": str(record["expense_id"])},
            )
        ]
    return []
