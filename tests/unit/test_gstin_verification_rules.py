"""Pure rules of GSTIN verification: which buyer raises which alert, the cache's time to live, and
how the taxpayer search's address and constitution are read (connectors/gstin_lookup)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from connectors.gstin_lookup.client import _taxpayer
from connectors.gstin_lookup.handler import alert_for
from connectors.gstin_lookup.store import DEFAULT_TTL, TTL_ENV, Registration, from_search, ttl_from_env

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
GSTIN = "33AAJFK5678L1ZR"


def searched(status: str | None, cancelled_on: date | None = None) -> Registration:
    body = {"gstin": GSTIN, "lgnm": "Kaveri Fabrics", "sts": status or "", "dty": "Regular"}
    if cancelled_on:
        body["cxdt"] = cancelled_on.strftime("%d/%m/%Y")
    return from_search(GSTIN, None if status is None else _taxpayer(body), NOW, timedelta(hours=1))


@pytest.mark.parametrize(
    ("status", "cancelled_on", "cause", "fragment"),
    [
        pytest.param("Active", None, None, None, id="active-no-alert"),
        pytest.param(" ACTIVE ", None, None, None, id="active-any-case"),
        pytest.param(
            "Cancelled",
            date(2024, 3, 31),
            "gst.buyer_gstin_cancelled",
            "cancelled since 2024-03-31",
            id="cancelled",
        ),
        pytest.param("Suspended", None, "gst.buyer_gstin_suspended", "is suspended at", id="suspended"),
        pytest.param("Inactive", None, "gst.buyer_gstin_not_active", "is inactive at", id="inactive"),
        pytest.param(
            None, None, "gst.buyer_gstin_not_registered", "has no registration", id="not-registered"
        ),
    ],
)
def test_which_buyer_raises_which_alert(
    status: str | None, cancelled_on: date | None, cause: str | None, fragment: str | None
) -> None:
    found = alert_for("INV-7", searched(status, cancelled_on))
    if cause is None:
        assert found is None
        return
    assert found is not None and fragment is not None
    assert found[0] == cause
    assert found[1].startswith("invoice INV-7: ") and fragment in found[1] and GSTIN in found[1]


def test_an_answer_expires_after_its_time_to_live() -> None:
    found = searched("Active")
    assert (found.checked_at, found.expires_at) == (NOW, NOW + timedelta(hours=1))
    assert found.view()["status"] == "active" and found.view()["registered"] is True
    missing = searched(None)
    assert (missing.found, missing.outcome, missing.view()["legal_name"]) == (False, "not_registered", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, DEFAULT_TTL, id="unset"),
        pytest.param("3600", timedelta(hours=1), id="an-hour"),
        pytest.param("0.5", timedelta(seconds=0.5), id="fractions"),
        pytest.param("0", DEFAULT_TTL, id="zero-ignored"),
        pytest.param("-5", DEFAULT_TTL, id="negative-ignored"),
        pytest.param("1e30", DEFAULT_TTL, id="absurd-ignored"),
        pytest.param("nan", DEFAULT_TTL, id="nan-ignored"),
        pytest.param("a day", DEFAULT_TTL, id="text-ignored"),
    ],
)
def test_the_time_to_live_comes_from_the_environment(value: str | None, expected: timedelta) -> None:
    assert ttl_from_env({} if value is None else {TTL_ENV: value}) == expected


def test_the_address_is_one_line_in_postal_order_and_odd_parts_are_left_out() -> None:
    found = _taxpayer(
        {
            "gstin": GSTIN,
            "lgnm": "Kaveri Fabrics",
            "sts": "Active",
            "ctb": " Partnership ",
            "pradr": {
                "addr": {
                    "pncd": "641001",
                    "st": "Oppanakara Street",
                    "bno": "12",
                    "bnm": "",
                    "city": None,
                    "loc": "Town Hall",
                    "dst": "Coimbatore",
                    "stcd": "Tamil Nadu",
                    "flno": {"nested": "ignored"},
                }
            },
        }
    )
    assert found.business_type == "Partnership"
    assert found.address == "12, Oppanakara Street, Town Hall, Coimbatore, Tamil Nadu, 641001"
    odd_values: tuple[object, ...] = (None, "text", {"addr": "text"}, {"addr": {}}, [])
    for odd in odd_values:
        assert _taxpayer({"gstin": GSTIN, "lgnm": "K", "sts": "Active", "pradr": odd}).address is None
