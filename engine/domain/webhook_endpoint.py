"""The WebhookEndpoint aggregate: where a tenant wants its ledger events POSTed, and which ones.

An endpoint is registered with a URL, the event types it wants and a body format; it can be changed,
paused and resumed, have its signing secret rotated, be disabled by the delivery worker (the receiver
answered 410 Gone, or failed for ``FAILING_DISABLE_AFTER``) and be deleted. The secret itself never
appears in an event: it is sealed in ``connector_secrets`` (engine/webhooks.py), so the event store
holds only the fact that it changed.

Event type filters (pure rules below) name CloudEvents types as the ledger topics carry them:
``ledgerflow.invoice.issued``, a whole aggregate ``ledgerflow.invoice.*``, or everything ``*``. The
short form of the seed "College Accounts" (``invoice.issued``) is accepted and stored in full.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal, get_args
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from engine.errors import InvalidInput

BodyFormat = Literal["cloudevents", "legacy"]
BODY_FORMATS: tuple[str, ...] = get_args(BodyFormat)
Status = Literal["active", "paused", "disabled", "deleted"]

MAX_EVENT_TYPES = 50
MAX_DESCRIPTION = 500
MAX_URL = 2000
# The old secret keeps signing beside the new one this long after a rotation, so receivers can
# switch over without dropping a delivery (issue 13; Standard Webhooks sends both signatures).
ROTATION_OVERLAP = timedelta(hours=24)
# Svix disables an endpoint that has failed for 5 days (platform.md "Webhooks"); issue 13 takes it.
FAILING_DISABLE_AFTER = timedelta(days=5)

_FULL = re.compile(r"ledgerflow\.[a-z][a-z0-9_]{0,40}\.(\*|[a-z][a-z0-9_]{0,60})")
_SHORT = re.compile(r"[a-z][a-z0-9_]{0,40}\.(\*|[a-z][a-z0-9_]{0,60})")


class WebhookEndpoint(Aggregate):
    """One tenant's outbound webhook endpoint."""

    class Registered(Aggregate.Created):
        tenant_id: UUID
        url: str
        event_types: list[str]
        description: str
        body_format: str

    @event(Registered)
    def __init__(
        self, *, tenant_id: UUID, url: str, event_types: list[str], description: str, body_format: str
    ) -> None:
        self.tenant_id = tenant_id
        self.url = url
        self.event_types = list(event_types)
        self.description = description
        self.body_format = body_format
        self.status: Status = "active"
        self.disabled_reason: str | None = None
        self.secret_rotated_at: datetime | None = None

    @event("Changed")
    def change(self, *, url: str, event_types: list[str], description: str, body_format: str) -> None:
        self.check_not_deleted()
        self.url = url
        self.event_types = list(event_types)
        self.description = description
        self.body_format = body_format

    @event("SecretRotated")
    def rotate_secret(self, *, rotated_at: datetime) -> None:
        self.check_not_deleted()
        self.secret_rotated_at = rotated_at

    @event("Paused")
    def pause(self) -> None:
        self.check_not_deleted()
        self.status = "paused"

    @event("Resumed")
    def resume(self) -> None:
        """Also re-enables an endpoint the worker disabled: the tenant says the receiver is back."""
        self.check_not_deleted()
        self.status = "active"
        self.disabled_reason = None

    @event("Disabled")
    def disable(self, *, reason: str) -> None:
        self.check_not_deleted()
        self.status = "disabled"
        self.disabled_reason = reason

    @event("Deleted")
    def delete(self) -> None:
        self.check_not_deleted()
        self.status = "deleted"

    def check_not_deleted(self) -> None:
        if self.status == "deleted":
            raise EndpointDeleted(f"webhook endpoint {self.id} was deleted")


class EndpointDeleted(InvalidInput):
    """A change to an endpoint that no longer exists."""


class InvalidEndpoint(InvalidInput):
    """An endpoint field the rules refuse; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_event_types(types: Sequence[str]) -> list[str]:
    """The filters in their full form, de-duplicated in the given order."""
    if not types:
        raise InvalidEndpoint("event_types", "event_types needs at least one type (or '*' for all)")
    if len(types) > MAX_EVENT_TYPES:
        raise InvalidEndpoint("event_types", f"at most {MAX_EVENT_TYPES} event types")
    clean: list[str] = []
    for given in types:
        # fullmatch: ``$`` alone would let a trailing newline through.
        if given == "*" or _FULL.fullmatch(given):
            full = given
        elif _SHORT.fullmatch(given):
            full = f"ledgerflow.{given}"
        else:
            raise InvalidEndpoint(
                "event_types",
                f"{given[:80]!r} is not an event type: use e.g. ledgerflow.invoice.issued,"
                " ledgerflow.invoice.* or *",
            )
        if full not in clean:
            clean.append(full)
    return clean


def check_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise InvalidEndpoint("description", f"description: at most {MAX_DESCRIPTION} characters")
    if any((ord(c) < 32 and c not in "\t\n") or ord(c) == 127 for c in text):
        raise InvalidEndpoint("description", "description must not contain control characters")
    return text


def check_format(body_format: str) -> str:
    if body_format not in BODY_FORMATS:
        raise InvalidEndpoint("format", f"format must be one of {', '.join(BODY_FORMATS)}")
    return body_format


def wants(event_types: Iterable[str], ce_type: str) -> bool:
    """Does an endpoint with these filters want an event of ``ce_type``?"""
    for wanted in event_types:
        if wanted == "*" or wanted == ce_type:
            return True
        if wanted.endswith(".*") and ce_type.startswith(wanted[:-1]):
            return True
    return False


def covered_by(event_types: Iterable[str], known: Iterable[str]) -> list[str]:
    """The filters that match none of the ``known`` event types (typos, to refuse)."""
    known = list(known)
    return [t for t in event_types if not any(wants([t], k) for k in known)]


def should_disable(failing_since: datetime | None, now: datetime) -> bool:
    """An endpoint failing without a single success since ``failing_since`` is disabled after 5 days."""
    return failing_since is not None and now - failing_since >= FAILING_DISABLE_AFTER
