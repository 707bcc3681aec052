"""Kenya Revenue Authority PINs (the taxpayer's TIN on eTIMS).

A PIN is a letter, nine digits and a letter, e.g. ``P051234567X`` (P for companies and other
non-individuals, A for individuals); /work/shared/reference/kenya-etims.md, issue 10. KRA publishes
no check-character algorithm, so the shape is all that can be checked offline.
"""

from __future__ import annotations

import re

from engine.tax.errors import TaxRuleError, Violation

KRA_PIN = re.compile(r"^[A-Z][0-9]{9}[A-Z]$")


def validate_kra_pin(value: str, path: str = "kra_pin") -> str:
    """``value`` upper-cased (surrounding blanks removed) if it is a KRA PIN; else TaxRuleError
    (an InvalidInput) with code ``invalid_kra_pin`` and a message saying what a PIN looks like."""
    if not isinstance(value, str):
        raise TaxRuleError([Violation(path, "invalid_kra_pin", f"{path}: a KRA PIN must be a string")])
    pin = value.strip(" ").upper()
    if KRA_PIN.fullmatch(pin) is None:
        shown = pin if len(pin) <= 20 and pin.isprintable() else f"{pin[:20]!r}..."
        raise TaxRuleError(
            [
                Violation(
                    path,
                    "invalid_kra_pin",
                    f"{path}: {shown!s} is not a KRA PIN: expected a letter, 9 digits and a letter, "
                    "such as P051234567X",
                    {"pattern": KRA_PIN.pattern},
                )
            ]
        )
    return pin
