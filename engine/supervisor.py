"""``ledgerflow run``: the whole engine in one terminal, each process's log lines prefixed.

Starts the local stack if needed, ensures topics and tables, creates a demo tenant on first start,
then runs the API, the relay, the projector and N stream workers as child processes. Ctrl-C stops
them all (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click

from connectors.catalogue import endpoint_policy
from connectors.gst_irp.sandbox import SandboxAccount
from engine import db, integrations
from engine.config import Settings
from engine.security.secrets import load_key_ring

DEMO_GSTIN = "29AAGCB7383J1Z4"
IRP_SANDBOX_PORT = 9101

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


def _pump(child: Child, width: int) -> None:
    assert child.process is not None and child.process.stdout is not None
    prefix = click.style(f"{child.name:<{width}} |", fg=child.colour)
    for raw in iter(child.process.stdout.readline, b""):
        click.echo(f"{prefix} {raw.decode(errors='replace').rstrip()}")


def demo_tenant(settings: Settings) -> dict[str, str]:
    """The demo tenant's id and key, created on first start and kept in var/ (local use only)."""
    path = Path(settings.var_dir) / "demo-tenant.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    from engine.bootstrap import build_service

    service = build_service(settings, pool_size=2)
    registered = service.register_tenant(
        name="Demo Electricals",
        legal_name="Demo Electricals Private Limited",
        country="IN",
        gstin=DEMO_GSTIN,
        state="KA",
        einvoicing_enabled=True,
        address={"line1": "14 Residency Road", "city": "Bengaluru", "pincode": "560025"},
    )
    # The demo tenant e-invoices against the local IRP sandbox that `ledgerflow run` starts; a
    # production deployment refuses sandbox integrations (docs/integrations.md), so it gets none.
    account = SandboxAccount(gstin=DEMO_GSTIN)
    with db.connect(settings) as conn, conn.transaction():
        if settings.mode == "development":
            integrations.save(
                conn,
                load_key_ring(settings.var_dir),
                registered.tenant_id,
                "gst-irp",
                enabled=True,
                environment="sandbox",
                base_url=f"http://127.0.0.1:{IRP_SANDBOX_PORT}",
                credentials=account.credentials(),
                endpoints=endpoint_policy("gst-irp"),
                mode=settings.mode,
            )
    service.close()
    data = {"tenant_id": str(registered.tenant_id), "api_key": registered.api_key}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return data


def run_engine(settings: Settings, *, workers: int, start_stack: bool) -> int:
    from engine import stack
    from engine.topics import ensure_all

    if start_stack:
        stack.up(settings)
    ensure_all(settings)
    db.ensure_schema(settings)
    demo = demo_tenant(settings)

    cli = [sys.executable, "-m", "engine.cli"]
    children = [
        Child("api", [*cli, "api"], COLOURS[0]),
        Child("relay", [*cli, "relay"], COLOURS[1]),
        Child("projector", [*cli, "projector"], COLOURS[2]),
        Child("connectors", [*cli, "connectors", "run"], COLOURS[3]),
        Child(
            "irp-sandbox",
            [
                sys.executable,
                "-m",
                "connectors.gst_irp.sandbox",
                "--port",
                str(IRP_SANDBOX_PORT),
                "--gstin",
                DEMO_GSTIN,
            ],
            COLOURS[4],
        ),
    ]
    children += [
        Child(f"worker-{i + 1}", [*cli, "worker"], COLOURS[(3 + i) % len(COLOURS)]) for i in range(workers)
    ]
    width = max(len(c.name) for c in children)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The children write to pipes, so they would default to JSON lines; this output is prefixed
    # for a person to read. An explicit LEDGERFLOW_LOG_FORMAT still wins.
    if not env.get("LEDGERFLOW_LOG_FORMAT"):
        env["LEDGERFLOW_LOG_FORMAT"] = "text"
    for child in children:
        child.process = subprocess.Popen(
            child.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        threading.Thread(target=_pump, args=(child, width), daemon=True).start()

    base = f"http://{settings.api_host}:{settings.api_port}"
    click.echo(
        click.style("\nLedgerflow is starting.", bold=True)
        + f" API {base}  (OpenAPI: {base}/docs)\n"
        + f"Demo tenant {demo['tenant_id']}\nAPI key: {demo['api_key']}\n\nTry:\n"
        + f"  curl -s -X POST {base}/v1/invoices -H 'Authorization: Bearer {demo['api_key']}' \\\n"
        + "    -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \\\n"
        + f"    -d '{DEMO_BODY}'\n"
        + f"  curl -s {base}/v1/invoices -H 'Authorization: Bearer {demo['api_key']}'\n"
        + f"B2B invoices get an IRN from the local e-invoice sandbox (http://127.0.0.1:{IRP_SANDBOX_PORT});"
        + " `ledgerflow connectors status` shows the connector.\n"
        + "Ctrl-C stops everything.\n"
    )

    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping.is_set():
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                click.echo(
                    click.style(f"{child.name} exited with code {code}; stopping the engine", fg="red")
                )
                exit_code = code or 1
                stopping.set()
                break
        stopping.wait(0.5)

    click.echo("stopping…")
    for child in children:
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
    click.echo("stopped.")
    return exit_code
