"""The college fee portal, provider name ``fee-portal``: fee collections in, by signed webhook.

The portal delivers each receipted fee to ``POST /v1/hooks/fee-portal/{tenant_id}`` (``webhooks``
verifies and handles it; the generic receiver in connectors/hooks.py stores it once). The same fees
may also be sent with ``POST /v1/fee-collections`` (docs/fees.md). Ledgerflow never calls the portal,
so there is no client and no sandbox; the connection test only checks that a secret is configured.
"""

from __future__ import annotations

import os

import httpx

from connectors.errors import NeedsAttentionError
from connectors.fee_portal.webhooks import HOOKS, PROVIDER
from connectors.kit import Connector, Credential, SettingsSchema
from engine.integrations import IntegrationSettings
from engine.security.egress import EndpointPolicy

SETTINGS = SettingsSchema(
    title="College fee portal (fee collections by signed webhook)",
    credentials=(
        Credential(
            "webhook_secret",
            description="the secret the portal signs deliveries with (X-Signature); a replaced one keeps"
            " verifying for 24 hours",
        ),
    ),
)
# Ledgerflow sends nothing to the portal; its address (the integration's base_url) only says where the
# deliveries come from. The portal is the college's own, so its production host is the operator's to
# declare: LEDGERFLOW_FEE_PORTAL_HOSTS (comma separated host names, https).
HOSTS_ENV = "LEDGERFLOW_FEE_PORTAL_HOSTS"
ENDPOINTS = EndpointPolicy(
    provider=PROVIDER,
    known_hosts=tuple(h.strip() for h in os.environ.get(HOSTS_ENV, "").split(",") if h.strip()),
)


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # Nothing of ours to reach (the portal calls us); what can be wrong is a missing secret.
    if not settings.credentials.get("webhook_secret"):
        raise NeedsAttentionError(
            "missing_secret", "set webhook_secret: the portal's deliveries cannot be verified"
        )


CONNECTOR = Connector(
    name=PROVIDER,
    settings=SETTINGS,
    endpoints=ENDPOINTS,
    connection_test=test_connection,
    hooks=HOOKS,
)

__all__ = ["CONNECTOR", "PROVIDER"]
