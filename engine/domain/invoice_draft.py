"""The InvoiceDraft aggregate: an Indian GST invoice being prepared (issue 13: a shop order becomes a
draft, someone checks it and issues it later). Nothing about Kafka or HTTP.

A draft has no number. An issued invoice's id is derived from its number
(``engine.domain.invoice.invoice_id_for``), which is what keeps numbers unique, so a draft cannot be
that aggregate before it has one: it is its own aggregate, and issuing it stores the ordinary
``Invoice.Issued`` (a new Invoice, every consumer sees a normal invoice) together with this
aggregate's ``DraftIssued`` naming it. Anything that loads an invoice by id (cancel, notes, IRN,
eTIMS) therefore never finds a draft: drafts never reach a tax authority.

The draft keeps the tax computed as for an invoice (``document``) so the shop and the user see its
totals; issuing recomputes everything on the issue date.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import Conflict

DRAFT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/invoice-draft")

# The invoice fields a draft shows, as the Invoice aggregate names them (so the invoice views work
# on a draft too): computed by the same rules as an invoice.
DOCUMENT_FIELDS = (
    "financial_year",
    "invoice_date",
    "currency",
    "supply_type",
    "seller",
    "buyer",
    "place_of_supply",
    "intra_state",
    "lines",
    "totals",
    "reverse_charge",
    "ecommerce_gstin",
    "export",
)


def draft_id_for(tenant_id: UUID, source: str, external_ref: str) -> UUID:
    """The stable id of the draft made from ``external_ref`` (a shop's order id, an Idempotency-Key)
    of ``source``: the same reference always names the same draft, so a redelivered order cannot
    make a second one."""
    return uuid5(DRAFT_ID_NAMESPACE, f"{tenant_id}/{source}/{external_ref}")


class DraftStatus:
    DRAFT = "draft"
    ISSUED = "issued"
    DISCARDED = "discarded"


class InvoiceDraft(Aggregate):
    """An invoice without a number yet, owned by one tenant."""

    # Set from ``document`` (DOCUMENT_FIELDS) by _replace.
    financial_year: str
    invoice_date: date
    currency: str
    supply_type: str
    seller: dict[str, Any]
    buyer: dict[str, Any]
    place_of_supply: str
    intra_state: bool
    lines: list[dict[str, Any]]
    totals: dict[str, Decimal]
    reverse_charge: bool
    ecommerce_gstin: str | None
    export: dict[str, Any] | None

    class Drafted(Aggregate.Created):
        tenant_id: UUID
        source: str
        external_ref: str | None
        request_hash: str
        command: dict[str, Any]  # the DraftInvoice as sent (JSON form): what issuing re-validates
        document: dict[str, Any]  # DOCUMENT_FIELDS as computed on the draft's date
        traceparent: str | None

    class DraftUpdated(Aggregate.Event):
        request_hash: str
        command: dict[str, Any]
        document: dict[str, Any]
        traceparent: str | None
        tenant_id: UUID

    class DraftDiscarded(Aggregate.Event):
        reason: str | None
        traceparent: str | None
        tenant_id: UUID

    class DraftIssued(Aggregate.Event):
        """Stored in the same event-store transaction as the issued invoice's ``Issued``."""

        invoice_id: str
        number: str
        financial_year: str
        traceparent: str | None
        tenant_id: UUID

    @staticmethod
    def create_id(*, tenant_id: UUID, source: str, external_ref: str | None, **_: Any) -> UUID:
        return draft_id_for(tenant_id, source, external_ref) if external_ref else uuid4()

    @event(Drafted)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        source: str,
        external_ref: str | None,
        request_hash: str,
        command: dict[str, Any],
        document: dict[str, Any],
        traceparent: str | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.source = source
        self.external_ref = external_ref
        self.traceparent = traceparent
        self.status = DraftStatus.DRAFT
        # What the invoice views read on an invoice, none of which a draft has yet.
        self.number: str | None = None
        self.idempotency_key: str | None = None
        self.country = "IN"
        self.document_type = "invoice"
        self.issued_invoice: dict[str, str] | None = None
        self.discard_reason: str | None = None
        # What a retry of the creating request must match (an Idempotency-Key's body).
        self.created_request_hash = request_hash
        self._replace(request_hash, command, document)

    def _replace(self, request_hash: str, command: dict[str, Any], document: dict[str, Any]) -> None:
        self.request_hash = request_hash
        self.command = command
        for name in DOCUMENT_FIELDS:
            setattr(self, name, document.get(name))

    def update(
        self, *, request_hash: str, command: dict[str, Any], document: dict[str, Any], traceparent: str | None
    ) -> None:
        """Replace the draft's fields (PATCH); only an open draft changes."""
        self.check_open("changed")
        self._updated(
            request_hash=request_hash,
            command=command,
            document=document,
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )

    @event(DraftUpdated)
    def _updated(
        self,
        *,
        request_hash: str,
        command: dict[str, Any],
        document: dict[str, Any],
        traceparent: str | None,
        tenant_id: UUID,
    ) -> None:
        self._replace(request_hash, command, document)

    def discard(self, *, reason: str | None, traceparent: str | None) -> bool:
        """Throw the draft away; discarding a discarded draft again changes nothing (False)."""
        if self.status == DraftStatus.DISCARDED:
            return False
        self.check_open("discarded")
        self._discarded(reason=reason, traceparent=traceparent, tenant_id=self.tenant_id)
        return True

    @event(DraftDiscarded)
    def _discarded(self, *, reason: str | None, traceparent: str | None, tenant_id: UUID) -> None:
        self.status = DraftStatus.DISCARDED
        self.discard_reason = reason

    def issue(self, *, invoice_id: UUID, number: str, financial_year: str, traceparent: str | None) -> None:
        """Record that the draft became invoice ``invoice_id`` (saved with that invoice)."""
        self.check_open("issued")
        self._issued(
            invoice_id=str(invoice_id),
            number=number,
            financial_year=financial_year,
            traceparent=traceparent,
            tenant_id=self.tenant_id,
        )

    @event(DraftIssued)
    def _issued(
        self, *, invoice_id: str, number: str, financial_year: str, traceparent: str | None, tenant_id: UUID
    ) -> None:
        self.status = DraftStatus.ISSUED
        self.issued_invoice = {"invoice_id": invoice_id, "number": number, "financial_year": financial_year}

    def check_open(self, change: str) -> None:
        if self.status != DraftStatus.DRAFT:
            raise DraftNotOpen(f"the draft is {self.status}: it cannot be {change}")


class DraftError(Conflict):
    """Base of the draft's domain errors."""


class DraftNotOpen(DraftError):
    """An issued or discarded draft cannot change any more."""
