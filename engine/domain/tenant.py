"""The Tenant aggregate: a business that sends its finance and tax events to Ledgerflow.

Secrets never live in events: API keys are stored hashed in their own table (see
``engine/security/api_keys.py``) and the events only name the key id, so publishing a tenant's
history on Kafka cannot leak a credential.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event


class Tenant(Aggregate):
    """A registered business, identified by its tenant id."""

    class Registered(Aggregate.Created):
        name: str
        legal_name: str
        country: str
        gstin: str | None
        state: str | None
        einvoicing_enabled: bool
        api_key_id: str
        # Added after the first release: events stored before have no address.
        address: dict[str, Any] | None = None

    class ApiKeyRotated(Aggregate.Event):
        key_id: str
        previous_key_id: str | None
        previous_key_valid_until: datetime | None

    @event(Registered)
    def __init__(
        self,
        *,
        name: str,
        legal_name: str,
        country: str,
        gstin: str | None,
        state: str | None,
        einvoicing_enabled: bool,
        api_key_id: str,
        address: dict[str, Any] | None,
    ) -> None:
        self.name = name
        self.legal_name = legal_name
        self.country = country
        self.gstin = gstin
        self.state = state
        self.einvoicing_enabled = einvoicing_enabled
        self.api_key_id = api_key_id
        self.address = address  # line1, line2, city, pincode: the seller address on e-invoices

    @event(ApiKeyRotated)
    def rotate_api_key(
        self, *, key_id: str, previous_key_id: str | None, previous_key_valid_until: datetime | None
    ) -> None:
        """Issue a new key; the previous one stays valid until ``previous_key_valid_until``."""
        self.api_key_id = key_id

    @property
    def tenant_id(self) -> UUID:
        return self.id
