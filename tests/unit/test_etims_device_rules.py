"""Pure rules of the eTIMS devices side: routing, code list rows and rates, lastReqDt, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from connectors.etims import codes, devices
from connectors.etims.client import Code, CodeClass, ItemClass


def settings_changed(**changes: object) -> dict[str, object]:
    return {
        "tenant_id": str(uuid4()),
        "provider": "etims",
        "enabled": True,
        "environment": "sandbox",
        "base_url": "http://127.0.0.1:9103",
        "credentials_changed": ["tin"],
        "changed_by": "operator:api",
        **changes,
    }


def test_a_saved_etims_integration_asks_for_its_devices_to_be_initialised() -> None:
    record = settings_changed(environment="production")
    (job,) = devices.device_routes(devices.SETTINGS_CHANGED, "ce-1", record)
    assert (job.connector, job.kind, job.tenant_id, job.subject) == (
        "etims",
        "device.init",
        record["tenant_id"],
        record["tenant_id"],
    )
    assert job.payload == {"environment": "production"}
    # A re-published event makes the same job (the runtime dedupes on its id).
    assert devices.device_routes(devices.SETTINGS_CHANGED, "ce-1", record)[0].job_id == job.job_id


@pytest.mark.parametrize(
    ("ce_type", "record"),
    [
        ("ledgerflow.tenant.integration_settings_changed", settings_changed(provider="gst-irp")),
        ("ledgerflow.tenant.integration_settings_changed", settings_changed(enabled=False)),
        ("ledgerflow.tenant.profile_updated", settings_changed()),
    ],
    ids=["another provider", "integration switched off", "another event"],
)
def test_other_events_ask_for_no_device_job(ce_type: str, record: dict[str, object]) -> None:
    assert devices.device_routes(ce_type, "ce-1", record) == []


def test_class_04_of_the_code_list_gives_the_tax_rates_and_ignores_what_is_not_a_rate() -> None:
    rows = codes.code_rows(
        [
            CodeClass(
                "04",
                "Taxation type",
                (
                    Code("A", "A-Exempt", "0", 1, True),
                    Code("B", "B-16.00%", "16", 2, True),
                    Code("E", "E-8%", "8.00", 5, True),
                    Code("X", "broken", "sixteen", 6, True),
                    Code("Z", "retired", "12", 7, False),
                ),
            ),
            CodeClass("10", "Quantity unit", (Code("U", "Pieces", None, 1, True),)),
        ]
    )
    assert [(r.cd_cls, r.cd) for r in rows] == [
        ("04", "A"),
        ("04", "B"),
        ("04", "E"),
        ("04", "X"),
        ("04", "Z"),
        ("10", "U"),
    ]
    assert codes.tax_rates(rows) == {
        "A": (Decimal("0.00"), "A-Exempt"),
        "B": (Decimal("16.00"), "B-16.00%"),
        "E": (Decimal("8.00"), "E-8%"),
    }


def test_item_classes_become_rows() -> None:
    (row,) = codes.item_class_rows([ItemClass("5059690800", "Cereals", 4, "B", False, True)])
    assert (row.item_cls_cd, row.item_cls_nm, row.item_cls_lvl, row.tax_ty_cd, row.use_yn) == (
        "5059690800",
        "Cereals",
        4,
        "B",
        True,
    )


def test_the_shipped_default_tax_types_match_the_reference_notes_not_the_wrong_sdks() -> None:
    rates = {code: rate for code, (_, rate) in codes.DEFAULT_CODES[codes.TAX_TYPE_CLASS].items()}
    assert rates == {"A": "0", "B": "16", "C": "0", "D": "0", "E": "8"}


def test_last_req_dt_is_nairobi_time() -> None:
    assert codes.last_req_dt(datetime(2026, 6, 2, 21, 30, 5, tzinfo=UTC)) == "20260603003005"


def test_offline_after_reads_seconds_or_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(devices.OFFLINE_AFTER_ENV, raising=False)
    assert devices.offline_after() == timedelta(hours=1)
    monkeypatch.setenv(devices.OFFLINE_AFTER_ENV, "90")
    assert devices.offline_after() == timedelta(seconds=90)
    monkeypatch.setenv(devices.OFFLINE_AFTER_ENV, "30m")
    assert devices.offline_after() == timedelta(minutes=30)


def test_an_active_device_never_shows_its_key_in_repr() -> None:
    device = devices.ActiveDevice(
        uuid4(), "sandbox", "01", "oscu", "P051234567X", "http://x", "SECRETKEY", None, None
    )
    assert "SECRETKEY" not in repr(device)


def test_a_device_view_has_no_key_field() -> None:
    now = datetime.now(UTC)
    row = {
        "id": uuid4(),
        "environment": "sandbox",
        "bhf_id": "01",
        "device_serial": "S1",
        "device_type": "oscu",
        "status": "initialized",
        "dvc_id": "D",
        "sdc_id": "SDC",
        "mrc_no": "MRC",
        "taxpayer_name": "T",
        "branch_name": "B",
        "last_success_at": now,
        "last_failure": None,
        "created_at": now,
        "updated_at": now,
        "tenant_id": uuid4(),
    }
    view = devices.device_view(row)
    assert not [k for k in view if "key" in k.lower()]
    assert "tenant_id" not in view


def test_the_router_reads_the_tenant_topic_only_when_a_connector_routes_tenant_events() -> None:
    from connectors import gst_irp
    from connectors.registry import CONNECTORS
    from streams.router import source_topics

    assert source_topics([gst_irp.CONNECTOR]) == ["ledger.invoice.v1"]
    # etims initialises devices when its integration is saved (tenant integration_settings_changed).
    assert source_topics(list(CONNECTORS)) == [
        "ledger.invoice.v1",
        "ledger.tenant.v1",
        "ledger.payout.v1",
        "ledger.payment.v1",
        "ledger.expense.v1",
    ]
