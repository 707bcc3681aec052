"""The outer packages' tables and dependants, handed to the engine at start (``engine.db.register_outer``).

The engine migrates only its own tables and names no outer package (the import contracts in
pyproject.toml). Each process's composition root (the CLI, the API's ``create_app``, the test and bench
harnesses) calls ``register()`` next to ``connectors.registry.register()``. This module sits in ops
because ops is the one outer package that may import all the others.
"""

from __future__ import annotations

from engine import db
from projections import reporting

# In this order since before the engine stopped naming them: ``db.schema_fingerprint`` hashes the
# migrations in order, so reordering would make every deployed schema look unmigrated (and a
# runtime-only role would then refuse to start until the owner migrates again).
MIGRATIONS: list[tuple[str, str]] = [
    ("projections", "invoice_register.sql"),
    ("streams.connectors", "runtime.sql"),
    ("ops", "consumer_lag_samples.sql"),
    ("projections", "rebuild.sql"),
    ("projections", "dead_letters.sql"),
    ("projections", "etims_compliance.sql"),
    ("projections", "gst_outward_supplies.sql"),
    ("projections", "reconciliation.sql"),
    ("projections", "audit_trail.sql"),
]

# Objects over projection tables (the reporting views and their row-level security), installed after
# every migration and again by a projection rebuild inside its swap transaction.
DEPENDANTS: list[db.Dependant] = [reporting.install]


def register() -> None:
    """Hand the outer packages' migrations and dependants to the engine; calling it again changes nothing."""
    db.register_outer(MIGRATIONS, DEPENDANTS)
