"""Commands upstream systems send, as pydantic models: the contract of ``POST /v1/invoices`` and of
the ``ingest.invoice.v1`` topic (whose body is the same JSON).

Validation here is about shape (types, lengths, digits); tax rules are checked by the pure code in
``engine/tax`` and reported with the same field paths.
"""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# Quantities and unit prices carry 3 decimals on the IRP; money amounts 2. Bounded digits keep a
# hostile "1e999999" from turning into a giant Decimal computation.
Quantity = Annotated[Decimal, Field(max_digits=15, decimal_places=3, allow_inf_nan=False)]
UnitPrice = Annotated[Decimal, Field(max_digits=15, decimal_places=3, allow_inf_nan=False)]
Money = Annotated[Decimal, Field(max_digits=15, decimal_places=2, allow_inf_nan=False)]
Rate = Annotated[Decimal, Field(max_digits=5, decimal_places=3, allow_inf_nan=False)]


class Address(BaseModel):
    model_config = ConfigDict(extra="ignore")

    line1: Text
    line2: Annotated[str, StringConstraints(max_length=200)] | None = None
    city: Text
    pincode: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{5}$")] | None = None


class Party(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Text
    gstin: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None = None
    state: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=3)]
    address: Address | None = None


class InvoiceLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    description: Text
    hsn: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10)]
    quantity: Quantity
    unit: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8)]
    unit_price: UnitPrice
    discount: Money = Decimal("0")
    gst_rate: Rate | None = None
    gst_rate_reason: Annotated[str, StringConstraints(max_length=200)] | None = None


SupplyTypeCode = Literal["B2B", "B2C", "SEZWP", "SEZWOP", "EXPWP", "EXPWOP"]


class IssueInvoice(BaseModel):
    """Issue a GST invoice. Extra optional fields are ignored so upstream systems can send more."""

    model_config = ConfigDict(extra="ignore")

    number: Annotated[
        str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z1-9][A-Za-z0-9/-]{0,15}$")
    ]
    date: date
    buyer: Party
    place_of_supply: Annotated[str, StringConstraints(strip_whitespace=True, max_length=3)] | None = None
    supply_type: SupplyTypeCode | None = None
    lines: Annotated[list[InvoiceLine], Field(min_length=1, max_length=1000)]

    def fingerprint(self) -> str:
        """A hash of the command's meaning, to tell a retried request from a different one."""
        return hashlib.sha256(
            orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()


CancellationReason = Literal["duplicate", "data_entry_mistake", "order_cancelled", "other"]


class CancelInvoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: CancellationReason
    remark: Annotated[str, StringConstraints(max_length=100)] | None = None
