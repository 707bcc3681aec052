"""What a tenant configures for ``bank``, and the connection test.

The bank API key is the secret; the remitter account (the tenant's own account that payouts leave
from and whose statements are read) and its IFSC are not. ``webhook_secret`` is the key the bank signs
its payment-status callbacks with (hex HMAC-SHA256, ``X-Signature``; connectors/bank/webhook.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from connectors.bank.client import PROVIDER, BankClient
from connectors.errors import NeedsAttentionError
from connectors.kit import Credential, SettingsSchema
from engine.domain.payout import ACCOUNT_NUMBER, IFSC
from engine.integrations import IntegrationSettings

SETTINGS = SettingsSchema(
    title="Bank (payouts over NEFT/RTGS/IMPS, statements, balance)",
    credentials=(
        Credential("api_key", description="the bank API key (sent as a bearer token)"),
        Credential("account_number", secret=False, description="your account payouts leave from"),
        Credential("ifsc", secret=False, description="the IFSC of that account's branch"),
        Credential("webhook_secret", description="the key the bank signs payment-status callbacks with"),
    ),
)


@dataclass(frozen=True)
class BankCredentials:
    api_key: str
    account_number: str
    ifsc: str
    webhook_secret: str

    def __repr__(self) -> str:
        return (
            f"BankCredentials(account_number={self.account_number!r}, ifsc={self.ifsc!r}, secrets=[redacted])"
        )


def validate_credentials(credentials: Mapping[str, str]) -> BankCredentials:
    api_key = str(credentials.get("api_key") or "")
    account = str(credentials.get("account_number") or "").strip()
    ifsc = str(credentials.get("ifsc") or "").strip().upper()
    problems: dict[str, str] = {}
    if not api_key:
        problems["api_key"] = "required"
    if not ACCOUNT_NUMBER.match(account):
        problems["account_number"] = "9 to 18 digits"
    if not IFSC.match(ifsc):
        problems["ifsc"] = "4 letters, a 0, then 6 letters or digits"
    if problems:
        raise NeedsAttentionError(
            "invalid_credentials",
            "; ".join(f"credentials.{k}: {v}" for k, v in problems.items()),
            details={"provider": PROVIDER, "problems": problems},
        )
    return BankCredentials(api_key, account, ifsc, str(credentials.get("webhook_secret") or ""))


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    """A balance inquiry: effect-free, and it proves the key and the account together."""
    creds = validate_credentials(settings.credentials)
    async with BankClient(settings.base_url, creds.api_key, transport=transport) as bank:
        await bank.balance(creds.account_number)
