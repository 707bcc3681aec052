"""What a tenant configures for ``veekaart`` (seed "EzBillify <-> VeeKaart", "Configuration
Parameters")."""

from __future__ import annotations

from connectors.kit import Credential, SettingsSchema

PROVIDER = "veekaart"
API_KEY = "api_key"
PARTNER_API_KEY = "partner_api_key"
WEBHOOK_SECRET = "webhook_secret"

SETTINGS = SettingsSchema(
    title="VeeKaart shop (catalogue push, order webhooks)",
    credentials=(
        Credential(
            API_KEY, description="the shop's API key Ledgerflow pushes products, stock and prices with"
        ),
        Credential(
            PARTNER_API_KEY,
            description="the key the shop presents (Authorization: Bearer) on order webhooks;"
            " POST /v1/integrations/veekaart/partner-key replaces it",
        ),
        Credential(
            WEBHOOK_SECRET,
            description="the secret the shop signs order webhooks with (X-VeeKaart-Signature); a replaced"
            " one keeps verifying for 24 hours",
        ),
    ),
    sandbox_url=None,
    production_urls=("https://api.veekaart.com",),
)
