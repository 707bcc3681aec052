"""The AuditEntry aggregate: one thing a tenant's user or system says happened, written to the audit
log through ``POST /v1/audit-logs`` (issue 14, seed "College Accounts").

An entry is recorded once and never changes. Who recorded it is part of the event (so it is covered
by the event store's hash chain, engine/event_chain.py) and comes from the authenticated principal,
never from the request body. The client's IP and user agent are not in the event: they are kept in
the audit store beside it (engine/attribution.py).
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event


class AuditEntry(Aggregate):
    """An entry of a tenant's audit log."""

    class Recorded(Aggregate.Created):
        tenant_id: str
        action: str
        entity_type: str
        entity_id: str
        # The client's JSON object as JSON text: as a dict, keys such as "_type_" would be read back
        # by eventsourcing's transcoder as its own type tags (and fail, or change the value).
        details: str | None
        actor: str
        role: str | None
        user_id: str | None

    @event(Recorded)
    def __init__(
        self,
        *,
        tenant_id: str,
        action: str,
        entity_type: str,
        entity_id: str,
        details: str | None,
        actor: str,
        role: str | None,
        user_id: str | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.action = action
        self.entity_type = entity_type
        self.entity_id = entity_id
        self.details = details
        self.actor = actor
        self.role = role
        self.user_id = user_id

    @property
    def tenant(self) -> UUID:
        return UUID(self.tenant_id)
