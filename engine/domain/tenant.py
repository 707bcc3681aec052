"""The Tenant aggregate: a business that sends its finance and tax events to Ledgerflow.

Secrets never live in events: API keys are stored hashed in their own table (see
``engine/security/api_keys.py``) and the events only name the key id, so publishing a tenant's
history on Kafka cannot leak a credential. Provider credentials are likewise named, never valued.

Every change after registration names who made it (``changed_by``: ``api_key:<key id>``,
``operator:...``) and, for the profile, the old and the new value: the audit trail the seed asks
for is the aggregate's own history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from engine.errors import Conflict

# The provider whose ``enabled`` switch is the tenant's e-invoicing switch (engine/integrations.py).
EINVOICING_PROVIDER = "gst-irp"

# The legal identity of a registration. A GSTIN is issued to one legal person in one state (CGST
# Act 2017, s.25): a new GSTIN, state or country is a new registration, hence a new tenant.
# A Kenyan tenant's KRA PIN is its identity on eTIMS likewise (issue 10).
LEGAL_IDENTITY_FIELDS = ("country", "gstin", "state", "legal_name", "kra_pin")

# What a tenant may change about itself: ``name`` is the trade name printed on e-invoices.
PROFILE_FIELDS = ("name", "address", "branches", "contacts")


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
        # Added with Kenyan tenants (registered v3): a KE tenant's KRA PIN; None for the others and
        # in events stored before.
        kra_pin: str | None = None

    class ApiKeyRotated(Aggregate.Event):
        key_id: str
        previous_key_id: str | None
        previous_key_valid_until: datetime | None
        # Added with named keys: events stored before name neither the key nor who rotated it.
        name: str | None = None
        changed_by: str | None = None

    class ApiKeyAdded(Aggregate.Event):
        key_id: str
        name: str
        changed_by: str

    class ApiKeyRevoked(Aggregate.Event):
        key_id: str
        changed_by: str

    class ProfileUpdated(Aggregate.Event):
        # field -> {"old": ..., "new": ...}, only the fields whose value changed
        changes: dict[str, Any]
        changed_by: str

    class IntegrationSettingsChanged(Aggregate.Event):
        provider: str
        enabled: bool
        environment: str
        base_url: str
        credentials_changed: list[str]  # field names only, never a value
        changed_by: str

    # Users and roles (engine/users.py): the rows in ``tenant_users`` are what authentication reads;
    # these events are the audit trail of who created a user and who changed a role or disabled one.
    # No name or email on them: a user's personal data stays out of the public ledger.tenant.v1.
    class UserAdded(Aggregate.Event):
        user_id: str
        role: str
        changed_by: str

    class UserChanged(Aggregate.Event):
        user_id: str
        # field ("role", "disabled") -> {"old": ..., "new": ...}, only the fields whose value changed
        changes: dict[str, Any]
        changed_by: str

    # The operator let a consolidator user of another tenant read this one (engine/api/permissions.py):
    # recorded on the tenant being read, so its own history says who may see its books.
    class ReadGrantGiven(Aggregate.Event):
        user_id: str
        home_tenant_id: str
        changed_by: str

    class ReadGrantWithdrawn(Aggregate.Event):
        user_id: str
        home_tenant_id: str
        changed_by: str

    @event(Registered)
    def __init__(
        self,
        # Before the ``*`` on purpose: eventsourcing treats every keyword-only parameter as required,
        # default or not (domain.py, _spec_coerce_args_to_kwargs), and callers that predate Kenyan
        # tenants do not pass it.
        kra_pin: str | None = None,
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
        self.kra_pin = kra_pin
        self.address = address  # line1, line2, city, pincode: the seller address on e-invoices
        self.branches: list[dict[str, Any]] = []
        self.contacts: list[dict[str, Any]] = []
        # Live (unrevoked, not rotated away) API keys: key id -> name.
        self.api_keys: dict[str, str] = {api_key_id: "default"}

    # -- API keys -------------------------------------------------------------------------------

    def rotate_api_key(
        self,
        *,
        key_id: str,
        previous_key_id: str | None,
        previous_key_valid_until: datetime | None,
        name: str | None = None,
        changed_by: str | None = None,
    ) -> None:
        """Issue a new key; the previous one stays valid until ``previous_key_valid_until``."""
        self._rotate_api_key(
            key_id=key_id,
            previous_key_id=previous_key_id,
            previous_key_valid_until=previous_key_valid_until,
            name=name,
            changed_by=changed_by,
        )

    @event(ApiKeyRotated)
    def _rotate_api_key(
        self,
        *,
        key_id: str,
        previous_key_id: str | None,
        previous_key_valid_until: datetime | None,
        # Defaults for the rotations stored before named keys, which replay without these two.
        name: str | None = None,
        changed_by: str | None = None,
    ) -> None:
        keys = self.api_keys
        retired = keys.pop(previous_key_id, None) if previous_key_id else None
        keys[key_id] = name or retired or "default"
        if previous_key_id is None or previous_key_id == self.api_key_id:
            self.api_key_id = key_id

    def add_api_key(self, *, key_id: str, name: str, changed_by: str) -> None:
        """Add a named key beside the others."""
        if key_id in self.api_keys:
            raise DuplicateApiKey(f"key {key_id} already exists")
        self._add_api_key(key_id=key_id, name=name, changed_by=changed_by)

    @event(ApiKeyAdded)
    def _add_api_key(self, *, key_id: str, name: str, changed_by: str) -> None:
        self.api_keys[key_id] = name

    def revoke_api_key(self, *, key_id: str, changed_by: str) -> None:
        """Revoke one key; the tenant's last live key cannot go (nobody could then reach it)."""
        self.check_api_key(key_id)
        if len(self.api_keys) == 1:
            raise LastApiKey(f"key {key_id} is the tenant's only key: add another before revoking it")
        self._revoke_api_key(key_id=key_id, changed_by=changed_by)

    @event(ApiKeyRevoked)
    def _revoke_api_key(self, *, key_id: str, changed_by: str) -> None:
        keys = self.api_keys
        keys.pop(key_id, None)
        if self.api_key_id == key_id:
            self.api_key_id = next(iter(keys))

    def check_api_key(self, key_id: str) -> None:
        if key_id not in self.api_keys:
            raise UnknownApiKey(f"no API key {key_id}")

    # -- profile --------------------------------------------------------------------------------

    def update_profile(self, *, changed_by: str, **fields: Any) -> bool:
        """Change the trade name, address, branches or contacts; False when nothing changed.

        The legal identity (country, GSTIN, state, legal name) cannot change here."""
        identity = sorted(f for f in LEGAL_IDENTITY_FIELDS if f in fields and fields[f] != getattr(self, f))
        if identity:
            raise LegalIdentityImmutable(identity)
        unknown = sorted(set(fields) - set(PROFILE_FIELDS) - set(LEGAL_IDENTITY_FIELDS))
        if unknown:
            raise ValueError(f"not profile fields: {', '.join(unknown)}")
        changes = {
            f: {"old": getattr(self, f), "new": fields[f]}
            for f in PROFILE_FIELDS
            if f in fields and fields[f] != getattr(self, f)
        }
        if not changes:
            return False
        self._update_profile(changes=changes, changed_by=changed_by)
        return True

    @event(ProfileUpdated)
    def _update_profile(self, *, changes: dict[str, Any], changed_by: str) -> None:
        for field, change in changes.items():
            setattr(self, field, change["new"])

    # -- provider settings ------------------------------------------------------------------------

    @event(IntegrationSettingsChanged)
    def change_integration_settings(
        self,
        *,
        provider: str,
        enabled: bool,
        environment: str,
        base_url: str,
        credentials_changed: list[str],
        changed_by: str,
    ) -> None:
        """Record a provider settings change (the settings themselves live in ``integrations``)."""
        # The published ``einvoicing_enabled`` follows the e-invoicing provider's switch: routing
        # reads that switch, so the flag can never disagree with what actually happens.
        if provider == EINVOICING_PROVIDER:
            self.einvoicing_enabled = enabled

    # -- users and read grants ----------------------------------------------------------------------
    # Rules about users (known roles, unique emails) are checked by engine/users.py against the rows,
    # which are the source of truth for authentication; the aggregate records what happened.

    @event(UserAdded)
    def add_user(self, *, user_id: str, role: str, changed_by: str) -> None:
        """Record a new user of the tenant with its role."""

    @event(UserChanged)
    def change_user(self, *, user_id: str, changes: dict[str, Any], changed_by: str) -> None:
        """Record a user's role change or (re-)enabling, with the old and new values."""

    @event(ReadGrantGiven)
    def give_read_grant(self, *, user_id: str, home_tenant_id: str, changed_by: str) -> None:
        """Record that a consolidator of ``home_tenant_id`` may now read this tenant."""

    @event(ReadGrantWithdrawn)
    def withdraw_read_grant(self, *, user_id: str, home_tenant_id: str, changed_by: str) -> None:
        """Record that a consolidator of ``home_tenant_id`` may no longer read this tenant."""

    @property
    def tenant_id(self) -> UUID:
        return self.id

    @property
    def profile(self) -> dict[str, Any]:
        return {
            "tenant_id": str(self.id),
            "trade_name": self.name,
            "legal_name": self.legal_name,
            "country": self.country,
            "gstin": self.gstin,
            "state": self.state,
            "kra_pin": self.kra_pin,
            "address": self.address,
            "branches": self.branches,
            "contacts": self.contacts,
            "einvoicing_enabled": self.einvoicing_enabled,
            "created_at": self.created_on.isoformat(),
            "updated_at": self.modified_on.isoformat(),
        }


class TenantError(Conflict):
    """Base of the Tenant aggregate's rule violations."""


class LegalIdentityImmutable(TenantError):
    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            f"{', '.join(fields)} cannot change: they are the tenant's legal identity "
            "(a new GST registration is a new tenant)"
        )
        self.fields = fields


class UnknownApiKey(TenantError):
    pass


class DuplicateApiKey(TenantError):
    pass


class LastApiKey(TenantError):
    pass
