"""``ledgerflow run``: the whole engine in one terminal, each process's log lines prefixed.

Starts the local stack if needed, ensures topics, migrates the schema as the owner role, creates a
demo tenant on first start, then runs the API, the relay, the projector, the connectors and N
stream workers as child processes logged in as the runtime role (``child_environment``). A child that
exits is started again after an exponential backoff (``RestartPolicy``), and each restart is
counted in PostgreSQL (``process_restarts``, shown by ``GET /metrics``); the other children keep
running. Ctrl-C stops them all (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from uuid import UUID

import click
import psycopg

from connectors import etims, gst_irp
from connectors.registry import BY_NAME, CONNECTORS
from engine import db
from engine.config import Settings
from engine.security.secrets import load_key_ring

DEMO_GSTIN = "29AAGCB7383J1Z4"
ETIMS_SANDBOX_PORT = etims.SANDBOX_PORT
# The demo Kenyan tenant's item (registered with the sandbox at first start) and a sale of it as a
# till sends it: 16% VAT (tax type B), prices without VAT (docs/etims.md, "Sales").
DEMO_ITEM_CODE = "KE2NTXU0000001"
DEMO_ITEM_CLASS = "5059690800"
DEMO_KE_BODY = (
    '{"number": "KE-2026-0001", "date": "2026-01-19", "buyer": {"name": "Wanjiku Stores"}, '
    f'"lines": [{{"item_code": "{DEMO_ITEM_CODE}", "description": "Maize flour 2kg", "quantity": "3", '
    '"unit_price": "200.00", "tax_type": "B"}]}'
)
# The country whose demo tenant uses a connector's sandbox; every connector not named here is Indian.
DEMO_COUNTRY_OF = {"etims": "KE"}
IRP_SANDBOX_PORT = gst_irp.SANDBOX_PORT

DATABASE_URL_ENV = "LEDGERFLOW_DATABASE_URL"
OWNER_DATABASE_URL_ENV = "LEDGERFLOW_OWNER_DATABASE_URL"

COLOURS = ["cyan", "magenta", "yellow", "green", "blue", "bright_cyan", "bright_magenta"]

DEMO_BODY = (
    '{"number": "INV-2026-001", "date": "2026-01-19", '
    '"buyer": {"name": "Reliable Traders Pvt Ltd", "gstin": "27AAACR5055K1Z7", "state": "27", '
    '"address": {"line1": "12 Market Road", "city": "Pune", "pincode": "411001"}}, '
    '"lines": [{"description": "Transformer coil", "hsn": "8504", "quantity": "10", "unit": "NOS", '
    '"unit_price": "100.00", "gst_rate": "18"}]}'
)


@dataclass
class Child:
    name: str
    args: list[str]
    colour: str
    process: subprocess.Popen[bytes] | None = None
    # Restarts in the current crash loop (reset once the child stays up), and when the pending
    # restart is due (None while the child runs).
    restarts: int = 0
    started_at: float = 0.0
    restart_due: float | None = None


@dataclass(frozen=True)
class RestartPolicy:
    """When to start a crashed child again: ``first_delay`` doubling up to ``max_delay`` (1 s, 2 s,
    4 s ... 60 s), so a crash loop neither spins the CPU nor floods the log, and a child that was up
    for ``stable_after`` seconds starts its next crash loop from ``first_delay`` again."""

    first_delay: float = 1.0
    max_delay: float = 60.0
    stable_after: float = 60.0

    def delay(self, restart: int) -> float:
        """Seconds to wait before restart number ``restart`` (1, 2, ...) of a crash loop."""
        return float(min(self.max_delay, self.first_delay * 2 ** min(restart - 1, 62)))


RestartRecorder = Callable[[Child, int | None], None]


class ChildSupervisor:
    """Runs child processes with prefixed output and restarts those that exit.

    ``check()`` is one pass over the children (exited ones get a restart scheduled, due ones are
    started), so tests drive it against real processes without starting the engine.
    """

    def __init__(
        self,
        children: list[Child],
        *,
        env: dict[str, str] | None = None,
        policy: RestartPolicy = RestartPolicy(),
        echo: Callable[[str], None] = click.echo,
        on_restart: RestartRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = children
        self.env = env
        self.policy = policy
        self.echo = echo
        self.on_restart = on_restart
        self.clock = clock
        self.width = max(len(c.name) for c in children)
        self._last_exit: dict[str, int | None] = {}

    def start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env
        )
        child.started_at = self.clock()
        child.restart_due = None
        threading.Thread(target=self._pump, args=(child, child.process), daemon=True).start()

    def start_all(self) -> None:
        for child in self.children:
            self.start(child)

    def check(self) -> None:
        now = self.clock()
        for child in self.children:
            assert child.process is not None
            if child.restart_due is not None:
                if now >= child.restart_due:
                    self.start(child)
                    self._say(
                        child, f"{child.name} restarted (restart {child.restarts}, pid {child.process.pid})"
                    )
                    if self.on_restart is not None:
                        self.on_restart(child, self._last_exit.get(child.name))
                continue
            code = child.process.poll()
            if code is None:
                if child.restarts and now - child.started_at >= self.policy.stable_after:
                    child.restarts = 0  # up long enough: the crash loop is over
                continue
            if now - child.started_at >= self.policy.stable_after:
                child.restarts = 0
            child.restarts += 1
            delay = self.policy.delay(child.restarts)
            child.restart_due = now + delay
            self._last_exit[child.name] = code
            self._say(
                child,
                f"{child.name} exited with code {code}; restart {child.restarts} in {delay:g}s",
                fg="red",
            )

    def run(self, stopping: threading.Event, interval: float = 0.5) -> None:
        """Start every child, keep them running until ``stopping`` is set, then stop them all."""
        self.start_all()
        while not stopping.is_set():
            self.check()
            stopping.wait(interval)
        self.stop_all()

    def stop_all(self, grace: float = 15.0) -> None:
        self.echo("stopping…")
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.echo("stopped.")

    def _say(self, child: Child, text: str, fg: str | None = None) -> None:
        prefix = click.style(f"{child.name:<{self.width}} |", fg=child.colour)
        self.echo(f"{prefix} {click.style(text, fg=fg, bold=True)}")

    def _pump(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        prefix = click.style(f"{child.name:<{self.width}} |", fg=child.colour)
        for raw in iter(process.stdout.readline, b""):
            self.echo(f"{prefix} {raw.decode(errors='replace').rstrip()}")
        process.stdout.close()


def restart_recorder(settings: Settings) -> RestartRecorder:
    """Counts each restart in ``process_restarts`` (read by ``GET /metrics``). A database that is
    down costs the count, never the restart: the supervisor only says so."""
    host = socket.gethostname()

    def record(child: Child, exit_code: int | None) -> None:
        try:
            with db.connect(settings) as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO process_restarts (host, process, restarts, last_exit_code)"
                    " VALUES (%s, %s, 1, %s) ON CONFLICT (host, process) DO UPDATE SET"
                    " restarts = process_restarts.restarts + 1,"
                    " last_exit_code = excluded.last_exit_code, last_restart_at = now()",
                    (host, child.name, exit_code),
                )
        except (db.DatabaseUnavailable, psycopg.Error) as exc:
            click.echo(click.style(f"could not record the restart of {child.name}: {exc}", fg="yellow"))

    return record


def demo_tenant(settings: Settings) -> dict[str, str]:
    """The demo tenant's id and key, created on first start and kept in var/ (local use only)."""
    path = Path(settings.var_dir) / "demo-tenant.json"
    if (kept := _kept(path, settings)) is not None:
        return kept
    from engine.bootstrap import build_service

    service = build_service(settings, pool_size=2)
    registered = service.register_tenant(
        name="Demo Electricals",
        legal_name="Demo Electricals Private Limited",
        country="IN",
        gstin=DEMO_GSTIN,
        state="KA",
        address={"line1": "14 Residency Road", "line2": None, "city": "Bengaluru", "pincode": "560025"},
        changed_by="operator:demo",
    )
    # The demo tenant uses every Indian connector against the local sandbox `ledgerflow run` starts
    # for it (it e-invoices against the IRP sandbox); a production deployment refuses sandbox
    # integrations (docs/integrations.md), so it gets none. Saved through the service: each setting
    # is an event, and e-invoicing shows as on from the gst-irp one.
    _connect_demo_sandboxes(settings, service, registered.tenant_id, country="IN")
    service.close()
    return _keep(path, registered.tenant_id, registered.api_key)


def _connector_country(name: str) -> str:
    return DEMO_COUNTRY_OF.get(name, "IN")


def _connect_demo_sandboxes(settings: Settings, service: Any, tenant_id: UUID, *, country: str) -> None:
    """Save, for a demo tenant of ``country``, each of that country's connectors against its sandbox."""
    for connector in CONNECTORS if settings.mode == "development" else ():
        sandbox = connector.sandbox
        if (
            sandbox is None
            or sandbox.demo_credentials is None
            or _connector_country(connector.name) != country
        ):
            continue
        service.save_integration(
            load_key_ring(settings.var_dir),
            tenant_id,
            connector.name,
            changed_by="operator:demo",
            enabled=True,
            environment="sandbox",
            base_url=f"http://127.0.0.1:{sandbox.port}",
            credentials=sandbox.demo_credentials(DEMO_GSTIN),
            endpoints=connector.endpoints,
            mode=settings.mode,
        )


def _kept(path: Path, settings: Settings) -> dict[str, str] | None:
    """The demo tenant kept in var/, if this database has it. var/ outlives a schema: after a new
    LEDGERFLOW_DB_SCHEMA or a dropped one, the kept id and key name a tenant that does not exist here,
    and the printed curl would answer 401; then the demo tenant is created again."""
    if not path.exists():
        return None
    kept = dict(json.loads(path.read_text()))
    with db.connect(settings, autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM ledger_events WHERE originator_id = %s LIMIT 1", (UUID(kept["tenant_id"]),)
        ).fetchone()
    return kept if found is not None else None


def _keep(path: Path, tenant_id: UUID, api_key: str) -> dict[str, str]:
    data = {"tenant_id": str(tenant_id), "api_key": api_key}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return data


def demo_kenyan_tenant(settings: Settings) -> dict[str, str] | None:
    """The demo Kenyan tenant's id and key (var/demo-tenant-ke.json), created on first start with its
    etims integration on the local eTIMS sandbox (docs/etims.md, "Trying it locally"); None in
    production mode, where sandbox integrations are refused and a demo would sign nothing."""
    if settings.mode != "development" or "etims" not in BY_NAME:
        return None
    path = Path(settings.var_dir) / "demo-tenant-ke.json"
    if (kept := _kept(path, settings)) is not None:
        return kept
    from engine.bootstrap import build_service

    service = build_service(settings, pool_size=2)
    registered = service.register_tenant(
        name="Duka Bora Demo",
        legal_name="Duka Bora Demo Limited",
        country="KE",
        gstin=None,
        state=None,
        kra_pin=etims.DEMO_KRA_PIN,
        address={"line1": "Moi Avenue 12", "line2": None, "city": "Nairobi", "pincode": "00100"},
        changed_by="operator:demo",
    )
    _connect_demo_sandboxes(settings, service, registered.tenant_id, country="KE")
    _register_demo_item(settings, service, registered.tenant_id)
    service.close()
    return _keep(path, registered.tenant_id, registered.api_key)


def _register_demo_item(settings: Settings, service: Any, tenant_id: UUID) -> None:
    """The item of the printed curl, registered with the sandbox as ``POST /v1/etims/items`` does it:
    KRA (and the sandbox) refuse a sale of an item nobody registered (910), and the demo sale must be
    signed. The saveItem job waits for the branch's device, which the saved integration initialises."""
    from connectors.etims import devices as etims_devices
    from connectors.etims import items as etims_items

    item = etims_items.NewItem(
        name="Maize flour 2kg",
        item_class_code=DEMO_ITEM_CLASS,
        item_type="2",
        origin="KE",
        pkg_unit="NT",
        qty_unit="U",
        tax_type="B",
        default_price=Decimal("200.00"),
    )
    with db.transaction(service.pool) as conn:
        violations = etims_items.check_item(conn, "sandbox", item)
        if violations:
            raise click.ClickException(f"the demo item is refused: {violations}")
        row = etims_items.create_item(conn, tenant_id, "sandbox", etims.DEMO_BRANCH_ID, item)
    if row["item_code"] != DEMO_ITEM_CODE:  # the tenant's first item: sequence 1
        raise click.ClickException(f"the demo item got code {row['item_code']}, not {DEMO_ITEM_CODE}")
    asyncio.run(etims_devices.queue_jobs(settings, [etims_items.save_job(tenant_id, row["id"])]))


def kenyan_demo_lines(base: str, kenyan: dict[str, str] | None) -> str:
    """What ``ledgerflow run`` prints about the demo Kenyan tenant (nothing without one)."""
    if kenyan is None:
        return ""
    return (
        f"\nDemo Kenyan tenant {kenyan['tenant_id']} (KRA PIN {etims.DEMO_KRA_PIN}, eTIMS sandbox) is ready\n"
        f"API key: {kenyan['api_key']}\n"
        f"  curl -s -X POST {base}/v1/invoices -H 'Authorization: Bearer {kenyan['api_key']}' \\\n"
        + "    -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-ke-1' \\\n"
        + f"    -d '{DEMO_KE_BODY}'\n"
        + f"Kenyan sales are signed by the local eTIMS sandbox (http://127.0.0.1:{ETIMS_SANDBOX_PORT}):"
        + " GET /v1/invoices/{id} shows etims.status; docs/etims.md.\n"
    )


def announce_kenyan_demo(
    settings: Settings, kenyan: dict[str, str], base: str, stopping: threading.Event, timeout: float = 300.0
) -> None:
    """Print the demo Kenyan tenant's curl once its sale can be signed: its branch's device initialised
    and the printed item registered with the eTIMS sandbox. The item's saveItem job, queued at first
    start, waits for the device (a retry a minute later); once the device is ready it is queued again
    so the item is registered at once (saveItem is idempotent at KRA and in the job)."""
    from connectors.etims import devices as etims_devices
    from connectors.etims import items as etims_items

    tenant_id = UUID(kenyan["tenant_id"])
    requeued = False
    deadline = time.monotonic() + timeout
    note = ""
    while not stopping.is_set():
        try:
            with db.connect(settings) as conn:
                device = conn.execute(
                    "SELECT status FROM etims_devices WHERE tenant_id = %s AND environment = 'sandbox'"
                    " AND bhf_id = %s",
                    (tenant_id, etims.DEMO_BRANCH_ID),
                ).fetchone()
                item = conn.execute(
                    "SELECT id, status FROM etims_items WHERE tenant_id = %s AND item_code = %s",
                    (tenant_id, DEMO_ITEM_CODE),
                ).fetchone()
        except (db.DatabaseUnavailable, psycopg.Error):
            device = item = None
        if item is not None and item[1] == "registered":
            break
        if device is not None and device[0] == "initialized" and item is not None and not requeued:
            asyncio.run(etims_devices.queue_jobs(settings, [etims_items.save_job(tenant_id, item[0])]))
            requeued = True
        if time.monotonic() > deadline:
            note = (
                f"(its item {DEMO_ITEM_CODE} is not registered with the sandbox yet: a sale of it is refused"
                " until it is; `GET /v1/etims/items` shows its status)\n"
            )
            break
        stopping.wait(1.0)
    if not stopping.is_set():
        click.echo(kenyan_demo_lines(base, kenyan) + note)


def with_login(url: str, user: str, password: str) -> str:
    """``url`` with another user and password (host, port, database and options kept)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # an IPv6 address goes back in brackets
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    login = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{login}@{host}{port}"))


def least_privileged(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """The database logins of ``ledgerflow run``: the owner's URL for migrations
    (``owner_database_url``) and the runtime role's for every child (``database_url``).

    With neither ``LEDGERFLOW_DATABASE_URL`` nor ``LEDGERFLOW_OWNER_DATABASE_URL`` set (the local
    stack's defaults) the configured URL is the owner's, and the children get the same URL with
    the login of the runtime role that ``ledgerflow stack up`` creates (``ledgerflow_app``), so a
    compromised API or worker cannot change the schema (docs/security.md, "Database roles").
    URLs the user configured are kept as they are: that deployment has chosen its roles.
    """
    if environ.get(DATABASE_URL_ENV) or environ.get(OWNER_DATABASE_URL_ENV):
        return settings
    from ops.stack import DEFAULT_RUNTIME_ROLE

    user, password = DEFAULT_RUNTIME_ROLE
    return replace(
        settings,
        owner_database_url=settings.database_url,
        database_url=with_login(settings.database_url, user, password),
    )


def child_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of every child of ``ledgerflow run``, given ``least_privileged`` settings.

    The children log in with ``settings.database_url`` (the runtime role) and are never given the
    owner's URL: none of them changes the schema, so none needs it (docs/runbooks/local-stack.md).
    """
    env = {**environ, "PYTHONUNBUFFERED": "1", DATABASE_URL_ENV: settings.database_url}
    env.pop(OWNER_DATABASE_URL_ENV, None)
    # The children write to pipes, so they would default to JSON lines; this output is prefixed
    # for a person to read. An explicit LEDGERFLOW_LOG_FORMAT still wins.
    if not env.get("LEDGERFLOW_LOG_FORMAT"):
        env["LEDGERFLOW_LOG_FORMAT"] = "text"
    return env


def ensure_runtime_login(settings: Settings) -> None:
    """Create the runtime role of ``least_privileged`` settings if it is missing, as ``stack up``
    does (for ``ledgerflow run --no-stack`` against a PostgreSQL that ``stack up`` never saw)."""
    from ops import stack

    runtime, owner = settings.runtime_role, unquote(urlsplit(settings.owner_url).username or "")
    if runtime == owner:
        return
    with db.connect(settings, autocommit=True, owner=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (runtime,)).fetchone():
            return
        try:
            stack.ensure_runtime_role(conn, runtime, stack.DEFAULT_RUNTIME_ROLE[1], owner=owner)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise click.ClickException(
                f"the runtime role {runtime!r} does not exist and {owner!r} may not create it: run"
                " `ledgerflow stack up`, or set LEDGERFLOW_DATABASE_URL (docs/runbooks/local-stack.md)"
            ) from exc


def run_engine(settings: Settings, *, workers: int, start_stack: bool) -> int:
    from engine.bootstrap import migrate
    from ops import projector_pool, stack
    from ops.topics import ensure_all

    if start_stack:
        stack.up(settings)
    ensure_all(settings)
    settings = least_privileged(settings, os.environ)
    if not start_stack:
        ensure_runtime_login(settings)
    # Schema changes as the owner (`ledgerflow db migrate`); from here on, only the runtime role.
    migrate(settings)
    demo = demo_tenant(settings)
    kenyan = demo_kenyan_tenant(settings)

    cli = [sys.executable, "-m", "engine.cli"]
    children = [
        Child("api", [*cli, "api"], COLOURS[0]),
        Child("relay", [*cli, "relay"], COLOURS[1]),
        *projector_pool.children((), projector_pool.default_processes(settings)),
        Child("connectors", [*cli, "connectors", "run"], COLOURS[3]),
        Child("webhooks", [*cli, "webhooks", "run"], COLOURS[4 % len(COLOURS)]),
        # Acts on stored inbound webhook deliveries (streams/hooks.py).
        Child("hooks", [sys.executable, "-m", "ops.hook_processor"], COLOURS[5 % len(COLOURS)]),
        # Keeps alerts for GET /v1/alerts and queues their emails (streams/alerts.py).
        Child("alerts", [sys.executable, "-m", "ops.alert_worker"], COLOURS[6 % len(COLOURS)]),
        # Refreshes OAuth tokens before they expire (connectors/oauth.py).
        Child("oauth", [sys.executable, "-m", "ops.oauth_refresher"], COLOURS[7 % len(COLOURS)]),
        Child("veekaart-sync", [sys.executable, "-m", "ops.veekaart_scheduler"], COLOURS[8 % len(COLOURS)]),
        # Escalates expense approvals whose SLA lapsed (engine/expense_cli.py).
        Child("expense-timer", [*cli, "expenses", "timer"], COLOURS[9 % len(COLOURS)]),
        # The colleges' daily expense batches to the consolidating accountant (ops/accountant_scheduler.py).
        Child(
            "accountant-sync", [sys.executable, "-m", "ops.accountant_scheduler"], COLOURS[10 % len(COLOURS)]
        ),
    ]
    # Every connector's sandbox, so the demo tenant's integrations have somewhere to call.
    sandboxes = [c.sandbox for c in CONNECTORS if c.sandbox is not None]
    children += [
        Child(sandbox.label, sandbox.argv(sys.executable, DEMO_GSTIN), COLOURS[(4 + i) % len(COLOURS)])
        for i, sandbox in enumerate(sandboxes)
    ]
    children += [
        Child(f"worker-{i + 1}", [*cli, "worker"], COLOURS[(3 + i) % len(COLOURS)]) for i in range(workers)
    ]
    env = child_environment(settings, os.environ)
    supervisor = ChildSupervisor(children, env=env, on_restart=restart_recorder(settings))
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    base = f"http://{settings.api_host}:{settings.api_port}"
    click.echo(
        click.style("\nLedgerflow is starting.", bold=True)
        + f" API {base}  (OpenAPI: {base}/docs)\n"
        + f"Processes log in to PostgreSQL as {settings.runtime_role!r}"
        + f" (migrations ran as {urlsplit(settings.owner_url).username!r}).\n"
        + f"Demo tenant {demo['tenant_id']}\nAPI key: {demo['api_key']}\n\nTry:\n"
        + f"  curl -s -X POST {base}/v1/invoices -H 'Authorization: Bearer {demo['api_key']}' \\\n"
        + "    -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \\\n"
        + f"    -d '{DEMO_BODY}'\n"
        + f"  curl -s {base}/v1/invoices -H 'Authorization: Bearer {demo['api_key']}'\n"
        + f"B2B invoices get an IRN from the local e-invoice sandbox (http://127.0.0.1:{IRP_SANDBOX_PORT});"
        + " `ledgerflow connectors status` shows the connector.\n"
        + "A process that exits is restarted (1 s, 2 s, 4 s ... 60 s apart). Ctrl-C stops everything.\n"
    )
    if kenyan is not None:
        threading.Thread(
            target=announce_kenyan_demo, args=(settings, kenyan, base, stopping), daemon=True
        ).start()

    supervisor.run(stopping)
    return 0
