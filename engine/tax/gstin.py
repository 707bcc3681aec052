"""GSTIN validation.

A GSTIN is 15 characters: a two-digit state code, a ten-character PAN (a TAN for tax deductors), an entity
code, a type character ('Z' for regular taxpayers) and a check character (india-gst.md notes, section 3).

python-stdnum's ``stdnum.in_.gstin`` is not used for the whole number because its state table stops at 37
(it rejects 38 Ladakh, 97 and 99) and it insists on 'Z' in position 14, which rejects the TCS ('C') and TDS
('D') registrations that appear on real invoices. We do use ``stdnum.in_.pan`` for the PAN part, where its
rules (format and holder-type letter) are right.

Formats accepted (patterns as documented by the GST developer portal and mirrored in
resilient-tech/india-compliance ``gst_india/constants``):

* regular/composition/SEZ: ``SS PPPPPPPPPP E Z C``
* tax collector (TCS, e-commerce operators): ``SS PPPPPPPPPP E C C``
* tax deductor (TDS, a TAN in place of the PAN): ``SS TTTTTTTTTT E D C``
* UN bodies/embassies (UIN): ``SSYY CCC NNNNN UN C`` or ``... ON C``
* non-resident online service providers (OIDAR): ``99YY CCC NNNNN OS C`` (always state code 99,
  "Centre Jurisdiction": OIDAR suppliers register with the Centre, not a state)
* non-resident taxable persons: ``SSYY CCC NNNNN NR C``

:func:`classify_gstin` says which of these a valid GSTIN is (contract C4 of the GST returns work):
GSTR-1 treats them differently (a UIN holder's supplies go to b2b with its UIN; a TDS or TCS
registration is not a buyer of goods), and the GST network search answers for all of them.

NIC's public sandbox GSTINs (e.g. ``02AMBPG7773M002``) fail these rules on purpose and are rejected here;
code talking to the sandbox must bypass validation explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NoReturn

from stdnum.exceptions import ValidationError
from stdnum.in_ import pan as stdnum_pan

from engine.tax.errors import TaxRuleError, Violation
from engine.tax.states import STATES

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_PAN_BASED = re.compile(r"^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][0-9A-Z][ZC][0-9A-Z]$")
_TAN_BASED = re.compile(r"^[0-9]{2}[A-Z]{4}[0-9A-Z][0-9]{4}[A-Z][0-9A-Z]D[0-9A-Z]$")
_FOREIGN = re.compile(r"^[0-9]{4}[A-Z]{3}[0-9]{5}(UN|ON|OS|NR)[0-9A-Z]$")
# The OIDAR pattern of the GST developer portal fixes the state code to 99 (india-compliance
# gst_india/constants ``OIDAR = ^[9][9][0-9]{2}...OS...``).
_OIDAR_STATE = "99"

GstinKind = Literal["regular", "tds", "tcs", "uin", "nri", "oidar"]
_FOREIGN_KINDS: dict[str, GstinKind] = {"UN": "uin", "ON": "uin", "OS": "oidar", "NR": "nri"}


@dataclass(frozen=True)
class GstinInfo:
    """What the number itself says about a registration (nothing here asks the GST network)."""

    gstin: str
    """Normalised: upper case, no spaces or hyphens."""
    kind: GstinKind
    """regular (incl. composition and SEZ, which the number does not tell apart), tds (a deductor,
    with a TAN), tcs (an e-commerce operator collecting tax), uin (UN bodies, embassies: UN/ON),
    nri (non-resident taxable person), oidar (non-resident online service provider)."""
    state_code: str
    pan: str | None
    """Characters 3-12 for PAN-based registrations (regular, TCS); None for a TAN or a foreign id."""


# 96 is the place of supply for exports, not a place of registration.
_NOT_A_REGISTRATION_STATE = frozenset({"96"})


def check_character(first14: str) -> str:
    """Return the GSTIN check character for the first 14 characters.

    Algorithm (india-gst.md notes, section 3; it is Luhn mod 36): map each character to its index in 0-9A-Z,
    multiply by 1, 2, 1, 2 ... from the left, add the quotient and the remainder of each product by 36,
    and the check character is the one at index ``(36 - sum % 36) % 36``.
    """
    text = first14.upper()
    if len(text) != 14 or any(ch not in _ALPHABET for ch in text):
        raise ValueError(f"check_character needs 14 characters from 0-9A-Z, got {first14!r}")
    total = 0
    for index, ch in enumerate(text):
        product = _ALPHABET.index(ch) * (1 if index % 2 == 0 else 2)
        total += product // 36 + product % 36
    return _ALPHABET[(36 - total % 36) % 36]


def gstin_state(gstin: str) -> str:
    """Return the two-digit state code of a GSTIN (after validating it)."""
    return validate_gstin(gstin)[:2]


def validate_gstin(value: str, path: str = "gstin") -> str:
    """Return ``value`` normalised (upper case, without spaces or hyphens) if it is a valid GSTIN.

    Raises :class:`TaxRuleError` with code ``invalid_gstin``; the message says what is wrong: the length,
    the state code, the format, the PAN part, the entity code or which check character was expected.
    """
    return classify_gstin(value, path).gstin


def classify_gstin(value: str, path: str = "gstin") -> GstinInfo:
    """What kind of registration a valid GSTIN is; raises :class:`TaxRuleError` (``invalid_gstin``)
    exactly as :func:`validate_gstin` does for an invalid one."""
    if not isinstance(value, str):
        _fail(path, value, "must be a string", {})
    try:
        return _classify_valid(value)
    except TaxRuleError:
        return _classify(value, path)  # raises the same refusal, naming the caller's field


# Every invoice checks its seller's and its buyer's GSTIN, and a batch of ingested commands mostly
# names the same few: ~0.09 ms per command without the cache (cProfile, docs/performance.md,
# "ingest1000"). Only valid numbers are kept (an invalid one raises, which lru_cache does not
# store), GstinInfo is frozen, and the answer depends on the number alone. The path only names the
# field in an error, so an invalid GSTIN is checked again with the caller's path.
@lru_cache(maxsize=4096)
def _classify_valid(value: str) -> GstinInfo:
    return _classify(value, "gstin")


def _classify(value: str, path: str) -> GstinInfo:
    number = value.replace(" ", "").replace("-", "").upper()
    if len(number) != 15:
        _fail(path, value, f"must be 15 characters long, not {len(number)}", {"length": len(number)})
    if any(ch not in _ALPHABET for ch in number):
        _fail(path, value, "may contain only digits and the letters A-Z", {})
    state = number[:2]
    if state not in STATES or state in _NOT_A_REGISTRATION_STATE:
        _fail(
            path,
            value,
            f"starts with {state!r}, which is not the code of a state that issues GSTINs",
            {"state_code": state},
        )
    kind: GstinKind
    pan: str | None = None
    foreign = _FOREIGN.match(number)
    if _PAN_BASED.match(number):
        kind, pan = ("tcs" if number[13] == "C" else "regular"), number[2:12]
        try:
            stdnum_pan.validate(number[2:12])
        except ValidationError:
            _fail(
                path,
                value,
                f"characters 3-12 ({number[2:12]!r}) are not a valid PAN: the 4th letter must be a PAN "
                "holder type such as C (company) or P (individual) and the digits must not be 0000",
                {"pan": number[2:12]},
            )
    elif _TAN_BASED.match(number):
        kind = "tds"
    elif foreign:
        kind = _FOREIGN_KINDS[foreign.group(1)]
        if kind == "oidar" and state != _OIDAR_STATE:
            _fail(
                path,
                value,
                f"is an OIDAR registration (OS) but starts with {state!r}; OIDAR GSTINs start with 99",
                {"state_code": state},
            )
    else:
        _fail(
            path,
            value,
            "does not follow a GSTIN format: expected 2-digit state code, 10-character PAN, entity code, "
            "'Z' (or 'C' for TCS, 'D' for TDS with a TAN) and a check character",
            {},
        )
    if number[12] == "0" and not foreign:
        # The entity code counts registrations of the same PAN in a state and starts at 1.
        _fail(path, value, "has entity code '0' in position 13; it starts at 1", {})
    expected = check_character(number[:14])
    if number[14] != expected:
        _fail(
            path,
            value,
            f"has check character {number[14]!r} but {expected!r} was expected",
            {"expected_check_character": expected, "actual_check_character": number[14]},
        )
    return GstinInfo(gstin=number, kind=kind, state_code=state, pan=pan)


def _fail(path: str, value: object, problem: str, details: dict[str, object]) -> NoReturn:
    raise TaxRuleError(
        [
            Violation(
                path=path,
                code="invalid_gstin",
                message=f"{path}: GSTIN {value!r} {problem}.",
                details={"value": value, **details},
            )
        ]
    )
