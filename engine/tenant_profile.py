"""What a tenant's profile may hold, as pydantic models: the contract of ``PATCH /v1/tenant``,
``POST /v1/tenants`` and ``ledgerflow tenants create|update``.

The legal identity (country, GSTIN, state, legal name) is accepted in a change only to be refused
with a precise error (``engine/domain/tenant.py``, LEGAL_IDENTITY_FIELDS): a client that sends it
learns why instead of being told the field is unknown.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from engine.commands import Address, Text
from engine.fields import SafeStr, text

Email = Annotated[SafeStr, text(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
# E.164 with an optional +, spaces and dashes as people write it.
Phone = Annotated[SafeStr, text(max_length=32, pattern=r"^\+?[0-9][0-9 -]{5,30}$")]


class Branch(BaseModel):
    """An additional place of business under the same GSTIN (CGST Act 2017, s.2(85))."""

    model_config = ConfigDict(extra="forbid")

    name: Text
    address: Address


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    role: Annotated[SafeStr, text(max_length=100)] | None = None
    email: Email | None = None
    phone: Phone | None = None


class ProfileChange(BaseModel):
    """A partial profile: only the fields sent change; a list sent replaces the stored list."""

    model_config = ConfigDict(extra="forbid")

    trade_name: Text | None = None
    address: Address | None = None
    branches: Annotated[list[Branch], Field(max_length=100)] | None = None
    contacts: Annotated[list[Contact], Field(max_length=50)] | None = None
    # The legal identity: refused when it differs from the registered one.
    legal_name: Text | None = None
    country: Annotated[SafeStr, text(max_length=2)] | None = None
    gstin: Annotated[SafeStr, text(max_length=15)] | None = None
    state: Annotated[SafeStr, text(max_length=20)] | None = None
    kra_pin: Annotated[SafeStr, text(max_length=20)] | None = None

    def fields(self) -> dict[str, Any]:
        """The change in the aggregate's own field names (``trade_name`` is the tenant's ``name``)."""
        sent = self.model_dump(exclude_unset=True, exclude_none=True)
        if "trade_name" in sent:
            sent["name"] = sent.pop("trade_name")
        if "address" in sent:
            sent["address"] = address_dict(self.address)
        return sent


def address_dict(address: Address | None) -> dict[str, Any] | None:
    """An address as stored in events: every key present, absent ones null (as Avro reads them)."""
    return address.model_dump() if address is not None else None


class NewTenant(ProfileChange):
    """``POST /v1/tenants``: a registration, with an optional profile beyond it."""

    trade_name: Text
    legal_name: Text
    country: Annotated[SafeStr, text(min_length=2, max_length=2)] = "IN"
