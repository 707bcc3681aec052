"""Errors raised by the pure GST rules in :mod:`engine.tax`.

Hierarchy::

    ValueError
     └── TaxRuleError          one or more rule violations, all collected before raising

A request is checked completely before anything is raised, so a caller (the API, a connector mapping a
provider's invoice) can report every problem in one response instead of one per round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.errors import InvalidInput


@dataclass(frozen=True)
class Violation:
    """One broken rule, addressed by the path of the offending field in the request."""

    path: str
    """Field path in the request, e.g. ``"buyer.gstin"``, ``"lines[0].gst_rate"``, ``"place_of_supply"``."""
    code: str
    """Machine-readable code, e.g. ``"invalid_gstin"``, ``"rate_not_valid_on_date"``, ``"unknown_hsn"``."""
    message: str
    """A precise sentence for a human: what is wrong and, where possible, what would be right."""
    details: dict[str, object] = field(default_factory=dict)
    """Structured extras, e.g. ``{"valid_rates": ["0", "5", "18", "40"], "date": "2025-09-22"}``."""


class TaxRuleError(InvalidInput, ValueError):
    """A request broke one or more GST rules; ``violations`` lists every one of them."""

    violations: tuple[Violation, ...]

    def __init__(self, violations: Sequence[Violation]) -> None:
        if not violations:
            raise ValueError("TaxRuleError needs at least one violation")
        self.violations = tuple(violations)
        super().__init__("; ".join(v.message for v in self.violations))

    @property
    def codes(self) -> tuple[str, ...]:
        """The violation codes in order, convenient for tests and logs."""
        return tuple(v.code for v in self.violations)
