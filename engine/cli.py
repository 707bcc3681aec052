"""The ``ledgerflow`` command: run the engine and its parts, manage the local stack and tenants."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any, Literal

import click
import orjson

from engine.config import Settings, load_settings


def _logging(level: str = "INFO") -> None:
    from engine.logs import configure

    try:
        configure(level)
    except ValueError as exc:  # LEDGERFLOW_LOG_FORMAT names no format
        raise click.ClickException(str(exc)) from exc


def _telemetry(settings: Settings, service_name: str) -> None:
    """Traces and metrics for a long-running process (docs/observability.md)."""
    from engine.telemetry import TelemetryConfigError, configure

    try:
        configure(service_name, settings)
    except TelemetryConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Ledgerflow: an event-sourced integration engine for finance and tax events on Apache Kafka.

    Settings come from the environment (LEDGERFLOW_DATABASE_URL, LEDGERFLOW_KAFKA, ...); the
    defaults match the local stack started by `ledgerflow stack up`.
    """
    ctx.obj = load_settings()


# -- local stack ------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The local Apache Kafka (KRaft) and PostgreSQL, run as plain processes under var/."""


@stack.command("up")
@click.pass_obj
def stack_up(settings: Settings) -> None:
    """Start Kafka and PostgreSQL if they are not running, and wait until both answer."""
    from engine import stack as local_stack

    local_stack.up(settings)


@stack.command("down")
@click.pass_obj
def stack_down(settings: Settings) -> None:
    """Stop what `stack up` started."""
    from engine import stack as local_stack

    local_stack.down(settings)


@stack.command("status")
@click.pass_obj
def stack_status(settings: Settings) -> None:
    """Show whether Kafka and PostgreSQL are running."""
    from engine import stack as local_stack

    for service in local_stack.status(settings):
        state = click.style("running", fg="green") if service.running else click.style("stopped", fg="red")
        click.echo(
            f"{service.name:<11} {state:<18} pid={service.pid or '-':<8} {service.address} {service.detail}"
        )


@main.group()
def topics() -> None:
    """Kafka topics of the engine."""


@topics.command("ensure")
@click.option(
    "--partitions",
    type=int,
    default=None,
    help="Partitions for new topics (default: LEDGERFLOW_PARTITIONS or 6).",
)
@click.pass_obj
def topics_ensure(settings: Settings, partitions: int | None) -> None:
    """Create the engine's topics that do not exist yet."""
    from engine.topics import ensure_all

    names, created = ensure_all(settings, partitions)
    for name in names:
        click.echo(f"{name:<50} {'created' if name in created else 'exists'}")


@main.command()
@click.option("--topic", required=True, help="Topic to re-read, by its logical name (ledger.invoice.v1).")
@click.option(
    "--from",
    "start",
    default="earliest",
    show_default=True,
    help="earliest, an OFFSET for every partition, P:OFFSET[,P:OFFSET...] or an ISO-8601 time.",
)
@click.option(
    "--to",
    "end",
    default="latest",
    show_default=True,
    help="latest (the end offsets when the replay starts) or an ISO-8601 time (exclusive).",
)
@click.option("--into-topic", default=None, help="Republish the records unchanged to this topic.")
@click.option("--projection", default=None, help="Re-apply the records to this projection's table.")
@click.option("--tenant", default=None, help="Only records of this tenant (ce_source /tenants/ID).")
@click.option("--dry-run", is_flag=True, help="Read and count what would be replayed; write nothing.")
@click.pass_obj
def replay(
    settings: Settings,
    topic: str,
    start: str,
    end: str,
    into_topic: str | None,
    projection: str | None,
    tenant: str | None,
    dry_run: bool,
) -> None:
    """Re-read a topic range into another topic or a projection (docs/runbooks/replay.md)."""
    from engine import replay as replaying

    try:
        request = replaying.parse_request(
            topic, start, end, into_topic=into_topic, projection=projection, tenant=tenant, dry_run=dry_run
        )
        summary = replaying.replay(settings, request, replaying.terminal_progress())
    except replaying.ReplayUsageError as exc:
        raise click.UsageError(str(exc)) from exc
    except replaying.ReplayError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(replaying.render_summary(summary))


# -- reporting and export ---------------------------------------------------------------------


@main.group("reporting")
def reporting_group() -> None:
    """Analysts' reporting views: database roles that see one tenant's rows (docs/reporting.md)."""


@reporting_group.command("grant")
@click.option("--tenant", "tenant_id", type=click.UUID, required=True, help="The tenant the role reads.")
@click.option("--role", required=True, help="Database role to create or update (lower case, e.g. acme_bi).")
@click.option(
    "--password",
    envvar="LEDGERFLOW_REPORTING_PASSWORD",
    default=None,
    help="Login password (or LEDGERFLOW_REPORTING_PASSWORD). A new role without one gets a generated "
    "password, shown once; an existing role keeps its password.",
)
@click.pass_obj
def reporting_grant(settings: Settings, tenant_id: Any, role: str, password: str | None) -> None:
    """Create (or update) a LOGIN role that can read the reporting views, and only its tenant's rows."""
    from engine import db
    from engine.application import TenantNotFound
    from engine.bootstrap import build_service
    from projections import reporting

    if password is not None and not password:
        raise click.UsageError("--password must not be empty")
    try:
        reporting.check_role_name(role)
    except reporting.RoleRefused as exc:
        raise click.UsageError(str(exc)) from exc
    db.ensure_schema(settings)
    service = build_service(settings, pool_size=2)
    try:
        service.get_tenant(tenant_id)
    except TenantNotFound as exc:
        raise click.ClickException(f"no tenant {tenant_id}") from exc
    finally:
        service.close()
    try:
        with db.connect(settings) as conn, conn.transaction():
            granted = reporting.grant_tenant_role(
                conn, settings, tenant_id=tenant_id, role=role, password=password
            )
    except reporting.RoleRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"role {role} {'created' if granted.created else 'updated'}: reads tenant {tenant_id}"
        f" in schema {settings.reporting_schema}"
    )
    if granted.password is not None:
        click.echo(f"password: {granted.password}")
        click.echo("Store the password now: it is not shown again.", err=True)


@reporting_group.command("revoke")
@click.option("--role", required=True, help="A role created by `ledgerflow reporting grant`.")
@click.pass_obj
def reporting_revoke(settings: Settings, role: str) -> None:
    """Take a tenant role's reporting rights away and drop the role."""
    from engine import db
    from projections import reporting

    try:
        with db.connect(settings) as conn, conn.transaction():
            revoked = reporting.revoke_tenant_role(conn, settings, role)
    except reporting.RoleRefused as exc:
        raise click.ClickException(str(exc)) from exc
    if revoked.dropped:
        click.echo(f"role {role} revoked and dropped")
    else:
        click.echo(f"role {role} revoked here; kept: it also reads another deployment (schema or database)")


@reporting_group.command("list")
@click.pass_obj
def reporting_list(settings: Settings) -> None:
    """The tenant roles of this deployment."""
    from engine import db
    from projections import reporting

    with db.connect(settings) as conn:
        roles = reporting.tenant_roles(conn, settings)
    if not roles:
        click.echo(f"no tenant roles in {settings.reporting_schema}")
    for r in roles:
        missing = "" if r.exists else "  (role missing: dropped outside ledgerflow)"
        click.echo(f"{r.role:<30} tenant={r.tenant_id}  granted={r.granted_at:%Y-%m-%d %H:%M}{missing}")


@main.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), required=True, help="File format.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True, help="File to write.")
@click.option("--tenant", "tenant_id", type=click.UUID, default=None, help="Only this tenant's rows.")
@click.option(
    "--from",
    "date_from",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="First date (YYYY-MM-DD) included; for the monthly summaries, its month.",
)
@click.option("--to", "date_to", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last date included.")
@click.option(
    "--chunk-rows",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="Rows fetched and written at a time (a Parquet row group each).",
)
@click.pass_obj
def export(
    settings: Settings,
    name: str,
    fmt: Literal["csv", "parquet"],
    out_file: str,
    tenant_id: Any,
    date_from: Any,
    date_to: Any,
    chunk_rows: int,
) -> None:
    """Write the reporting view NAME to a CSV or Parquet file.

    NAME is one of invoices, invoice_lines, invoice_tax_summary, hsn_summary and einvoice_status
    (docs/reporting.md). Without --tenant, every tenant's rows.
    """
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from engine import db
    from engine.export import export as export_view
    from projections import reporting

    if name not in reporting.REPORTS:
        raise click.UsageError(f"no report named {name!r}; the reports are {', '.join(reporting.REPORTS)}")
    day_from = date_from.date() if date_from else None
    day_to = date_to.date() if date_to else None
    if day_from and day_to and day_from > day_to:
        raise click.UsageError(f"--from ({day_from}) is after --to ({day_to})")
    out = Path(out_file)
    if not out.parent.is_dir():
        raise click.UsageError(f"--out: directory {out.parent} does not exist")

    class Bar:
        def __init__(self, progress: Progress) -> None:
            self.progress = progress
            self.task = progress.add_task(name, total=None)

        def start(self, total_rows: int) -> None:
            self.progress.update(self.task, total=total_rows)

        def advance(self, rows: int) -> None:
            self.progress.advance(self.task, rows)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        db.ensure_schema(settings)  # the views exist and are current
        with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
            result = export_view(
                settings,
                name,
                fmt,
                out,
                tenant_id=tenant_id,
                date_from=day_from,
                date_to=day_to,
                chunk_rows=chunk_rows,
                progress=Bar(progress),
            )
    except db.DatabaseUnavailable as exc:
        raise click.ClickException(f"PostgreSQL is unreachable: {exc}") from exc
    click.echo(f"{result.rows} rows of {name} written to {result.path}")


# -- tenants ----------------------------------------------------------------------------------


@main.group()
def tenants() -> None:
    """Register tenants and manage their API keys."""


@tenants.command("create")
@click.option("--name", required=True, help="Display name.")
@click.option("--legal-name", required=True, help="Legal name as registered for GST.")
@click.option("--country", default="IN", show_default=True, help="ISO country code.")
@click.option("--gstin", default=None, help="The tenant's GSTIN (validated).")
@click.option("--state", default=None, help='GST state, numeric ("29") or alpha ("KA").')
@click.option(
    "--einvoicing/--no-einvoicing", default=False, show_default=True, help="Generate IRNs for B2B invoices."
)
@click.option("--json", "as_json", is_flag=True, help='Print {"tenant_id": ..., "api_key": ...}.')
@click.pass_obj
def tenants_create(
    settings: Settings,
    name: str,
    legal_name: str,
    country: str,
    gstin: str | None,
    state: str | None,
    einvoicing: bool,
    as_json: bool,
) -> None:
    """Register a tenant and print its API key. The key is shown only this once."""
    from engine.application import ValidationFailed
    from engine.bootstrap import build_service

    service = build_service(settings, pool_size=2)
    try:
        registered = service.register_tenant(
            name=name,
            legal_name=legal_name,
            country=country,
            gstin=gstin,
            state=state,
            einvoicing_enabled=einvoicing,
        )
    except ValidationFailed as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        click.echo(orjson.dumps({"tenant_id": str(registered.tenant_id), "api_key": registered.api_key}))
    else:
        click.echo(f"tenant_id: {registered.tenant_id}\napi_key:   {registered.api_key}")
        click.echo(
            "Store the API key now: it is not shown again (rotate with `ledgerflow tenants rotate-key`).",
            err=True,
        )


@tenants.command("rotate-key")
@click.argument("tenant_id")
@click.option(
    "--grace-hours", type=float, default=24.0, show_default=True, help="How long the old key keeps working."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tenants_rotate_key(settings: Settings, tenant_id: str, grace_hours: float, as_json: bool) -> None:
    """Issue a new API key; the previous one stays valid for the grace period."""
    from datetime import timedelta
    from uuid import UUID

    from engine.application import TenantNotFound
    from engine.bootstrap import build_service

    service = build_service(settings, pool_size=2)
    try:
        rotated = service.rotate_api_key(UUID(tenant_id), timedelta(hours=grace_hours))
    except (TenantNotFound, ValueError) as exc:
        raise click.ClickException(f"no tenant {tenant_id}") from exc
    if as_json:
        click.echo(orjson.dumps({"tenant_id": str(rotated.tenant_id), "api_key": rotated.api_key}))
    else:
        click.echo(f"api_key: {rotated.api_key}  (the previous key works for {grace_hours:g} more hours)")


@tenants.command("list")
@click.pass_obj
def tenants_list(settings: Settings) -> None:
    """List registered tenants."""
    from engine.bootstrap import build_service

    for tenant in build_service(settings, pool_size=2).list_tenants():
        click.echo(f"{tenant.id}  {tenant.name:<30} {tenant.gstin or '-':<16} state={tenant.state or '-'}")


# -- processes --------------------------------------------------------------------------------


def _run_until_signal(make: Any) -> None:
    """Run an async batch service (relay, projector, connector worker) until SIGINT/SIGTERM.

    Two settings measured on the relay (bench/, 5-line invoices): uvloop, about +4% events/s, and a
    larger first-generation GC threshold, about +7%: a batch of thousands of decoded events would
    otherwise trigger a collection every few hundred allocations.
    """
    import gc

    import uvloop

    gc.set_threshold(50_000, 20, 100)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await make(stop)

    uvloop.run(runner())


@main.command()
@click.option("--host", default=None, help="Bind address (default LEDGERFLOW_API_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default LEDGERFLOW_API_PORT or 8080).")
@click.option(
    "--workers",
    type=int,
    default=2,
    show_default=True,
    help="uvicorn worker processes (2 suits a 2-core machine: see docs/performance.md).",
)
@click.pass_obj
def api(settings: Settings, host: str | None, port: int | None, workers: int) -> None:
    """Serve the HTTP API."""
    import uvicorn

    _logging()
    uvicorn.run(
        "engine.api.main:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level="info",
        # Logging and telemetry are set up by engine/api/main.py in each worker process.
        log_config=None,
        access_log=False,
    )


@main.command()
@click.pass_obj
def relay(settings: Settings) -> None:
    """Publish stored events to Kafka (tails the event store's notification log)."""
    from engine import db
    from engine.relay import Relay, UnencodableEvent

    _logging()
    _telemetry(settings, "ledgerflow-relay")
    db.ensure_schema(settings)
    try:
        _run_until_signal(Relay(settings).run)
    except UnencodableEvent as exc:  # already logged at CRITICAL; a short last word, no traceback
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--projection", "names", multiple=True, help="Projection(s) to run (default: all).")
@click.pass_obj
def projector(settings: Settings, names: tuple[str, ...]) -> None:
    """Keep projections (read models) up to date from the ledger topics."""
    from projections.catalogue import PROJECTIONS
    from projections.runner import ProjectionRunner

    _logging()
    _telemetry(settings, "ledgerflow-projector")
    chosen = [p for p in PROJECTIONS if not names or p.name in names]
    if not chosen:
        raise click.ClickException(
            f"no projection named {', '.join(names)}; known: {[p.name for p in PROJECTIONS]}"
        )

    async def run_all(stop: asyncio.Event) -> None:
        await asyncio.gather(*(ProjectionRunner(settings, p).run(stop) for p in chosen))

    _run_until_signal(run_all)


@main.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run a stream worker (faust): the ingest agent. Start several to share partitions."""
    import faust

    from streams.app import create_app

    _logging()
    _telemetry(settings, "ledgerflow-worker")
    app = create_app(settings)
    # override_logging=False: faust would replace our handler (JSON lines, context, redaction).
    faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False).execute_from_commandline()


# -- connectors -------------------------------------------------------------------------------


@main.group()
def connectors() -> None:
    """Connector workers (calls to external systems) and their state."""


@connectors.command("run")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Jobs in flight per connector.")
@click.pass_obj
def connectors_run(settings: Settings, concurrency: int) -> None:
    """Run the connector workers (e-invoicing, ...). Start several to share partitions."""
    from engine.bootstrap import build_service
    from engine.security.secrets import load_key_ring
    from streams.catalogue import connector_specs
    from streams.connectors.worker import ConnectorWorker

    _logging()
    _telemetry(settings, "ledgerflow-connectors")
    service = build_service(settings)
    specs, irn_jobs = connector_specs(settings, service, load_key_ring(settings.var_dir))

    async def run_workers(stop: asyncio.Event) -> None:
        try:
            await ConnectorWorker(settings, specs, concurrency=concurrency).run(stop)
        finally:
            await irn_jobs.close()

    _run_until_signal(run_workers)


@connectors.command("status")
@click.option("--connector", "names", multiple=True, help="Only these connectors.")
@click.pass_obj
def connectors_status(settings: Settings, names: tuple[str, ...]) -> None:
    """Per connector: in flight, waiting per tier, DLQ depth, circuits, success rate, p95 (last hour)."""
    from streams.connectors.ops import render_status, status

    click.echo(render_status(status(settings, list(names) or None)))


# -- lag and projections ----------------------------------------------------------------------


@main.command()
@click.option("--group", "groups", multiple=True, help="Only these consumer groups (full ids).")
@click.option(
    "--sample",
    "sample_seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Sample twice, SECONDS apart, so that one run shows which groups make progress.",
)
@click.option(
    "--stall-after",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Seconds without progress, while records wait, that make a group stalled"
    " (default: LEDGERFLOW_STALL_AFTER_S or 60).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit with status 1 if any group is stalled (or Kafka does not answer): a health check"
    " for cron or exec probes.",
)
@click.pass_obj
def lag(
    settings: Settings,
    groups: tuple[str, ...],
    sample_seconds: float | None,
    stall_after: float | None,
    check: bool,
) -> None:
    """Consumer lag per group and partition, each group's state and STATUS: ok, lagging, stalled or
    no members (default: the engine's groups). Every run is kept as a lag sample in PostgreSQL;
    see docs/runbooks/stuck-consumer.md."""
    import time

    from engine.lag import KafkaUnavailable, consumer_health, render_health, stall_after_from_env

    try:
        limit = stall_after if stall_after is not None else stall_after_from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    def pause(seconds: float) -> None:
        click.echo(f"sampling again in {seconds:g}s…", err=True)
        time.sleep(seconds)

    try:
        report = consumer_health(
            settings,
            list(groups) or None,
            stall_after=limit,
            sample_seconds=sample_seconds or 0.0,
            pause=pause,
        )
    except KafkaUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    if not report.history_stored:
        click.echo(
            "PostgreSQL unavailable: lag history neither stored nor read; compared this run's samples only",
            err=True,
        )
    click.echo(render_health(report))
    if check and report.stalled:
        click.echo(f"stalled: {', '.join(g.group for g in report.stalled)}", err=True)
        sys.exit(1)


@main.group()
def projections() -> None:
    """Projections (read models): what exists and how far behind each one is."""


@projections.command("list")
@click.pass_obj
def projections_list(settings: Settings) -> None:
    """Each projection with its consumer group and the topics it reads."""
    from projections.status import render_projection_list

    click.echo(render_projection_list(settings))


@projections.command("status")
@click.option("--projection", "names", multiple=True, help="Only these projections.")
@click.pass_obj
def projections_status(settings: Settings, names: tuple[str, ...]) -> None:
    """Per projection and partition: applied offset, end offset, lag and last update."""
    from projections.status import render_projection_status, status

    click.echo(render_projection_status(status(settings, list(names) or None)))
    from projections.rebuild import pending

    for rebuild in pending(settings):
        if not names or rebuild["projection"] in names:
            click.echo(
                f"rebuild pending: {rebuild['projection']} from {rebuild['source']} into"
                f" {rebuild['shadow_table']}, {rebuild['events_applied']:,} events applied,"
                f" last progress {rebuild['updated_at']:%Y-%m-%d %H:%M:%S%z}"
                " (run `ledgerflow projections rebuild` again to resume it)"
            )


@projections.command("rebuild")
@click.argument("name")
@click.option(
    "--from-event-store",
    is_flag=True,
    help="Read the PostgreSQL event store instead of Kafka (topics compacted, truncated or lost).",
)
@click.option("--restart", is_flag=True, help="Discard an interrupted rebuild instead of resuming it.")
@click.option(
    "--batch", type=click.IntRange(1, 100_000), default=5000, show_default=True, help="Events per write."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def projections_rebuild(
    settings: Settings, name: str, from_event_store: bool, restart: bool, batch: int, as_json: bool
) -> None:
    """Build projection NAME afresh into a shadow table, then swap it in atomically.

    The live table keeps serving queries (and the live projector keeps applying new events) during
    the rebuild. An interrupted rebuild resumes where it stopped when run again.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from projections.rebuild import RebuildError, rebuild

    _logging("WARNING")
    console = Console(stderr=True)
    with Progress(
        TextColumn(f"[bold]rebuild {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=as_json or not console.is_terminal,
    ) as bar:
        task = bar.add_task("events", total=None, rate="")
        started = time.monotonic()
        # Without a terminal (cron, CI, a log file) no bar is drawn: a plain line every 10 s instead.
        plain = not as_json and not console.is_terminal
        last_line = [started]

        def progress(done: int, expected: int) -> None:
            now = time.monotonic()
            elapsed = now - started
            rate = f"{done / elapsed:,.0f} ev/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=expected, rate=rate)
            if plain and (now - last_line[0] >= 10 or (expected and done >= expected)):
                last_line[0] = now
                click.echo(
                    f"rebuild {name}: {done:,} of {expected:,} events, {rate}, {elapsed:.0f} s", err=True
                )

        try:
            report = rebuild(
                settings,
                name,
                from_event_store=from_event_store,
                restart=restart,
                batch=batch,
                progress=progress,
            )
        except RebuildError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
        )
        return
    click.echo(
        f"{name}: rebuilt from {report.source}{' (resumed)' if report.resumed else ''} and swapped in;"
        f" {report.events_applied:,} events in {report.fill_seconds:.1f} s ({report.rate:,.0f} ev/s),"
        f" indexes {report.index_seconds:.1f} s, swap {report.swap_seconds:.2f} s"
        f" ({report.swap_events:,} events applied during the swap), {report.rows:,} rows,"
        f" {report.undecodable} undecodable records skipped, {report.seconds:.1f} s in all"
    )


@main.group()
def dlq() -> None:
    """Dead letters: connector jobs (--connector NAME, by DLQ offset) or events a projection could not
    apply (--projection NAME, by dead-letter id): list, show, redrive (after fixing the cause) or
    discard."""


def _offsets(offsets: tuple[int, ...], everything: bool) -> list[int] | Literal["all"]:
    if everything:
        return "all"
    if not offsets:
        raise click.UsageError("name the offsets (connector) or ids (projection) to act on, or pass --all")
    return list(offsets)


def _dlq_owner(connector: str | None, projection: str | None) -> None:
    if (connector is None) == (projection is None):
        raise click.UsageError("name exactly one of --connector NAME or --projection NAME")


_connector_option = click.option("--connector", help="Connector name, e.g. gst-irp.")
_projection_option = click.option("--projection", help="Projection name, e.g. invoice_register.")


def _projection_dead_letters(action: Any) -> Any:
    """Run a projection dead-letter operation, turning its refusals into a clean CLI error."""
    from projections.dead_letters import DeadLetterError

    try:
        return action()
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc


@dlq.command("list")
@_connector_option
@_projection_option
@click.pass_obj
def dlq_list(settings: Settings, connector: str | None, projection: str | None) -> None:
    """One line per dead letter. Connector: offset, job, tenant, error class and code, attempts, state.
    Projection: id, state, the record it was read from, event type, aggregate, error."""
    _dlq_owner(connector, projection)
    if projection is not None:
        from projections import dead_letters

        found = _projection_dead_letters(lambda: dead_letters.letters(settings, projection))
        click.echo(dead_letters.render_list(found))
        return
    from streams.connectors.ops import dlq_list as list_letters
    from streams.connectors.ops import render_dlq_list

    assert connector is not None
    click.echo(render_dlq_list(list_letters(settings, connector)))


@dlq.command("show")
@_connector_option
@_projection_option
@click.argument("offset", type=int)
@click.pass_obj
def dlq_show(settings: Settings, connector: str | None, projection: str | None, offset: int) -> None:
    """Every header and the value of one dead letter (OFFSET: the DLQ offset of a connector's
    letter, or the id of a projection's letter)."""
    _dlq_owner(connector, projection)
    if projection is not None:
        from projections import dead_letters

        found = _projection_dead_letters(lambda: dead_letters.letter(settings, projection, offset))
        if found is None:
            raise click.ClickException(f"no dead letter with id {offset} of projection {projection}")
        click.echo(dead_letters.render_letter(found))
        return
    from streams.connectors.ops import dlq_show as show_letter
    from streams.connectors.ops import render_dead_letter

    assert connector is not None
    letter = show_letter(settings, connector, offset)
    if letter is None:
        raise click.ClickException(f"no dead letter at offset {offset} of {connector}")
    click.echo(render_dead_letter(letter))


@dlq.command("redrive")
@_connector_option
@_projection_option
@click.option("--all", "everything", is_flag=True, help="Every record not yet redriven or discarded.")
@click.argument("offsets", type=int, nargs=-1)
@click.pass_obj
def dlq_redrive(
    settings: Settings,
    connector: str | None,
    projection: str | None,
    everything: bool,
    offsets: tuple[int, ...],
) -> None:
    """Connector: re-queue records with their attempt count reset. Projection: apply the letters
    again, in topic order, each in its own transaction; exits 1 if any fails again (it stays
    pending with the new error). Fix the cause first."""
    _dlq_owner(connector, projection)
    chosen = _offsets(offsets, everything)
    if projection is not None:
        from projections import dead_letters

        report = _projection_dead_letters(lambda: dead_letters.redrive(settings, projection, chosen))
        click.echo(str(report))
        if not report.ok:
            sys.exit(1)
        return
    from streams.connectors.ops import dlq_redrive as redrive

    assert connector is not None
    click.echo(str(redrive(settings, connector, chosen)))


@dlq.command("discard")
@_connector_option
@_projection_option
@click.option("--all", "everything", is_flag=True)
@click.argument("offsets", type=int, nargs=-1)
@click.pass_obj
def dlq_discard(
    settings: Settings,
    connector: str | None,
    projection: str | None,
    everything: bool,
    offsets: tuple[int, ...],
) -> None:
    """Mark records as handled without applying or re-queueing them (a projection's row stops being
    incomplete once no pending letter of its aggregate remains)."""
    _dlq_owner(connector, projection)
    chosen = _offsets(offsets, everything)
    if projection is not None:
        from projections import dead_letters

        report = _projection_dead_letters(lambda: dead_letters.discard(settings, projection, chosen))
        click.echo(str(report))
        if not report.ok:
            sys.exit(1)
        return
    from streams.connectors.ops import dlq_discard as discard

    assert connector is not None
    click.echo(str(discard(settings, connector, chosen)))


@main.command()
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Stream workers to start; they share the partitions (more than LEDGERFLOW_PARTITIONS sit idle).",
)
@click.option("--no-stack", is_flag=True, help="Do not start the local stack (use LEDGERFLOW_* services).")
@click.pass_obj
def run(settings: Settings, workers: int, no_stack: bool) -> None:
    """Run the whole engine in the foreground: API, relay, projector and stream workers."""
    from engine.supervisor import run_engine

    sys.exit(run_engine(settings, workers=workers, start_stack=not no_stack))


if __name__ == "__main__":
    main()
