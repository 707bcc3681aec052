"""Every connector the engine knows, declared once (connectors/kit.py).

Adding a connector is one line here. Everything that lists connectors derives from ``CONNECTORS``:
the providers ``/v1/integrations`` accepts, connection tests, URL policies, job/retry/DLQ topics, the
router, the connector workers, rate limits (``LEDGERFLOW_<NAME>_RATE``) and the sandboxes
``ledgerflow run`` starts.
"""

from __future__ import annotations

from connectors import (
    bank,
    etims,
    fee_portal,
    gst_irp,
    gstin_lookup,
    gstn_returns,
    quickbooks,
    razorpay,
    sendgrid,
    stripe,
    super_accountant,
    tally,
    veekaart,
)
from connectors.kit import Connector
from engine import db, integrations
from engine.integrations import Provider

CONNECTORS: tuple[Connector, ...] = (
    gst_irp.CONNECTOR,
    gstin_lookup.CONNECTOR,
    etims.CONNECTOR,
    gstn_returns.CONNECTOR,
    razorpay.CONNECTOR,
    stripe.CONNECTOR,
    bank.CONNECTOR,
    sendgrid.CONNECTOR,
    quickbooks.CONNECTOR,
    veekaart.CONNECTOR,
    tally.CONNECTOR,
    super_accountant.CONNECTOR,
    fee_portal.CONNECTOR,
)

BY_NAME: dict[str, Connector] = {c.name: c for c in CONNECTORS}
if len(BY_NAME) != len(CONNECTORS):
    raise ValueError("two connectors share a name")


def connector(name: str) -> Connector:
    """The connector called ``name``; ``KeyError`` if there is none."""
    return BY_NAME[name]


def register() -> None:
    """Hand the connectors' facts to the engine: the providers ``/v1/integrations`` accepts and the
    tables each connector migrates. Every process's composition root calls this at start (the CLI,
    the API's ``create_app``, the test and bench harnesses); calling it again changes nothing."""
    integrations.register_providers(
        Provider(c.name, c.settings.title, c.settings.credential_fields) for c in CONNECTORS
    )
    db.register_migrations(m for c in CONNECTORS for m in c.migrations)
