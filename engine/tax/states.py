"""GST state and union-territory codes, and normalisation of what callers send.

The numeric code is the first two characters of every GSTIN and is what the e-invoice schema (``Stcd``,
``Pos``) and GSTR-1 (``pos``) carry, so it is the canonical form inside the engine. Seeds such as
SmartKhata send two-letter codes (``"KA"``); both are accepted and normalised to the numeric code.

Source: the GST state code list (india-gst.md notes, section 5, "Place of supply"), which also lists 38 Ladakh
(created 2019), 96 "Other Countries" (place of supply outside India), 97 "Other Territory" and
99 "Centre Jurisdiction". Two-letter codes are the ISO 3166-2:IN subdivision codes, plus the vehicle
registration style aliases that Indian software commonly uses (UK, OR, CG, TS, DD, DN).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from engine.tax.errors import TaxRuleError, Violation


@dataclass(frozen=True)
class State:
    code: str
    """Two-digit GST state code, e.g. ``"29"``."""
    alpha: str | None
    """Two-letter code (ISO 3166-2:IN); ``None`` where no such code exists (28, 96, 97, 99)."""
    name: str


_STATE_ROWS: tuple[tuple[str, str | None, str], ...] = (
    ("01", "JK", "Jammu and Kashmir"),
    ("02", "HP", "Himachal Pradesh"),
    ("03", "PB", "Punjab"),
    ("04", "CH", "Chandigarh"),
    ("05", "UT", "Uttarakhand"),
    ("06", "HR", "Haryana"),
    ("07", "DL", "Delhi"),
    ("08", "RJ", "Rajasthan"),
    ("09", "UP", "Uttar Pradesh"),
    ("10", "BR", "Bihar"),
    ("11", "SK", "Sikkim"),
    ("12", "AR", "Arunachal Pradesh"),
    ("13", "NL", "Nagaland"),
    ("14", "MN", "Manipur"),
    ("15", "MZ", "Mizoram"),
    ("16", "TR", "Tripura"),
    ("17", "ML", "Meghalaya"),
    ("18", "AS", "Assam"),
    ("19", "WB", "West Bengal"),
    ("20", "JH", "Jharkhand"),
    ("21", "OD", "Odisha"),
    ("22", "CT", "Chhattisgarh"),
    ("23", "MP", "Madhya Pradesh"),
    ("24", "GJ", "Gujarat"),
    # 25 is kept because invoices dated before the 2020 merger of Daman and Diu with Dadra and Nagar
    # Haveli still carry it.
    ("25", "DD", "Daman and Diu (before 26 Jan 2020)"),
    ("26", "DH", "Dadra and Nagar Haveli and Daman and Diu"),
    ("27", "MH", "Maharashtra"),
    # 28 was Andhra Pradesh before the 2014 bifurcation; new registrations use 37. No two-letter code is
    # given so that "AP" unambiguously means today's state.
    ("28", None, "Andhra Pradesh (before division)"),
    ("29", "KA", "Karnataka"),
    ("30", "GA", "Goa"),
    ("31", "LD", "Lakshadweep"),
    ("32", "KL", "Kerala"),
    ("33", "TN", "Tamil Nadu"),
    ("34", "PY", "Puducherry"),
    ("35", "AN", "Andaman and Nicobar Islands"),
    ("36", "TG", "Telangana"),
    ("37", "AP", "Andhra Pradesh"),
    ("38", "LA", "Ladakh"),
    ("96", None, "Other Countries"),
    ("97", None, "Other Territory"),
    ("99", None, "Centre Jurisdiction"),
)

STATES: Mapping[str, State] = MappingProxyType(
    {code: State(code=code, alpha=alpha, name=name) for code, alpha, name in _STATE_ROWS}
)
"""Numeric GST code -> :class:`State`."""

# Aliases seen in Indian business software (vehicle-registration style codes and pre-rename ISO codes).
_ALPHA_ALIASES: Mapping[str, str] = {
    "UK": "05",
    "OR": "21",
    "CG": "22",
    "DN": "26",
    "TS": "36",
}

_BY_ALPHA: Mapping[str, str] = {
    **{s.alpha: s.code for s in STATES.values() if s.alpha is not None},
    **_ALPHA_ALIASES,
}
_BY_NAME: Mapping[str, str] = {s.name.casefold(): s.code for s in STATES.values()}

OTHER_COUNTRIES = "96"
"""Place of supply for exports (e-invoice ``Pos`` = ``"96"``)."""


def normalise_state(value: str, path: str = "state") -> str:
    """Return the two-digit GST code for ``value`` (``"KA"``, ``"ka"``, ``"29"``, ``"9"``, ``"Karnataka"``).

    Raises :class:`TaxRuleError` with code ``unknown_state`` when the value names no GST state.
    """
    text = value.strip() if isinstance(value, str) else ""
    if text.isdigit() and len(text) <= 2:
        code = text.zfill(2)
        if code in STATES:
            return code
    elif text.upper() in _BY_ALPHA:
        return _BY_ALPHA[text.upper()]
    elif text.casefold() in _BY_NAME:
        return _BY_NAME[text.casefold()]
    raise TaxRuleError(
        [
            Violation(
                path=path,
                code="unknown_state",
                message=(
                    f"{path}: {value!r} is not a GST state code; send the two-digit code "
                    "(01-38, 96 outside India, 97 other territory, 99 centre jurisdiction) "
                    "or the two-letter code such as 'KA'."
                ),
                details={"value": value},
            )
        ]
    )
