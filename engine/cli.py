"""The ``ledgerflow`` command: run the engine and its parts, manage the local stack and tenants."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import click
import orjson

from engine.config import Settings, load_settings
from engine.expense_cli import expenses_group

if TYPE_CHECKING:
    from engine.application import LedgerService


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
    from connectors import registry
    from ops import schema

    # The CLI is a composition root: it hands the connectors and the outer packages' tables to the
    # core before any command runs.
    registry.register()
    schema.register()
    ctx.obj = load_settings()


# -- local stack ------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The local Apache Kafka (KRaft) and PostgreSQL, run as plain processes under var/."""


_CLUSTER_DIR = click.option(
    "--cluster-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the multi-broker cluster lives (default: var/kafka-cluster).",
)


@stack.command("up")
@click.option(
    "--brokers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="1: the single broker on LEDGERFLOW_KAFKA. More: a separate KRaft cluster of that many "
    "broker+controller nodes on --base-port.. (topics there get 3 replicas, min.insync.replicas=2).",
)
@click.option(
    "--base-port",
    type=click.IntRange(min=1, max=65535),
    default=19092,
    show_default=True,
    help="With --brokers N>1: brokers listen on base..base+N-1, controllers 100 ports higher.",
)
@_CLUSTER_DIR
@click.pass_obj
def stack_up(settings: Settings, brokers: int, base_port: int, cluster_dir: Path | None) -> None:
    """Start Kafka and PostgreSQL if they are not running, and wait until both answer."""
    from ops import stack as local_stack

    try:
        if brokers == 1:
            local_stack.up(settings)
            return
        home = cluster_dir or local_stack.default_cluster_home(settings)
        cluster = local_stack.KafkaCluster.on_ports(home, brokers, base_port)
        local_stack.up_cluster(settings, cluster)
    except local_stack.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"export LEDGERFLOW_KAFKA={cluster.bootstrap}")


@stack.command("down")
@_CLUSTER_DIR
@click.pass_obj
def stack_down(settings: Settings, cluster_dir: Path | None) -> None:
    """Stop what `stack up` started (the single broker, a cluster, PostgreSQL)."""
    from ops import stack as local_stack

    try:
        local_stack.down(settings, cluster_dir)
    except local_stack.StackError as exc:
        raise click.ClickException(str(exc)) from exc


@stack.command("status")
@_CLUSTER_DIR
@click.pass_obj
def stack_status(settings: Settings, cluster_dir: Path | None) -> None:
    """Show whether Kafka (and a cluster's nodes) and PostgreSQL are running."""
    from ops import stack as local_stack

    for service in local_stack.status(settings, cluster_dir):
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
    from ops.topics import ensure_all

    names, created = ensure_all(settings, partitions)
    for name in names:
        click.echo(f"{name:<50} {'created' if name in created else 'exists'}")


@main.group("kafka")
def kafka_group() -> None:
    """Kafka access control: the ACLs of the engine, ingest producers and readers."""


@kafka_group.command("acls")
@click.option("--engine", "engine_user", default="engine", show_default=True, help="The engine's SASL user.")
@click.option(
    "--ingest-producer", "producers", multiple=True, help="A SASL user that may write ingest.* (repeatable)."
)
@click.option(
    "--reader",
    "readers",
    multiple=True,
    metavar="USER[:GROUP_PREFIX]",
    help="A SASL user that may read ledger.* with groups under GROUP_PREFIX (default USER.) (repeatable).",
)
@click.option("--apply", "apply_now", is_flag=True, help="Create the ACLs (as a super user of the broker).")
@click.pass_obj
def kafka_acls(
    settings: Settings,
    engine_user: str,
    producers: tuple[str, ...],
    readers: tuple[str, ...],
    apply_now: bool,
) -> None:
    """Print the ACL table (docs/runbooks/kafka-acls.md); with --apply, create it on the cluster of
    LEDGERFLOW_KAFKA as the LEDGERFLOW_KAFKA_USERNAME, who must be in the broker's super.users."""
    from engine.kafka_acls import KafkaAclError, Reader, acl_table, apply_acls

    parsed = [
        Reader(user, prefix or f"{user}.")
        for user, _, prefix in (reader.partition(":") for reader in readers)
    ]
    table = acl_table(settings, engine=engine_user, ingest_producers=producers, readers=parsed)
    for rule in table:
        click.echo(rule.describe())
    if apply_now:
        try:
            created = apply_acls(settings, table)
        except KafkaAclError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{created} ACL bindings in place on {settings.kafka_bootstrap}")


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
    from ops import replay as replaying

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

    settings = _as_owner(settings)  # creates a role and grants on the owner's tables
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

    settings = _as_owner(settings)  # drops a role and revokes on the owner's tables
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
    from ops.export import export as export_view
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


def _address_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The seller address printed on e-invoices (line1, city and pincode are what the IRP needs)."""
    for option in reversed(
        (
            click.option("--address-line1", default=None, help="Address, first line (building, street)."),
            click.option("--address-line2", default=None, help="Address, second line."),
            click.option("--city", default=None, help="City or locality."),
            click.option("--pincode", default=None, help="Six-digit PIN code."),
        )
    ):
        command = option(command)
    return command


def _address_from(line1: str | None, line2: str | None, city: str | None, pincode: str | None) -> Any:
    """The address as the API would accept it, or a usage error naming what is wrong."""
    from pydantic import ValidationError

    from engine.commands import Address

    given = {"line1": line1, "line2": line2, "city": city, "pincode": pincode}
    if not any(given.values()):
        return None
    try:
        return Address.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        names = {
            "line1": "--address-line1",
            "line2": "--address-line2",
            "city": "--city",
            "pincode": "--pincode",
        }
        problems = "; ".join(
            f"{names.get(str(e['loc'][0]), str(e['loc'][0]))}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(f"invalid address: {problems}") from exc


def _operator() -> str:
    """Who a CLI change is recorded as (the audit trail's changed_by)."""
    import getpass

    try:
        return f"operator:cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator:cli"


@tenants.command("create")
@click.option("--name", "--trade-name", "name", required=True, help="Trade name (printed on e-invoices).")
@click.option("--legal-name", required=True, help="Legal name as registered for GST.")
@click.option("--country", default="IN", show_default=True, help="ISO country code.")
@click.option("--gstin", default=None, help="The tenant's GSTIN (validated).")
@click.option("--state", default=None, help='GST state, numeric ("29") or alpha ("KA").')
@click.option("--kra-pin", default=None, help="A Kenyan (--country KE) tenant's KRA PIN, e.g. P051234567X.")
@_address_options
@click.option(
    "--einvoicing/--no-einvoicing",
    default=False,
    show_default=True,
    help="Generate IRNs: needs the gst-irp integration, so use `tenants update --einvoicing` once it is set.",
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
    kra_pin: str | None,
    address_line1: str | None,
    address_line2: str | None,
    city: str | None,
    pincode: str | None,
    einvoicing: bool,
    as_json: bool,
) -> None:
    """Register a tenant and print its API key. The key is shown only this once."""
    from engine.application import ValidationFailed
    from engine.bootstrap import build_service
    from engine.tenant_profile import address_dict

    if einvoicing:
        # E-invoicing is the gst-irp integration's switch (routing reads it), and a new tenant has
        # no integration yet: there is nothing the flag could turn on.
        raise click.UsageError(
            "--einvoicing needs the tenant's gst-irp integration, which a new tenant does not have: "
            "create the tenant, set the integration (PUT /v1/integrations/gst-irp with its key), "
            "then `ledgerflow tenants update TENANT_ID --einvoicing` (or send enabled: true in the PUT)"
        )
    address = _address_from(address_line1, address_line2, city, pincode)
    service = build_service(settings, pool_size=2)
    try:
        registered = service.register_tenant(
            name=name,
            legal_name=legal_name,
            country=country,
            gstin=gstin,
            state=state,
            address=address_dict(address),
            changed_by=_operator(),
            kra_pin=kra_pin,
        )
    except ValidationFailed as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        service.close()
    if as_json:
        click.echo(orjson.dumps({"tenant_id": str(registered.tenant_id), "api_key": registered.api_key}))
    else:
        click.echo(f"tenant_id: {registered.tenant_id}\napi_key:   {registered.api_key}")
        click.echo(
            "Store the API key now: it is not shown again (rotate with `ledgerflow tenants rotate-key`).",
            err=True,
        )
    if address is None and country.upper() == "IN":
        click.echo(
            "No address given: e-invoices need one "
            "(`ledgerflow tenants update TENANT_ID --address-line1 .. --city .. --pincode ..`).",
            err=True,
        )


@tenants.command("update")
@click.argument("tenant_id", type=click.UUID)
@click.option("--name", "--trade-name", "name", default=None, help="Trade name (printed on e-invoices).")
@_address_options
@click.option(
    "--einvoicing/--no-einvoicing",
    default=None,
    help="Turn the tenant's gst-irp integration on or off (it must be configured).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@click.pass_obj
def tenants_update(
    settings: Settings,
    tenant_id: UUID,
    name: str | None,
    address_line1: str | None,
    address_line2: str | None,
    city: str | None,
    pincode: str | None,
    einvoicing: bool | None,
    as_json: bool,
) -> None:
    """Change a tenant's trade name or address, or switch e-invoicing; each change is recorded as an
    event naming the operator. The legal identity (GSTIN, state, country, legal name) cannot change.

    An address given replaces the stored one: give every line of it."""
    from engine.application import IntegrationNotConfigured, TenantNotFound, ValidationFailed
    from engine.bootstrap import build_service
    from engine.tenant_profile import address_dict

    address = _address_from(address_line1, address_line2, city, pincode)
    fields: dict[str, Any] = {}
    if name is not None:
        fields["name"] = name
    if address is not None:
        fields["address"] = address_dict(address)
    if not fields and einvoicing is None:
        raise click.UsageError(
            "nothing to change: give --trade-name, an address or --einvoicing/--no-einvoicing"
        )
    service = build_service(settings, pool_size=2)
    try:
        if fields:
            service.update_profile(tenant_id, _operator(), fields)
        if einvoicing is not None:
            service.set_einvoicing(tenant_id, einvoicing, _operator())
        profile = service.get_tenant(tenant_id).profile
    except TenantNotFound as exc:
        raise click.ClickException(f"no tenant {tenant_id}") from exc
    except (ValidationFailed, IntegrationNotConfigured) as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        service.close()
    if as_json:
        click.echo(orjson.dumps(profile))
    else:
        address_text = ", ".join(str(v) for v in (profile["address"] or {}).values() if v) or "-"
        click.echo(
            f"{profile['tenant_id']}  {profile['trade_name']}  address: {address_text}"
            f"  einvoicing: {'on' if profile['einvoicing_enabled'] else 'off'}"
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
        rotated = service.rotate_api_key(UUID(tenant_id), timedelta(hours=grace_hours), _operator())
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
        # A Kenyan tenant is identified by its KRA PIN where an Indian one has its GSTIN.
        identity = tenant.gstin or tenant.kra_pin or "-"
        click.echo(f"{tenant.id}  {tenant.name:<30} {identity:<16} state={tenant.state or '-'}")


# -- tenants: ingest signing keys (docs/topics.md, "Signing ingest commands") ----------------------


@tenants.group("ingest-keys")
def tenants_ingest_keys() -> None:
    """A tenant's keys for signing commands on the ingest topic (at most two active)."""


def _ingest_key_tenant(settings: Settings, tenant_id: str) -> tuple[UUID, LedgerService]:
    """The tenant's id, checked against the event store, and the service whose pool reaches its keys."""
    from engine.application import TenantNotFound
    from engine.bootstrap import build_service

    service = build_service(settings, pool_size=1)
    try:
        return service.get_tenant(UUID(tenant_id)).id, service
    except (TenantNotFound, ValueError) as exc:
        service.close()
        raise click.ClickException(f"no tenant {tenant_id}") from exc


@tenants_ingest_keys.command("create")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True, help='Print {"key_id", "secret", "created_at"}.')
@click.pass_obj
def tenants_ingest_keys_create(settings: Settings, tenant_id: str, as_json: bool) -> None:
    """Create an ingest key and print its secret (shown only this once)."""
    from engine import db
    from engine.security import ingest_keys
    from engine.security.secrets import load_key_ring

    tenant, service = _ingest_key_tenant(settings, tenant_id)
    try:
        with db.transaction(service.pool) as conn:
            issued = ingest_keys.create(conn, load_key_ring(settings.var_dir), tenant)
    except ingest_keys.TooManyActiveKeys as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        service.close()
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "key_id": issued.key_id,
                    "secret": issued.secret,
                    "created_at": issued.created_at.isoformat(),
                }
            )
        )
    else:
        click.echo(f"key_id: {issued.key_id}\nsecret: {issued.secret}")
        click.echo("Store the secret now: it is not shown again.", err=True)


@tenants_ingest_keys.command("list")
@click.argument("tenant_id")
@click.pass_obj
def tenants_ingest_keys_list(settings: Settings, tenant_id: str) -> None:
    """List a tenant's ingest keys (never their secrets)."""
    from engine import db
    from engine.security import ingest_keys

    tenant, service = _ingest_key_tenant(settings, tenant_id)
    try:
        with db.transaction(service.pool) as conn:
            found = ingest_keys.views(conn, tenant)
    finally:
        service.close()

    def when(value: Any) -> str:
        return value.isoformat(timespec="seconds") if value is not None else "-"

    click.echo(f"{'KEY ID':<20} {'STATE':<8} {'CREATED':<26} {'REVOKED':<26} LAST USED")
    for key in found:
        state = "active" if key["active"] else "revoked"
        click.echo(
            f"{key['key_id']:<20} {state:<8} {when(key['created_at']):<26} {when(key['revoked_at']):<26}"
            f" {when(key['last_used_at'])}"
        )


@tenants_ingest_keys.command("revoke")
@click.argument("tenant_id")
@click.argument("key_id")
@click.pass_obj
def tenants_ingest_keys_revoke(settings: Settings, tenant_id: str, key_id: str) -> None:
    """Revoke one of a tenant's ingest keys; workers refuse it within LEDGERFLOW_INGEST_KEY_CACHE_S."""
    from engine import db
    from engine.security import ingest_keys

    tenant, service = _ingest_key_tenant(settings, tenant_id)
    try:
        with db.transaction(service.pool) as conn:
            revoked = ingest_keys.revoke(conn, tenant, key_id)
    finally:
        service.close()
    if revoked is None:
        raise click.ClickException(f"tenant {tenant_id} has no ingest key {key_id}")
    click.echo(f"revoked {key_id} at {revoked['revoked_at'].isoformat(timespec='seconds')}")


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

    from engine.api.http_parser import ErrorShapeHttpToolsProtocol

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
        # httptools (C) instead of h11 saved ~20% of a worker's CPU per POST; this subclass answers
        # what it cannot parse (e.g. a header ended by a bare LF) in our error shape, not uvicorn's
        # plain-text 400 (tests/integration/test_hostile_input.py; docs/performance.md).
        http=ErrorShapeHttpToolsProtocol,
    )


@main.command()
@click.option(
    "--encoders",
    type=click.IntRange(min=0),
    default=2,
    envvar="LEDGERFLOW_RELAY_ENCODERS",
    show_default=True,
    help="Encoder processes for large pages (0: encode in the relay process; docs/performance.md).",
)
@click.pass_obj
def relay(settings: Settings, encoders: int) -> None:
    """Publish stored events to Kafka (tails the event store's notification log)."""
    from engine import db
    from engine.relay import Relay, UnencodableEvent, keep_freed_memory

    keep_freed_memory()
    _logging()
    _telemetry(settings, "ledgerflow-relay")
    db.ensure_schema(settings)
    try:
        _run_until_signal(Relay(settings, encoders=encoders).run)
    except UnencodableEvent as exc:  # already logged at CRITICAL; a short last word, no traceback
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--projection", "names", multiple=True, help="Projection(s) to run (default: all).")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    envvar="LEDGERFLOW_PROJECTOR_PROCESSES",
    help="Processes sharing the partitions (default: one per core, at most 4; ops/projector_pool.py).",
)
@click.option(
    "--share", default=None, hidden=True, help="I/N: one process of a pool (ops/projector_pool.py)."
)
@click.pass_obj
def projector(settings: Settings, names: tuple[str, ...], processes: int | None, share: str | None) -> None:
    """Keep projections (read models) up to date from the ledger topics."""
    import gc

    from ops import projector_pool
    from projections.catalogue import PROJECTIONS
    from projections.runner import ProjectionRunner

    _logging()
    processes = processes or projector_pool.default_processes(settings)
    if processes > 1 and share is None:
        unknown = set(names) - {p.name for p in PROJECTIONS}
        if unknown:
            raise click.ClickException(f"no projection named {', '.join(sorted(unknown))}")
        sys.exit(projector_pool.run_pool(settings, names, processes))
    _telemetry(settings, "ledgerflow-projector")
    chosen = [p for p in PROJECTIONS if not names or p.name in names]
    if not chosen:
        raise click.ClickException(
            f"no projection named {', '.join(names)}; known: {[p.name for p in PROJECTIONS]}"
        )

    # One runner for all of them: each record fetched and decoded once (projections/runner.py).
    runner = ProjectionRunner(settings, chosen, share=projector_pool.parse_share(share))
    runner.prepare()
    # What is alive now (modules, the schema catalogue, readers) lives as long as the process:
    # frozen out of every collection (Python docs, "gc.freeze"), the runner's explicit collections
    # (projections/collection.py) walk only what its batches made: a full collection of the whole
    # heap was 4-5 % of the projector's CPU under perf.
    gc.collect()
    gc.freeze()

    async def run_all(stop: asyncio.Event) -> None:
        await runner.run(stop)

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
    """Run the workers of every connector that runs jobs (connectors/registry.py). Start several to
    share partitions."""
    from engine.bootstrap import build_service
    from engine.security.secrets import load_key_ring
    from streams.catalogue import connector_specs
    from streams.connectors.worker import ConnectorWorker

    _logging()
    _telemetry(settings, "ledgerflow-connectors")
    service = build_service(settings)
    specs, handlers = connector_specs(settings, service, load_key_ring(settings.var_dir))

    async def run_workers(stop: asyncio.Event) -> None:
        try:
            await ConnectorWorker(settings, specs, concurrency=concurrency).run(stop)
        finally:
            await handlers.close()

    _run_until_signal(run_workers)


@connectors.command("list")
@click.pass_obj
def connectors_list(settings: Settings) -> None:
    """Every registered connector (connectors/registry.py): credentials, rate limit, topics, sandbox."""
    from connectors.registry import CONNECTORS
    from engine.config import rate_variable
    from streams.catalogue import rate_limit, spec_for
    from streams.connectors.spec import topics_for

    for connector in CONNECTORS:
        fields = ", ".join(
            f"{c.name}{' (secret)' if c.secret else ''}" for c in connector.settings.credentials
        )
        rate = rate_limit(settings, connector)
        limit = "none" if rate is None else f"{rate:g}/s per {connector.rate_limit_counts}"
        if connector.runs_jobs:
            topics = ", ".join(topics_for(spec_for(settings, connector)))
        else:
            topics = "none (called on demand)"
        sandbox = connector.sandbox
        click.echo(
            f"{connector.name}: {connector.settings.title}\n"
            f"  credentials: {fields}\n"
            f"  rate limit: {limit} ({rate_variable(connector.name)})\n"
            f"  topics: {topics}\n"
            f"  sandbox: {f'{sandbox.module} on port {sandbox.port}' if sandbox else 'none'}"
        )


@connectors.command("status")
@click.option("--connector", "names", multiple=True, help="Only these connectors.")
@click.pass_obj
def connectors_status(settings: Settings, names: tuple[str, ...]) -> None:
    """Per connector: in flight, waiting per tier, DLQ depth, circuits, success rate, p95 (last hour)."""
    from streams.connectors.ops import render_status, status

    click.echo(render_status(status(settings, list(names) or None)))


# -- outbound webhooks (docs/webhooks.md) ------------------------------------------------------


@main.group()
def webhooks() -> None:
    """Outbound webhooks: the delivery worker."""


@webhooks.command("run")
@click.pass_obj
def webhooks_run(settings: Settings) -> None:
    """Deliver ledger events to the tenants' webhook endpoints (streams/webhooks.py). Start several
    to share the ledger topics' partitions. LEDGERFLOW_WEBHOOK_RETRY_SCALE shortens the retry
    schedule (demos), LEDGERFLOW_WEBHOOK_RATE sets the per-endpoint rate limit (default 50/s)."""
    from os import environ

    from streams.webhooks import DeliveryWorker, settings_from

    _logging()
    _telemetry(settings, "ledgerflow-webhooks")
    options = settings_from(environ)
    _run_until_signal(DeliveryWorker(settings, options).run)


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

    from ops.lag import KafkaUnavailable, consumer_health, render_health, stall_after_from_env

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
    "--batch",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Events per write (default: 2,500; a fill worker holds about two batches in memory).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes filling from Kafka, each a share of the partitions (default: one per core, at most 4).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def projections_rebuild(
    settings: Settings,
    name: str,
    from_event_store: bool,
    restart: bool,
    batch: int | None,
    workers: int | None,
    as_json: bool,
) -> None:
    """Build projection NAME afresh into a shadow table, then swap it in atomically.

    The live table keeps serving queries (and the live projector keeps applying new events) during
    the rebuild. An interrupted rebuild resumes where it stopped when run again.
    """
    settings = _as_owner(settings)  # the swap drops and renames tables: the owner's job
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

    from projections.rebuild import DEFAULT_BATCH, DEFAULT_WORKERS, RebuildError, rebuild

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
                batch=batch or DEFAULT_BATCH,
                progress=progress,
                workers=workers or DEFAULT_WORKERS,
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
    _dlq_act(settings, "redrive", connector, projection, offsets, everything)


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
    _dlq_act(settings, "discard", connector, projection, offsets, everything)


def _dlq_act(
    settings: Settings,
    action: Literal["redrive", "discard"],
    connector: str | None,
    projection: str | None,
    offsets: tuple[int, ...],
    everything: bool,
) -> None:
    """Redrive or discard the chosen dead letters of a projection or a connector; a projection's
    report exits 1 when a letter could not be handled (it stays pending with the new error)."""
    _dlq_owner(connector, projection)
    chosen = _offsets(offsets, everything)
    if projection is not None:
        from projections import dead_letters

        act = dead_letters.redrive if action == "redrive" else dead_letters.discard
        report = _projection_dead_letters(lambda: act(settings, projection, chosen))
        click.echo(str(report))
        if not report.ok:
            sys.exit(1)
        return
    from streams.connectors import ops

    assert connector is not None
    connector_act = ops.dlq_redrive if action == "redrive" else ops.dlq_discard
    click.echo(str(connector_act(settings, connector, chosen)))


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
    from ops.supervisor import run_engine

    sys.exit(run_engine(settings, workers=workers, start_stack=not no_stack))


# -- key ring (docs/runbooks/keys.md) ---------------------------------------------------------


@main.group()
def keys() -> None:
    """The key ring sealing stored secrets: rotate, re-encrypt, see what each key seals, retire."""


def _keys_progress(column: str, done: int, total: int) -> None:
    click.echo(f"re-encrypting {column}: {done}/{total}", err=True)


@keys.command("rotate")
@click.option("--key-id", default=None, help="Id of the new key (default: k<UTC timestamp>).")
@click.option(
    "--batch", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Rows per commit."
)
@click.pass_obj
def keys_rotate(settings: Settings, key_id: str | None, batch: int) -> None:
    """Add a new key (it seals from now on) and re-encrypt every stored secret under it.

    Running processes pick the new key up within seconds, without a restart. Old keys keep
    opening values until `keys retire`. Interrupted, `keys reencrypt` finishes the job.
    """
    from engine.security.rotation import RotationError, rotate
    from engine.security.secrets import SecretError

    try:
        kid, done = rotate(settings, key_id=key_id, batch_size=batch, progress=_keys_progress)
    except RotationError as exc:
        raise click.ClickException(str(exc)) from exc
    except SecretError as exc:
        raise click.ClickException(
            f"a stored value does not open with the key ring: {exc}; the new key is active, the other"
            " values are re-encrypted up to that row (`ledgerflow keys reencrypt` resumes)"
        ) from exc
    moved = ", ".join(f"{name}: {n}" for name, n in done.items()) or "nothing stored"
    click.echo(f"active key: {kid}; re-encrypted {moved}")


@keys.command("reencrypt")
@click.option(
    "--batch", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Rows per commit."
)
@click.pass_obj
def keys_reencrypt(settings: Settings, batch: int) -> None:
    """Seal every value not yet sealed with the active key again with it (resumes a rotation)."""
    from engine.security.rotation import reencrypt
    from engine.security.secrets import SecretError, load_key_ring

    ring = load_key_ring(settings.var_dir)
    try:
        done = reencrypt(settings, ring, batch_size=batch, progress=_keys_progress)
    except SecretError as exc:
        raise click.ClickException(f"a stored value does not open with the key ring: {exc}") from exc
    moved = ", ".join(f"{name}: {n}" for name, n in done.items()) or "nothing stored"
    click.echo(f"active key: {ring.active}; re-encrypted {moved}")


@keys.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def keys_status(settings: Settings, as_json: bool) -> None:
    """Each key id: active or not, in the ring or not, and how many stored values it seals."""
    from engine.security.rotation import key_use
    from engine.security.secrets import load_key_ring

    uses = key_use(settings, load_key_ring(settings.var_dir))
    if as_json:
        click.echo(
            orjson.dumps(
                [
                    {"key_id": u.key_id, "active": u.active, "in_ring": u.in_ring, "sealed": u.sealed}
                    for u in uses
                ]
            )
        )
        return
    click.echo(f"{'KEY ID':<28} {'ACTIVE':<7} {'IN RING':<8} SEALS")
    for u in uses:
        seals = ", ".join(f"{name}: {n}" for name, n in u.sealed.items()) or "nothing (can be retired)"
        if u.active and not u.total:
            seals = "nothing yet"
        click.echo(
            f"{u.key_id:<28} {'yes' if u.active else 'no':<7} {'yes' if u.in_ring else 'NO':<8} {seals}"
        )


@keys.command("retire")
@click.argument("key_id")
@click.pass_obj
def keys_retire(settings: Settings, key_id: str) -> None:
    """Remove KEY_ID from the key ring; refused while it is active or still seals anything."""
    from engine.security.rotation import RotationError, retire

    try:
        retire(settings, key_id)
    except RotationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"retired {key_id}")


@keys.command("new")
@click.argument("key_id")
def keys_new(key_id: str) -> None:
    """Print a new key as `kid:base64`, to put first in LEDGERFLOW_SECRET_KEYS by hand."""
    from engine.security.secrets import new_key_spec

    click.echo(new_key_spec(key_id))


# -- database roles (docs/runbooks/local-stack.md, "Database roles") ---------------------------


@main.group("db")
def db_group() -> None:
    """The PostgreSQL schema: migrations, run as the owner role."""


@db_group.command("migrate")
@click.pass_obj
def db_migrate(settings: Settings) -> None:
    """Create or update every table, view and the event store as the owner role
    (LEDGERFLOW_OWNER_DATABASE_URL, else LEDGERFLOW_DATABASE_URL), and grant the runtime role
    (LEDGERFLOW_DATABASE_URL's) what the engine uses."""
    from engine.bootstrap import migrate
    from engine.db import DatabaseUnavailable, SchemaNotMigrated

    try:
        migrate(settings)
    except (DatabaseUnavailable, SchemaNotMigrated) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"schema {settings.db_schema} migrated as {_url_user(settings.owner_url)};"
        f" runtime role: {settings.runtime_role}"
    )


def _as_owner(settings: Settings) -> Settings:
    """The settings of a command that changes the schema, refused up front without the owner's URL."""
    from engine import db

    owner = settings.as_owner()
    try:
        with db.connect(owner, autocommit=True) as conn:
            allowed = db.may_change_schema(conn, owner.db_schema)
    except db.DatabaseUnavailable as exc:
        raise click.ClickException(f"PostgreSQL unavailable: {exc}") from exc
    if not allowed:
        raise click.ClickException(
            f"this command changes the schema, which role {_url_user(owner.database_url)!r} may not do:"
            " set LEDGERFLOW_OWNER_DATABASE_URL to the owner role's URL (docs/runbooks/local-stack.md)"
        )
    return owner


def _url_user(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).username or "")


# -- eTIMS (docs/etims.md) ------------------------------------------------------------------------


@main.group("etims")
def etims_group() -> None:
    """Kenya KRA eTIMS: the daily compliance report."""


@etims_group.command("report")
@click.option("--tenant", "tenant_id", type=click.UUID, required=True, help="The Kenyan tenant.")
@click.option(
    "--date", "day", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Sale date (Africa/Nairobi)."
)
@click.option("--bhf-id", "branch_id", default=None, help="Only this branch (KRA bhfId).")
@click.option(
    "--environment", type=click.Choice(["sandbox", "production"]), default=None, help="Only this environment."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as GET /v1/etims/compliance does.")
@click.pass_obj
def etims_report(
    settings: Settings,
    tenant_id: UUID,
    day: Any,
    branch_id: str | None,
    environment: str | None,
    as_json: bool,
) -> None:
    """Print a tenant's eTIMS sales of one day per environment and branch: submitted, signed,
    pending, failed and voided, with the failure reasons by KRA result code."""
    from engine import db
    from projections import etims_compliance

    try:
        with db.connect(settings) as conn:
            report = etims_compliance.daily(
                conn, tenant_id, day.date(), branch_id=branch_id, environment=environment
            )
    except db.DatabaseUnavailable as exc:
        raise click.ClickException(f"PostgreSQL is unreachable: {exc}") from exc
    if as_json:
        click.echo(etims_compliance.dumps(report).decode())
        return
    click.echo(f"eTIMS compliance of tenant {tenant_id} for {report.day.isoformat()} (Africa/Nairobi)")
    if report.incomplete:
        click.echo(
            "INCOMPLETE: an event of this tenant is a pending projection dead letter"
            " (`ledgerflow dlq list --projection etims_compliance`)"
        )
    if not report.branches:
        click.echo("No eTIMS sales that day.")
        return
    heading = ("environment", "branch", "submitted", "signed", "pending", "failed", "voided", "credit notes")
    click.echo("  ".join(f"{h:>12}" for h in heading))
    for b in report.branches:
        values = (
            b.environment,
            b.branch_id,
            b.submitted,
            b.signed,
            b.pending,
            b.failed,
            b.voided,
            b.credit_notes,
        )
        click.echo("  ".join(f"{v!s:>12}" for v in values))
    totals = report.totals()
    click.echo(
        "  ".join(
            f"{v!s:>12}"
            for v in (
                "total",
                "",
                *(totals[k] for k in ("submitted", "signed", "pending", "failed", "voided", "credit_notes")),
            )
        )
    )
    for b in report.branches:
        for r in b.failure_reasons:
            click.echo(
                f"{b.environment} branch {b.branch_id}: result code {r.result_code}, {r.refusals} refusal(s)"
                f" of {r.sales} sale(s); last {r.last_at.isoformat()}: {r.last_message}"
            )


# ``ledgerflow expenses timer|rebuild`` (engine/expense_cli.py).
main.add_command(expenses_group)
# -- audit ------------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The audit trail: the hash chain over the event store (docs/audit-log.md)."""


@audit.command("verify")
@click.option("--table", "tables", multiple=True, help="Only these event store tables (default: all).")
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    help="TABLE:EVENT:HASH printed by an earlier run and kept outside the database: the chain must still"
    " pass through it.",
)
@click.pass_obj
def audit_verify(settings: Settings, tables: tuple[str, ...], anchors: tuple[str, ...]) -> None:
    """Recompute the hash chain of every event store table from the stored events.

    Exits 0 when every chain is intact, printing each table's head (keep it elsewhere: an anchor);
    exits 1 naming the first broken event (notification id, aggregate, version) otherwise.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from engine import db, event_chain

    try:
        anchored = {t: (n, h) for t, n, h in (event_chain.parse_anchor(a) for a in anchors)}
    except ValueError as exc:
        raise click.UsageError(f"--anchor: {exc}") from exc
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with (
            db.connect(settings) as conn,
            Progress(*columns, console=console, disable=not console.is_terminal) as bar,
        ):

            def on_table(table: str, events: int) -> Callable[[int], None]:
                task = bar.add_task(table, total=events)
                return lambda done: bar.advance(task, done)

            verdicts = event_chain.verify_schema(
                conn, settings.db_schema, tables=list(tables) or None, anchors=anchored, on_table=on_table
            )
    except db.DatabaseUnavailable as exc:
        raise click.ClickException(f"PostgreSQL unavailable: {exc}") from exc
    broken = [v.broken for v in verdicts if v.broken is not None]
    for verdict in verdicts:
        if verdict.broken is None:
            click.echo(
                f"{verdict.table}: {verdict.events:,} events, chain intact;"
                f" head {verdict.table}:{verdict.head_id}:{verdict.head_hash.hex()}"
            )
    for found in broken:
        click.echo(f"BROKEN {found.describe()}", err=True)
    if broken or not verdicts:
        if not verdicts:
            click.echo("no event store tables found", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
