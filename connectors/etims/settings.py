"""What a tenant configures for ``etims``, and the connection test.

The credentials identify one device: the taxpayer's KRA PIN (``tin``), the branch KRA assigned
(``bhf_id``, two digits, never assumed to be "00"), the device serial KRA approved for it and whether it
is an OSCU (KRA-hosted) or a VSCU (integrator-hosted) device. None is a secret: the secret is the CMC
key KRA hands out once at initialisation, kept as a runtime secret (``cmc:{environment}:{bhf_id}``),
never among the credentials.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from connectors.errors import ConnectorError, NeedsAttentionError
from connectors.etims import errors as etims_errors
from connectors.etims.client import DEVICE_TYPES, EtimsClient
from connectors.etims.endpoints import PRODUCTION_URL, SANDBOX_URL
from connectors.etims.mapping import kra_datetime
from connectors.kit import Credential, SettingsSchema
from engine.integrations import IntegrationSettings

SETTINGS = SettingsSchema(
    title="Kenya KRA eTIMS (OSCU / VSCU)",
    credentials=(
        Credential("tin", secret=False, description="the taxpayer's KRA PIN, e.g. P051234567X"),
        Credential("bhf_id", secret=False, description="the branch id KRA assigned (two digits, e.g. 01)"),
        Credential("device_serial", secret=False, description="the device serial KRA approved"),
        Credential("device_type", secret=False, description="oscu (KRA-hosted) or vscu (on your side)"),
    ),
    sandbox_url=SANDBOX_URL,
    production_urls=(PRODUCTION_URL,),
)

KRA_PIN = re.compile(r"^[A-Z][0-9]{9}[A-Z]$")
"""A KRA PIN: a letter, nine digits, a letter (P for companies, A for individuals)."""
BRANCH_ID = re.compile(r"^[0-9]{2}$")
DEVICE_SERIAL = re.compile(r"^[A-Za-z0-9._/-]{1,50}$")


@dataclass(frozen=True)
class EtimsCredentials:
    tin: str
    bhf_id: str
    device_serial: str
    device_type: str


class InvalidCredentials(NeedsAttentionError):
    """Stored credentials that cannot identify a device; ``problems`` maps each field to what is wrong."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        text = "; ".join(f"credentials.{name}: {why}" for name, why in self.problems.items())
        super().__init__(
            "invalid_credentials", text, details={"provider": "etims", "problems": self.problems}
        )


def validate_credentials(credentials: Mapping[str, str]) -> EtimsCredentials:
    """The credentials, normalised (PIN upper-cased, device type lower-cased), or
    :class:`InvalidCredentials` naming every field that is wrong."""
    tin = str(credentials.get("tin") or "").strip().upper()
    bhf_id = str(credentials.get("bhf_id") or "").strip()
    serial = str(credentials.get("device_serial") or "").strip()
    device_type = str(credentials.get("device_type") or "").strip().lower()
    problems: dict[str, str] = {}
    if not KRA_PIN.match(tin):
        problems["tin"] = "must be a KRA PIN: a letter, nine digits, a letter (e.g. P051234567X)"
    if not BRANCH_ID.match(bhf_id):
        problems["bhf_id"] = "must be the two-digit branch id KRA assigned (e.g. 00, 01)"
    if not DEVICE_SERIAL.match(serial):
        problems["device_serial"] = "must be the device serial KRA approved (1-50 letters, digits, . _ / -)"
    if device_type not in DEVICE_TYPES:
        problems["device_type"] = "must be oscu or vscu"
    if problems:
        raise InvalidCredentials(problems)
    return EtimsCredentials(tin, bhf_id, serial, device_type)


FAR_FUTURE = datetime(2099, 12, 31, 20, 59, 59, tzinfo=UTC)
"""lastReqDt for the connection test: "changes since 2099" is always an empty list (001)."""


async def test_connection(settings: IntegrationSettings, transport: httpx.AsyncBaseTransport) -> None:
    """Check the credentials' form, then make one effect-free call: a code-list request for changes
    since a far-future date, whose answer (an envelope, whatever its code) proves reachability and TLS.

    Why not the initialisation: KRA hands out a device's CMC key once; a test that initialised the
    device would throw that key away and leave the device unusable (902 ever after). And the test has
    no CMC key (a runtime secret, not a credential; the kit's connection tests do not receive runtime
    secrets), so KRA answers 900 "no header" to a well-formed request: that counts as reachable. A
    901 "invalid device" is a refusal of the tin/branch. Unconfirmed: whether KRA checks the tin and
    branch before the missing key; a PIN KRA does not know may therefore only show at initialisation.
    """
    creds = validate_credentials(settings.credentials)
    async with EtimsClient(
        settings.base_url,
        device_type=creds.device_type,
        tin=creds.tin,
        bhf_id=creds.bhf_id,
        cmc_key=None,
        transport=transport,
    ) as client:
        try:
            await client.code_list(kra_datetime(FAR_FUTURE))
        except ConnectorError as exc:
            if exc.code == etims_errors.NO_HEADER:
                return
            raise
