"""An integration's status from its switch, circuit, dead letters and success rate (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.integration_health import Health, status_of


def health(**changes: Any) -> Health:
    base: dict[str, Any] = {
        "attempts": 10,
        "success_rate": 1.0,
        "p95_latency_ms": 20.0,
        "circuit": "closed",
        "circuit_opened_at": None,
        "dlq_depth": 0,
        "last_error": None,
        "last_success_at": None,
    }
    return Health(**{**base, **changes})


@pytest.mark.parametrize(
    ("enabled", "changes", "status"),
    [
        (True, {}, "active"),
        (True, {"success_rate": None, "attempts": 0}, "active"),
        (False, {"circuit": "open"}, "disabled"),
        (True, {"circuit": "open"}, "circuit_open"),
        (True, {"circuit": "half_open"}, "circuit_open"),
        (True, {"dlq_depth": 1}, "degraded"),
        (True, {"success_rate": 0.89}, "degraded"),
        (True, {"success_rate": 0.9}, "active"),
    ],
)
def test_status_follows_switch_circuit_dead_letters_and_success_rate(
    enabled: bool, changes: dict[str, Any], status: str
) -> None:
    assert status_of(enabled, health(**changes)) == status
