"""What a tenant configures for ``quickbooks``: the app's OAuth client, and the account mapping.

Intuit's endpoints (developer.intuit.com, "Set up OAuth 2.0" and the Accounting API reference):
authorisation at https://appcenter.intuit.com/connect/oauth2, tokens at
https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer, data at https://quickbooks.api.intuit.com
(production companies) or https://sandbox-quickbooks.api.intuit.com (Intuit's sandbox companies),
under ``/v3/company/{realmId}/``. Scope ``com.intuit.quickbooks.accounting``. An access token lasts one
hour; a refresh token 100 days, rolling (each refresh may return a new one, which replaces it).

A tenant whose ``base_url`` is one of Intuit's data hosts uses Intuit's authorisation and token
endpoints; any other base URL (allowed only in the sandbox environment, engine/security/egress.py) is
a sandbox serving all three under itself, as ours does (connectors/quickbooks/sandbox.py).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import httpx

from connectors.errors import NeedsAttentionError
from connectors.kit import Credential, SettingsSchema
from connectors.oauth import OAuthSpec
from engine.integrations import IntegrationSettings
from engine.security.egress import EndpointPolicy

PROVIDER = "quickbooks"
SCOPE = "com.intuit.quickbooks.accounting"
PRODUCTION_URL = "https://quickbooks.api.intuit.com"
INTUIT_SANDBOX_URL = "https://sandbox-quickbooks.api.intuit.com"
AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"
TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
AUTHORIZE_PATH = "/connect/oauth2"
TOKEN_PATH = "/oauth2/v1/tokens/bearer"
INTUIT_DATA_HOSTS = (PRODUCTION_URL, INTUIT_SANDBOX_URL)

ENDPOINTS = EndpointPolicy(
    provider=PROVIDER,
    provider_urls=(PRODUCTION_URL,),
    known_hosts=("quickbooks.api.intuit.com", "oauth.platform.intuit.com"),
)

SETTINGS = SettingsSchema(
    title="QuickBooks Online (invoices and payments, OAuth 2.0)",
    credentials=(
        Credential("client_id", secret=False, description="the Intuit app's client id (Keys & credentials)"),
        Credential("client_secret", description="the Intuit app's client secret"),
        Credential(
            "income_account_id",
            secret=False,
            description="QuickBooks account id the items created for our invoice lines post income to",
        ),
        Credential(
            "deposit_account_id",
            secret=False,
            description="QuickBooks account id payments are deposited to (e.g. Undeposited Funds or a bank)",
        ),
        Credential(
            "tax_codes",
            secret=False,
            description="GST rate to QuickBooks TaxCode id, comma-separated, e.g. 0=NON,5=12,18=14",
        ),
    ),
    sandbox_url=INTUIT_SANDBOX_URL,
    production_urls=(PRODUCTION_URL,),
)


def _is_intuit(settings: IntegrationSettings) -> bool:
    return settings.base_url.rstrip("/") in INTUIT_DATA_HOSTS


def authorize_url(settings: IntegrationSettings) -> str:
    return AUTHORIZE_URL if _is_intuit(settings) else settings.base_url.rstrip("/") + AUTHORIZE_PATH


def token_url(settings: IntegrationSettings) -> str:
    return TOKEN_URL if _is_intuit(settings) else settings.base_url.rstrip("/") + TOKEN_PATH


# Intuit redirects back with the chosen company as ``realmId`` beside ``code`` and ``state``.
OAUTH = OAuthSpec(authorize_url=authorize_url, token_url=token_url, scopes=(SCOPE,), account_param="realmId")


def tax_code_map(text: str) -> dict[Decimal, str]:
    """``"0=NON,18=14"`` -> {Decimal("0"): "NON", Decimal("18"): "14"}; ValueError names a bad pair."""
    mapping: dict[Decimal, str] = {}
    for pair in (p.strip() for p in text.split(",") if p.strip()):
        rate, sep, code = (part.strip() for part in pair.partition("="))
        try:
            value = Decimal(rate)
        except InvalidOperation as exc:
            raise ValueError(f"tax_codes: {pair[:40]!r} is not rate=code") from exc
        if not sep or not code or not code.isalnum() or len(code) > 20 or not value.is_finite():
            raise ValueError(f"tax_codes: {pair[:40]!r} is not rate=code")
        mapping[value.normalize()] = code
    return mapping


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    # The data API needs the OAuth connection, which a settings test cannot assume; what can be proven
    # here is that the mapping is readable. The connection is proven by the OAuth callback itself.
    try:
        tax_code_map(settings.credentials.get("tax_codes", ""))
    except ValueError as exc:
        raise NeedsAttentionError("invalid_tax_codes", str(exc)) from exc
