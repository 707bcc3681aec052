"""The registry is the one list of connectors: what the engine derives from it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from connectors import catalogue, registry
from connectors.kit import Connector
from connectors.registry import CONNECTORS, connector
from engine import db, integrations
from engine.cli import main
from engine.config import Settings, rate_variable
from engine.security.egress import EndpointPolicy
from ops import schema as outer_schema
from streams import catalogue as runtime
from streams.connectors.spec import topics_for


def test_every_registered_connector_is_a_provider_with_its_url_policy_and_connection_test() -> None:
    names = [c.name for c in CONNECTORS]

    assert names == [
        "gst-irp",
        "gstin-lookup",
        "etims",
        "gstn-returns",
        "razorpay",
        "stripe",
        "bank",
        "sendgrid",
        "quickbooks",
        "veekaart",
        "tally",
        "super-accountant",
        "fee-portal",
    ]
    assert sorted(integrations.PROVIDERS) == sorted(names)
    assert integrations.PROVIDERS["gstin-lookup"].credential_fields == ("client_id", "client_secret")
    assert set(catalogue.ENDPOINT_POLICIES) == set(catalogue.CONNECTION_TESTS) == set(names)


def test_only_connectors_with_a_handler_get_topics_and_gst_irp_keeps_its_names() -> None:
    specs = runtime.planned_specs(Settings(retry_delays=(0, 60)))  # 0: straight back onto the jobs topic

    assert [s.name for s in specs] == [
        "gst-irp",
        "gstin-lookup",
        "etims",
        "gstn-returns",
        "bank",
        "sendgrid",
        "quickbooks",
        "tally",
        "super-accountant",
    ]
    assert topics_for(specs[0]) == [
        "connector.gst-irp.jobs.v1",
        "connector.gst-irp.retry.1m.v1",
        "connector.gst-irp.dlq.v1",
    ]
    # gstin-lookup verifies the buyer of each issued invoice (issue 11); the engine's schedule, then
    # the DLQ: a buyer left unverified is a redrive, not a ledger that waits.
    assert topics_for(specs[1]) == [
        "connector.gstin-lookup.jobs.v1",
        "connector.gstin-lookup.retry.1m.v1",
        "connector.gstin-lookup.dlq.v1",
    ]
    # eTIMS runs sale and device jobs (etims-sales wired its routes and handler); the deployment's
    # schedule applies to it too, repeated for ever.
    assert topics_for(specs[2]) == [
        "connector.etims.jobs.v1",
        "connector.etims.retry.1m.v1",
        "connector.etims.dlq.v1",
    ]
    assert specs[2].retry_policy.forever and not specs[0].retry_policy.forever
    assert not specs[1].retry_policy.forever


def test_a_rate_limit_comes_from_its_variable_else_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    irp = connector("gst-irp")
    assert rate_variable("gst-irp") == "LEDGERFLOW_GST_IRP_RATE"
    monkeypatch.delenv("LEDGERFLOW_GST_IRP_RATE", raising=False)
    assert runtime.rate_limit(Settings(), irp) == 10.0
    monkeypatch.setenv("LEDGERFLOW_GST_IRP_RATE", "4")
    assert runtime.rate_limit(Settings(), irp) == 4.0
    monkeypatch.setenv("LEDGERFLOW_GST_IRP_RATE", "none")
    assert runtime.rate_limit(Settings(), irp) is None
    assert runtime.rate_limit(replace(Settings(), rate_limits={"gst-irp": 7.0}), irp) == 7.0
    # gst-irp's limit counts requests: its handler's transport holds the permits, not the worker.
    assert runtime.spec_for(replace(Settings(), rate_limits={"gst-irp": 7.0}), irp).rate_limit_per_s is None


def test_a_declaration_that_contradicts_itself_is_refused() -> None:
    lookup = connector("gstin-lookup")
    with pytest.raises(ValueError, match="endpoint policy"):
        Connector("other", lookup.settings, lookup.endpoints, lookup.connection_test)
    with pytest.raises(ValueError, match="lower case"):
        Connector("Other", lookup.settings, EndpointPolicy("Other"), lookup.connection_test)
    with pytest.raises(ValueError, match="no handler"):
        Connector(
            "other",
            lookup.settings,
            EndpointPolicy("other"),
            lookup.connection_test,
            route_event_types=frozenset({"ledgerflow.invoice.issued"}),
        )


def test_connectors_list_shows_each_connector_without_any_credential_value() -> None:
    shown = CliRunner().invoke(main, ["connectors", "list"])

    assert shown.exit_code == 0, shown.output
    assert "gst-irp: India GST e-invoice portal" in shown.output
    assert "client_secret (secret)" in shown.output and "password (secret)" in shown.output
    assert "connector.gst-irp.jobs.v1" in shown.output and "LEDGERFLOW_GST_IRP_RATE" in shown.output
    assert "gstin-lookup: GST taxpayer search" in shown.output
    assert "connector.gstin-lookup.jobs.v1" in shown.output


# The order every deployed schema was fingerprinted with (db.schema_fingerprint hashes them in order):
# the engine's own, with the outer packages' (ops/schema.py) before connector_state.sql.
ENGINE_AND_OUTER_MIGRATIONS = [
    ("engine", "bookkeeping.sql"),
    ("projections", "invoice_register.sql"),
    ("streams.connectors", "runtime.sql"),
    ("ops", "consumer_lag_samples.sql"),
    ("projections", "rebuild.sql"),
    ("projections", "dead_letters.sql"),
    ("projections", "etims_compliance.sql"),
    ("projections", "gst_outward_supplies.sql"),
    ("projections", "reconciliation.sql"),
    ("projections", "audit_trail.sql"),
    ("engine", "connector_state.sql"),
    ("engine", "etims_tax_rates.sql"),
    ("engine", "tax_return_parts.sql"),
    ("engine", "webhooks.sql"),
    ("engine", "payments.sql"),
    ("engine", "tds.sql"),
    ("engine", "integration_health.sql"),
    ("engine", "invoice_drafts.sql"),
    ("engine", "catalogue.sql"),
    ("engine", "expenses.sql"),
    ("engine", "fees.sql"),
    ("engine", "users.sql"),
    ("engine", "audit.sql"),
]


def test_the_engine_refuses_to_migrate_before_the_outer_packages_tables_are_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The engine names no outer package: a process that forgot to hand their tables over must fail
    # loudly rather than migrate (and fingerprint) a schema without the projections.
    monkeypatch.setattr(db, "_outer_migrations", None)
    monkeypatch.setattr(db, "_dependants", None)
    with pytest.raises(db.MigrationsNotRegistered, match=r"register_outer"):
        db.all_migrations()
    with pytest.raises(db.MigrationsNotRegistered, match=r"register_outer"):
        db.dependants()


def test_registering_the_outer_packages_again_keeps_their_migrations_in_the_fingerprinted_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "_outer_migrations", None)
    monkeypatch.setattr(db, "_dependants", None)
    outer_schema.register()
    outer_schema.register()

    assert db.all_migrations()[: len(ENGINE_AND_OUTER_MIGRATIONS)] == ENGINE_AND_OUTER_MIGRATIONS
    assert [d.__module__ for d in db.dependants()] == ["projections.reporting"]


def test_the_engine_refuses_to_list_providers_or_migrations_before_the_connectors_are_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The core imports nothing from connectors/: a process's entry point hands them over, and one
    # that forgot must fail loudly rather than reject every provider or migrate half a schema.
    monkeypatch.setattr(db, "_registered_migrations", None)
    with pytest.raises(db.MigrationsNotRegistered, match=r"connectors\.registry\.register"):
        db.all_migrations()
    with pytest.raises(integrations.ProvidersNotRegistered, match=r"connectors\.registry\.register"):
        sorted(integrations._Providers())


def test_registering_migrations_again_adds_each_table_once_after_the_engines_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "_registered_migrations", None)
    registry.register()
    declared = [m for c in CONNECTORS for m in c.migrations]
    assert db.all_migrations() == [*ENGINE_AND_OUTER_MIGRATIONS, *declared]

    own = ("connectors.gstin_lookup", "lookups.sql")
    db.register_migrations([own])
    db.register_migrations([own, ("engine", "bookkeeping.sql")])
    registry.register()

    assert db.all_migrations() == [*ENGINE_AND_OUTER_MIGRATIONS, *declared, own]
    assert sorted(integrations.PROVIDERS) == sorted(c.name for c in CONNECTORS)
