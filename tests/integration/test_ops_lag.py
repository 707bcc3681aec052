"""``ledgerflow lag`` and ``ledgerflow projections status`` against the real broker and database."""

from __future__ import annotations

from uuid import UUID

import pytest
from click.testing import CliRunner

from engine.application import LedgerService
from engine.cli import main
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.relay import Relay
from ops.lag import consumer_health, lag, render_health
from projections.invoice_register import InvoiceRegister
from projections.runner import ProjectionRunner
from projections.status import render_projection_list, render_projection_status, status
from tests.conftest import BackgroundLoop, wait_for
from tests.integration.helpers import invoice_body, register_tenant

pytestmark = pytest.mark.integration

INVOICES = 4


def register_lag(settings: Settings) -> tuple[int, int]:
    """(lag, records on the topic) of invoice_register."""
    (s,) = status(settings, ["invoice_register"])
    return s.lag, sum(p.end for p in s.partitions)


def test_projection_status_and_group_lag_follow_the_projector(
    service: LedgerService, settings: Settings, topics: list[str], background: BackgroundLoop
) -> None:
    tenant_id, _ = register_tenant(service)
    for i in range(INVOICES):
        service.issue_invoice(UUID(tenant_id), IssueInvoice.model_validate(invoice_body(f"LAG-{i}")))
    background.start(Relay(settings).run)

    # No projector yet: every published invoice event is lag, nothing applied.
    wait_for(lambda: register_lag(settings) == (INVOICES, INVOICES), what="all invoice events as lag")
    (before,) = status(settings, ["invoice_register"])
    assert all(p.applied is None and p.updated_at is None for p in before.partitions)
    assert len(before.partitions) == settings.partitions
    rendered = render_projection_status([before])
    assert f"invoice_register  lag={INVOICES}  last update never" in rendered
    assert settings.topic("ledger.invoice.v1") in render_projection_list(settings)
    group = f"{settings.topic_prefix}ledgerflow.projection.invoice_register"
    assert all(g.group != group for g in lag(settings))

    runner = ProjectionRunner(settings, InvoiceRegister())
    background.start(runner.run)
    wait_for(lambda: register_lag(settings) == (0, INVOICES), what="the projection catching up")
    (after,) = status(settings, ["invoice_register"])
    assert after.last_update is not None
    assert sum(p.applied + 1 for p in after.partitions if p.applied is not None) == INVOICES

    def caught_up_and_stable() -> list[str]:
        groups = {g.group: g for g in lag(settings)}
        g = groups.get(group)
        return [g.group] if g is not None and g.stable and g.total == 0 and g.partitions else []

    wait_for(caught_up_and_stable, what="the projector's group stable with lag 0")
    groups = lag(settings)
    # Only this test's groups are listed by default.
    assert all(g.group.startswith(f"{settings.topic_prefix}ledgerflow") for g in groups)
    (mine,) = [g for g in groups if g.group == group]
    assert mine.members == 1
    assert {p.topic for p in mine.partitions} == {settings.topic("ledger.invoice.v1")}
    assert sum(p.end for p in mine.partitions) == INVOICES
    assert lag(settings, [group])[0].group == group
    report = consumer_health(settings, [group])
    assert [(g.group, g.status) for g in report.groups] == [(group, "ok")]
    assert report.history_stored
    rendered = render_health(report).splitlines()
    assert rendered[1].split() == [group, "ok", "Stable", "1", "0"]
    background.check()


def test_the_commands_are_wired() -> None:
    runner = CliRunner()
    for args in (["lag", "--help"], ["projections", "list"], ["projections", "status", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output


def test_run_refuses_fewer_than_one_stream_worker() -> None:
    result = CliRunner().invoke(main, ["run", "--workers", "0", "--no-stack"])
    assert result.exit_code == 2
    assert "Invalid value for '--workers': 0 is not in the range x>=1" in result.output
