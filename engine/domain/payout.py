"""The Payout aggregate: money a tenant sends out of its bank account (NEFT, RTGS or IMPS), and the
pure rules a payout request must satisfy before any bank is asked.

Names (issue 12): a *payment* is money in, captured by a gateway; a *payout* is money out. A payout's
life::

    requested ──submit──▶ processing ──complete──▶ completed (UTR, charges)
        ▲                     │  └─────fail──────▶ failed (invalid_account: never retried)
        │                     └─bounce─▶ requested (round + 1: the bank failed it after accepting)
        └──release── on_hold (insufficient_funds: waits for a person, POST /v1/payouts/{id}/retry)

Every submission to the bank carries the idempotency key ``<payout id>:<round>``: the same round
always sends the same key, so a retried initiate (a timeout, a redelivered job) can never pay twice;
only a payout the bank itself gave up on (a bounce, or a release after a hold) starts a new round.

The id derives from (tenant, reference): the tenant's own reference names one payout, so posting the
same payout twice is the same aggregate and the event store refuses the second ``Requested``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from engine.errors import Conflict, InvalidInput

PAYOUT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledgerflow.dev/ns/payout")

MODES = ("NEFT", "RTGS", "IMPS")
# RBI: RTGS is for large-value transfers, minimum Rs 2,00,000 (RBI RTGS FAQ, "minimum amount");
# IMPS is capped at Rs 5,00,000 per transaction (NPCI circular OC-144, 2021-10). NEFT has no
# minimum or maximum set by RBI (banks may set their own, which the bank reports as an error).
RTGS_MINIMUM = Decimal("200000")
IMPS_MAXIMUM = Decimal("500000")
# Far beyond any real single transfer, so that a mistyped amount is refused rather than sent.
AMOUNT_CEILING = Decimal("10000000000")
CURRENCY = "INR"
# RBI's IFSC format: 4 letters (the bank), a 0 (reserved), 6 letters or digits (the branch).
IFSC = re.compile(r"^[A-Z]{4}0[A-Z0-9]{6}$")
# Indian bank account numbers are 9 to 18 digits (banks vary; NPCI/RBI set no single length).
ACCOUNT_NUMBER = re.compile(r"^[0-9]{9,18}$")
REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,34}$")
TEXT_MAX = 140


class PayoutStatus:
    REQUESTED = "requested"
    PROCESSING = "processing"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    FAILED = "failed"


STATUSES = (
    PayoutStatus.REQUESTED,
    PayoutStatus.PROCESSING,
    PayoutStatus.ON_HOLD,
    PayoutStatus.COMPLETED,
    PayoutStatus.FAILED,
)
FINAL = frozenset({PayoutStatus.COMPLETED, PayoutStatus.FAILED})


def payout_id_for(tenant_id: UUID, reference: str) -> UUID:
    """The stable id of the payout the tenant calls ``reference`` (compared case-insensitively)."""
    return uuid5(PAYOUT_ID_NAMESPACE, f"{tenant_id}/{reference.strip().upper()}")


def to_paise(amount: Decimal) -> int:
    """Rupees (at most two places) to paise, exactly: banks' APIs take integers in paise (seed 002)."""
    paise = amount * 100
    if paise != paise.to_integral_value():
        raise PayoutRuleError("amount", "at most two decimal places (paise)")
    return int(paise)


def from_paise(paise: int) -> Decimal:
    return (Decimal(paise) / 100).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class Beneficiary:
    name: str
    account_number: str
    ifsc: str


@dataclass(frozen=True)
class PayoutRequest:
    """A payout request after the rules: amount exact to the paisa, IFSC upper-cased."""

    amount: Decimal
    currency: str
    mode: str
    beneficiary: Beneficiary
    purpose: str
    reference: str


class PayoutRuleError(InvalidInput):
    """A payout request that breaks a rule; ``field`` names the input, ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def check_ifsc(value: str) -> str:
    ifsc = value.strip().upper()
    if not IFSC.match(ifsc):
        raise PayoutRuleError(
            "beneficiary.ifsc", "an IFSC is 4 letters, a 0, then 6 letters or digits (e.g. HDFC0001234)"
        )
    return ifsc


def check_amount(value: Any) -> Decimal:
    if isinstance(value, float | bool):
        raise PayoutRuleError("amount", 'send the amount as a decimal string, e.g. "5000.00"')
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise PayoutRuleError("amount", "not a decimal number") from exc
    if not amount.is_finite() or amount <= 0:
        raise PayoutRuleError("amount", "must be more than zero")
    if amount > AMOUNT_CEILING:
        raise PayoutRuleError("amount", f"more than {AMOUNT_CEILING} is refused as a likely mistake")
    to_paise(amount)
    return amount.quantize(Decimal("0.01"))


def check_mode_limit(mode: str, amount: Decimal) -> None:
    """RTGS from Rs 2,00,000; IMPS up to Rs 5,00,000; NEFT any amount."""
    if mode not in MODES:
        raise PayoutRuleError("mode", f"one of {', '.join(MODES)}")
    if mode == "RTGS" and amount < RTGS_MINIMUM:
        raise PayoutRuleError("amount", "RTGS is for Rs 2,00,000 and more: use NEFT or IMPS")
    if mode == "IMPS" and amount > IMPS_MAXIMUM:
        raise PayoutRuleError("amount", "IMPS is limited to Rs 5,00,000 a transfer: use NEFT or RTGS")


def _text(field: str, value: Any, *, required: bool = True, pattern: re.Pattern[str] | None = None) -> str:
    text = str(value if value is not None else "").strip()
    if required and not text:
        raise PayoutRuleError(field, "required")
    if len(text) > TEXT_MAX:
        raise PayoutRuleError(field, f"at most {TEXT_MAX} characters")
    if any(ord(c) < 32 or ord(c) == 127 or 0x80 <= ord(c) < 0xA0 for c in text):
        raise PayoutRuleError(field, "control characters are not allowed")
    if pattern is not None and not pattern.match(text):
        raise PayoutRuleError(field, "has characters or a length the bank does not accept")
    return text


def check_payout(
    *, amount: Any, currency: Any, mode: Any, beneficiary: Any, purpose: Any, reference: Any
) -> PayoutRequest:
    """The request, checked; :class:`PayoutRuleError` names the first field that is wrong."""
    value = check_amount(amount)
    if str(currency or "").strip().upper() != CURRENCY:
        raise PayoutRuleError("currency", "only INR: NEFT, RTGS and IMPS move rupees")
    mode_text = str(mode or "").strip().upper()
    check_mode_limit(mode_text, value)
    if not isinstance(beneficiary, dict):
        raise PayoutRuleError("beneficiary", "an object with name, account_number and ifsc")
    who = Beneficiary(
        name=_text("beneficiary.name", beneficiary.get("name")),
        account_number=_text(
            "beneficiary.account_number", beneficiary.get("account_number"), pattern=ACCOUNT_NUMBER
        ),
        ifsc=check_ifsc(str(beneficiary.get("ifsc") or "")),
    )
    return PayoutRequest(
        amount=value,
        currency=CURRENCY,
        mode=mode_text,
        beneficiary=who,
        purpose=_text("purpose", purpose),
        reference=_text("reference", reference, pattern=REFERENCE),
    )


class Payout(Aggregate):
    """One payout of one tenant."""

    class Requested(Aggregate.Created):
        tenant_id: UUID
        reference: str
        amount: Decimal
        currency: str
        mode: str
        beneficiary_name: str
        beneficiary_account: str
        beneficiary_ifsc: str
        purpose: str
        requested_by: str

    @event(Requested)
    def __init__(
        self,
        *,
        tenant_id: UUID,
        reference: str,
        amount: Decimal,
        currency: str,
        mode: str,
        beneficiary_name: str,
        beneficiary_account: str,
        beneficiary_ifsc: str,
        purpose: str,
        requested_by: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.reference = reference
        self.amount = amount
        self.currency = currency
        self.mode = mode
        self.beneficiary_name = beneficiary_name
        self.beneficiary_account = beneficiary_account
        self.beneficiary_ifsc = beneficiary_ifsc
        self.purpose = purpose
        self.requested_by = requested_by
        self.status = PayoutStatus.REQUESTED
        self.round = 1
        self.provider_payment_id: str | None = None
        self.utr: str | None = None
        self.transaction_id: str | None = None
        self.charges: Decimal | None = None
        self.completed_at: datetime | None = None
        self.failure_code: str | None = None
        self.failure_message: str | None = None

    @staticmethod
    def create_id(*, tenant_id: UUID, reference: str, **_: Any) -> UUID:
        return payout_id_for(tenant_id, reference)

    @property
    def idempotency_key(self) -> str:
        """What the bank dedupes the current round's initiate on."""
        return f"{self.id}:{self.round}"

    # -- commands -----------------------------------------------------------------------------

    def submit(self, provider_payment_id: str) -> bool:
        """The bank accepted the current round (202 processing); False if already recorded."""
        if self.status == PayoutStatus.PROCESSING and self.provider_payment_id == provider_payment_id:
            return False
        self.check_status(PayoutStatus.REQUESTED, action="submit")
        self._submitted(tenant_id=self.tenant_id, provider_payment_id=provider_payment_id, round=self.round)
        return True

    def complete(
        self, *, utr: str, transaction_id: str | None, charges: Decimal, completed_at: datetime
    ) -> bool:
        """The bank says the money arrived; False if already completed (webhook and poll both tell)."""
        if self.status == PayoutStatus.COMPLETED:
            return False
        self.check_status(PayoutStatus.PROCESSING, action="complete")
        self._completed(
            tenant_id=self.tenant_id,
            utr=utr,
            transaction_id=transaction_id,
            charges=charges,
            completed_at=completed_at,
        )
        return True

    def fail(self, *, code: str, message: str) -> bool:
        """Failed for good (e.g. invalid_account); False if already failed."""
        if self.status == PayoutStatus.FAILED:
            return False
        if self.status in FINAL:
            raise PayoutStateConflict(f"payout {self.id} is {self.status}; it cannot fail now")
        self._failed(tenant_id=self.tenant_id, code=code, message=message)
        return True

    def hold(self, *, code: str, message: str) -> bool:
        """Waits for a person (insufficient_funds); False if already on hold."""
        if self.status == PayoutStatus.ON_HOLD:
            return False
        self.check_status(PayoutStatus.REQUESTED, PayoutStatus.PROCESSING, action="hold")
        self._held(tenant_id=self.tenant_id, code=code, message=message, round=self.round)
        return True

    def bounce(self, *, code: str, message: str, provider_payment_id: str) -> bool:
        """The bank failed a payout it had accepted, for a reason worth another round; False if that
        submission was bounced already."""
        if self.status != PayoutStatus.PROCESSING or self.provider_payment_id != provider_payment_id:
            return False
        self._bounced(tenant_id=self.tenant_id, code=code, message=message, round=self.round + 1)
        return True

    def release(self, released_by: str) -> None:
        """A person fixed the cause (funds added): try again, in a new round."""
        self.check_status(PayoutStatus.ON_HOLD, action="retry")
        self._released(tenant_id=self.tenant_id, released_by=released_by, round=self.round + 1)

    def check_status(self, *allowed: str, action: str) -> None:
        if self.status not in allowed:
            raise PayoutStateConflict(
                f"payout {self.id} is {self.status}; {action} needs it {' or '.join(allowed)}"
            )

    # -- events -------------------------------------------------------------------------------

    class Submitted(Aggregate.Event):
        tenant_id: UUID
        provider_payment_id: str
        round: int

    @event(Submitted)
    def _submitted(self, tenant_id: UUID, provider_payment_id: str, round: int) -> None:
        self.status = PayoutStatus.PROCESSING
        self.provider_payment_id = provider_payment_id

    class Completed(Aggregate.Event):
        tenant_id: UUID
        utr: str
        transaction_id: str | None
        charges: Decimal
        completed_at: datetime

    @event(Completed)
    def _completed(
        self, tenant_id: UUID, utr: str, transaction_id: str | None, charges: Decimal, completed_at: datetime
    ) -> None:
        self.status = PayoutStatus.COMPLETED
        self.utr = utr
        self.transaction_id = transaction_id
        self.charges = charges
        self.completed_at = completed_at

    class Failed(Aggregate.Event):
        tenant_id: UUID
        code: str
        message: str

    @event(Failed)
    def _failed(self, tenant_id: UUID, code: str, message: str) -> None:
        self.status = PayoutStatus.FAILED
        self.failure_code = code
        self.failure_message = message

    class Held(Aggregate.Event):
        tenant_id: UUID
        code: str
        message: str
        round: int

    @event(Held)
    def _held(self, tenant_id: UUID, code: str, message: str, round: int) -> None:
        self.status = PayoutStatus.ON_HOLD
        self.failure_code = code
        self.failure_message = message

    class Bounced(Aggregate.Event):
        tenant_id: UUID
        code: str
        message: str
        round: int

    @event(Bounced)
    def _bounced(self, tenant_id: UUID, code: str, message: str, round: int) -> None:
        self.status = PayoutStatus.REQUESTED
        self.round = round
        self.provider_payment_id = None
        self.failure_code = code
        self.failure_message = message

    class Released(Aggregate.Event):
        tenant_id: UUID
        released_by: str
        round: int

    @event(Released)
    def _released(self, tenant_id: UUID, released_by: str, round: int) -> None:
        self.status = PayoutStatus.REQUESTED
        self.round = round
        self.provider_payment_id = None


class PayoutStateConflict(Conflict):
    """A command the payout's current status does not allow (e.g. retry of a completed payout)."""
