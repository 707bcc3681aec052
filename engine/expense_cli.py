"""``ledgerflow expenses ...``: the durable SLA timer of expense approvals and the rebuild of the
expense read tables (engine/expenses.py). ``ledgerflow run`` starts the timer (ops/supervisor.py)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from engine.config import Settings

log = logging.getLogger("ledgerflow.expense_timer")

# The SLA is hours long: a look every few seconds escalates well within a minute of the due time.
POLL_SECONDS = 5.0


@click.group("expenses")
def expenses_group() -> None:
    """College expenses: the approval SLA timer and the read tables."""


@expenses_group.command("timer")
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.05),
    default=POLL_SECONDS,
    show_default=True,
    help="How often due approval requests are looked for.",
)
@click.pass_obj
def timer(settings: Settings, poll_seconds: float) -> None:
    """Escalate approval requests whose SLA lapsed (once each), until SIGTERM or SIGINT.

    Due times live in PostgreSQL (expense_approval_timers); rows are claimed with FOR UPDATE SKIP
    LOCKED, so a restarted timer picks up what a killed one left, and two timers never share a row."""
    from engine import db
    from engine.bootstrap import build_service
    from engine.expenses import ExpenseBook
    from engine.logs import configure

    configure("INFO")
    db.ensure_schema(settings)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    service = build_service(settings)
    book = ExpenseBook(service)
    log.info("expense approval timer started (every %.2fs)", poll_seconds)
    try:
        while not stop.is_set():
            try:
                escalated = book.fire_due()
            except db.DatabaseUnavailable as exc:  # PostgreSQL restarting: try again next round
                log.warning("expense timer: %s", exc)
                escalated = []
            for expense_id in escalated:
                log.info("expense %s escalated: its approval SLA lapsed", expense_id)
            stop.wait(poll_seconds)
    finally:
        service.close()


@expenses_group.command("rebuild")
@click.pass_obj
def rebuild(settings: Settings) -> None:
    """Rebuild expense_register and budget_register from the event store."""
    from engine import db
    from engine.bootstrap import build_service
    from engine.expenses import ExpenseBook

    db.ensure_schema(settings)
    service = build_service(settings)
    try:
        expenses, budgets = ExpenseBook(service).rebuild()
    finally:
        service.close()
    click.echo(f"{expenses} expenses and {budgets} budgets projected")
