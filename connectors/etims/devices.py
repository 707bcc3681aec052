"""Kenya eTIMS devices: registration, initialisation, status, offline detection, company suspension.

The contract with ``connectors/etims/handler.py`` and ``routes.py`` (etims-sales owns those files)::

    # routes.py: the device jobs a ledger event asks for, beside the sales jobs
    DEVICE_EVENT_TYPES                                   # add to the connector's route_event_types
    def device_routes(ce_type, ce_id, record) -> list[Job]

    # handler.py: every job whose kind starts with one of DEVICE_JOB_PREFIXES goes here
    DEVICE_JOB_PREFIXES = ("device.", "codes.", "item.")
    async def run_device_job(context, job, attempt) -> JobResult

    # handler.py, when the handler is built / closed: the periodic offline check (one per worker)
    def start_device_watch(context) -> asyncio.Task[None]    # cancel it in the handler's close()

    # sales (etims-sales) call these for the device of a branch
    async def active_device(context, tenant_id, bhf_id) -> ActiveDevice
    def record_device_success(conn, tenant_id, environment, bhf_id) -> None
    def record_device_failure(conn, tenant_id, environment, bhf_id, code, message) -> None
    def item_class_of(conn, tenant_id, environment, item_code) -> str | None

Device life (``etims_devices.status``)::

    pending --init ok--> initialized --no success for LEDGERFLOW_ETIMS_OFFLINE_AFTER--> offline
       |                     ^                                                           |
       +--init refused-> failed (operator message + alert)   a successful call ---------+

Saving the ``etims`` integration (``PUT /v1/integrations/etims``) records
``ledgerflow.tenant.integration_settings_changed``; ``device_routes`` turns it into a ``device.init``
job, which registers the integration's branch device in the integration's environment (and, after an
environment switch, every device the tenant had elsewhere), then initialises each pending one and syncs
the code lists. ``POST /v1/etims/devices`` queues the same job for one branch.

The CMC key KRA returns on initialisation is stored only through ``context.store_secret`` under scope
``cmc:<environment>:<bhf_id>`` (sealed with the key ring); never in a row, event, message, log or answer.
KRA answers 902 "device already installed" to a second initialisation and does not return the key
again (kenya-etims reference notes, "Endpoints"), so a 902 without a stored key can only be fixed by
KRA resetting the device: the device is marked ``failed`` with that instruction and an alert is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.errors import ConnectorError, ErrorClass, NeedsAttentionError, PermanentError, RetryableError
from connectors.etims.client import EtimsClient
from connectors.etims.errors import DeviceAlreadyInstalled
from engine import db
from engine.config import Settings
from engine.integrations import IntegrationSettings
from streams.connectors.jobs import Job, JobResult

if TYPE_CHECKING:
    from streams.connectors.context import HandlerContext

log = logging.getLogger("ledgerflow.etims.devices")

CONNECTOR = "etims"
DEVICE_JOB_PREFIXES = ("device.", "codes.", "item.")
KIND_INIT = "device.init"
KIND_CODES = "codes.sync"
KIND_ITEM = "item.save"
SETTINGS_CHANGED = "ledgerflow.tenant.integration_settings_changed"
DEVICE_EVENT_TYPES = frozenset({SETTINGS_CHANGED})
STATUSES = ("pending", "initialized", "failed", "offline")
DEVICE_TYPES = ("oscu", "vscu")
ENVIRONMENTS = ("sandbox", "production")

OFFLINE_AFTER_ENV = "LEDGERFLOW_ETIMS_OFFLINE_AFTER"
DEFAULT_OFFLINE_AFTER = timedelta(hours=1)
WATCH_INTERVAL_ENV = "LEDGERFLOW_ETIMS_WATCH_INTERVAL"
DEFAULT_WATCH_INTERVAL_S = 60.0
CODES_SYNC_EVERY_ENV = "LEDGERFLOW_ETIMS_CODES_SYNC_EVERY"  # hours
DEFAULT_CODES_SYNC_EVERY_H = 24.0

ALREADY_INSTALLED_MESSAGE = (
    "KRA answered 902 'device already installed' for serial {serial} (branch {bhf_id}, {environment}) "
    "and Ledgerflow holds no CMC key for it: KRA returns the key only on the first initialisation. "
    "Ask KRA (eTIMS support) to reset the device, or register a new device serial with "
    "POST /v1/etims/devices, then initialise again."
)


def cmc_scope(environment: str, bhf_id: str) -> str:
    """Where the device's CMC key is kept (``context.store_secret``); the spec's scope name."""
    return f"cmc:{environment}:{bhf_id}"


@dataclass(frozen=True)
class ActiveDevice:
    """An initialised device, ready to sign: what a sale needs to call KRA."""

    tenant_id: UUID
    environment: str
    bhf_id: str
    device_type: str
    tin: str
    base_url: str
    cmc_key: str
    sdc_id: str | None
    mrc_no: str | None

    def __repr__(self) -> str:  # the key never appears in a log line or an error
        return (
            f"ActiveDevice(tenant_id={self.tenant_id}, environment={self.environment!r}, "
            f"bhf_id={self.bhf_id!r}, device_type={self.device_type!r})"
        )


def offline_after() -> timedelta:
    """``LEDGERFLOW_ETIMS_OFFLINE_AFTER``: seconds, or with a unit (``90s``, ``30m``, ``1h``)."""
    raw = os.environ.get(OFFLINE_AFTER_ENV, "").strip()
    if not raw:
        return DEFAULT_OFFLINE_AFTER
    units = {"s": 1, "m": 60, "h": 3600}
    factor = units.get(raw[-1], 1)
    number = raw[:-1] if raw[-1] in units else raw
    return timedelta(seconds=float(number) * factor)


# -- routes ---------------------------------------------------------------------------------------


def device_routes(ce_type: str, ce_id: str, record: Mapping[str, Any]) -> list[Job]:
    """Pure: a saved ``etims`` integration asks for its devices to be initialised."""
    if ce_type != SETTINGS_CHANGED or record.get("provider") != CONNECTOR or not record.get("enabled"):
        return []
    tenant_id = str(record["tenant_id"])
    return [
        Job.for_event(
            CONNECTOR,
            KIND_INIT,
            ce_id=ce_id,
            tenant_id=tenant_id,
            subject=tenant_id,
            payload={"environment": str(record.get("environment") or "sandbox")},
        )
    ]


def init_job(tenant_id: UUID, environment: str, bhf_id: str | None = None, *, reason: str) -> Job:
    """A ``device.init`` job asked for by the API (a device added, an operator's retry)."""
    payload: dict[str, Any] = {"environment": environment}
    if bhf_id is not None:
        payload["bhf_id"] = bhf_id
    return Job(
        f"{reason}:{uuid.uuid4()}:{KIND_INIT}", CONNECTOR, KIND_INIT, str(tenant_id), str(tenant_id), payload
    )


# -- rows -----------------------------------------------------------------------------------------


def _rows(conn: psycopg.Connection, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _row(conn: psycopg.Connection, query: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
    found = _rows(conn, query, params)
    return found[0] if found else None


def register_device(
    conn: psycopg.Connection,
    tenant_id: UUID,
    *,
    environment: str,
    bhf_id: str,
    device_serial: str,
    device_type: str,
) -> tuple[dict[str, Any], bool]:
    """The branch's device in ``environment``, created ``pending`` if new; (row, created).

    A branch has one device per environment. A different serial or type for a branch whose device is
    not initialised replaces it (the operator corrects a typo); an initialised one keeps its identity
    (KRA knows it by that serial) until it is removed at KRA."""
    existing = _row(
        conn,
        "SELECT * FROM etims_devices WHERE tenant_id = %s AND environment = %s AND bhf_id = %s FOR UPDATE",
        (tenant_id, environment, bhf_id),
    )
    if existing is None:
        row = _row(
            conn,
            "INSERT INTO etims_devices (id, tenant_id, environment, bhf_id, device_serial, device_type)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, environment, bhf_id) DO NOTHING RETURNING *",
            (uuid.uuid4(), tenant_id, environment, bhf_id, device_serial, device_type),
        )
        if row is not None:
            return row, True
        existing = _row(
            conn,
            "SELECT * FROM etims_devices WHERE tenant_id = %s AND environment = %s AND bhf_id = %s",
            (tenant_id, environment, bhf_id),
        )
        assert existing is not None
        return existing, False
    same = existing["device_serial"] == device_serial and existing["device_type"] == device_type
    if same or existing["status"] in ("initialized", "offline"):
        return existing, False
    row = _row(
        conn,
        "UPDATE etims_devices SET device_serial = %s, device_type = %s, status = 'pending',"
        " last_failure = NULL, updated_at = now() WHERE id = %s RETURNING *",
        (device_serial, device_type, existing["id"]),
    )
    assert row is not None
    return row, False


def device_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A device as the API shows it: identity, status, KRA's ids, last success; never a key."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": str(row["id"]),
        "environment": row["environment"],
        "bhf_id": row["bhf_id"],
        "device_serial": row["device_serial"],
        "device_type": row["device_type"],
        "status": row["status"],
        "dvc_id": row["dvc_id"],
        "sdc_id": row["sdc_id"],
        "mrc_no": row["mrc_no"],
        "taxpayer_name": row["taxpayer_name"],
        "branch_name": row["branch_name"],
        "last_success_at": iso(row["last_success_at"]),
        "last_failure": row["last_failure"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def list_devices(conn: psycopg.Connection, tenant_id: UUID) -> list[dict[str, Any]]:
    return _rows(
        conn,
        "SELECT * FROM etims_devices WHERE tenant_id = %s ORDER BY environment, bhf_id",
        (tenant_id,),
    )


def get_device(conn: psycopg.Connection, tenant_id: UUID, device_id: UUID) -> dict[str, Any] | None:
    """Another tenant's device is reported exactly like a missing one."""
    return _row(conn, "SELECT * FROM etims_devices WHERE tenant_id = %s AND id = %s", (tenant_id, device_id))


def record_device_success(conn: psycopg.Connection, tenant_id: UUID, environment: str, bhf_id: str) -> None:
    """A call through the device succeeded: remember when, and bring an offline device back."""
    conn.execute(
        "UPDATE etims_devices SET last_success_at = now(), updated_at = now(),"
        " status = CASE WHEN status = 'offline' THEN 'initialized' ELSE status END"
        " WHERE tenant_id = %s AND environment = %s AND bhf_id = %s",
        (tenant_id, environment, bhf_id),
    )


def record_device_failure(
    conn: psycopg.Connection, tenant_id: UUID, environment: str, bhf_id: str, code: str, message: str
) -> None:
    """A call through the device failed: kept for the operator (status is unchanged; the offline
    watch decides when silence means offline)."""
    conn.execute(
        "UPDATE etims_devices SET last_failure = %s, updated_at = now()"
        " WHERE tenant_id = %s AND environment = %s AND bhf_id = %s",
        (
            Jsonb({"code": code, "message": message, "at": datetime.now(UTC).isoformat()}),
            tenant_id,
            environment,
            bhf_id,
        ),
    )


def item_class_of(conn: psycopg.Connection, tenant_id: UUID, environment: str, item_code: str) -> str | None:
    """The item classification code of one of the tenant's items (saveTrnsSalesOsdc's itemClsCd)."""
    row = _row(
        conn,
        "SELECT item_class_code FROM etims_items"
        " WHERE tenant_id = %s AND environment = %s AND item_code = %s",
        (tenant_id, environment, item_code),
    )
    return None if row is None else str(row["item_class_code"])


# -- suspension -----------------------------------------------------------------------------------


def set_suspended(
    conn: psycopg.Connection, tenant_id: UUID, suspended: bool, *, changed_by: str, reason: str | None
) -> dict[str, Any]:
    row = _row(
        conn,
        "INSERT INTO etims_companies (tenant_id, suspended, reason, changed_by) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET suspended = EXCLUDED.suspended, reason = EXCLUDED.reason,"
        " changed_by = EXCLUDED.changed_by, changed_at = now() RETURNING *",
        (tenant_id, suspended, reason, changed_by),
    )
    assert row is not None
    return row


def is_suspended(conn: psycopg.Connection, tenant_id: UUID) -> bool:
    row = _row(conn, "SELECT suspended FROM etims_companies WHERE tenant_id = %s", (tenant_id,))
    return bool(row and row["suspended"])


class CompanySuspended(RetryableError):
    """The gateway operator suspended the company: its eTIMS work waits (nothing is sent) until resumed.

    Retryable on purpose: sales keep their place in their branch's queue and go out after the resume."""

    def __init__(self, tenant_id: UUID) -> None:
        super().__init__(
            "company_suspended",
            f"company {tenant_id} is suspended by the gateway operator; its eTIMS calls wait until resumed",
            retry_after=300.0,
        )


# -- the device a sale uses ------------------------------------------------------------------------


async def active_device(context: HandlerContext, tenant_id: UUID, bhf_id: str) -> ActiveDevice:
    """The initialised device of ``bhf_id`` in the integration's current environment.

    Raises ``RetryableError`` while it is pending (initialisation not done yet) or the company is
    suspended, ``NeedsAttentionError`` when it failed, has no stored key, or the branch has no device."""
    loaded = await context.integration(tenant_id)
    environment = loaded.environment

    def read() -> tuple[bool, dict[str, Any] | None]:
        with db.connect(context.settings) as conn:
            suspended = is_suspended(conn, tenant_id)
            return suspended, _row(
                conn,
                "SELECT * FROM etims_devices WHERE tenant_id = %s AND environment = %s AND bhf_id = %s",
                (tenant_id, environment, bhf_id),
            )

    suspended, row = await context.blocking(read)
    if suspended:
        raise CompanySuspended(tenant_id)
    if row is None and str(loaded.credentials.get("bhf_id")) == bhf_id:
        # The integration's own branch: its init job (queued by the saved settings) registers it.
        raise RetryableError(
            "device_pending", f"the device of branch {bhf_id} ({environment}) is not registered yet"
        )
    if row is None:
        raise NeedsAttentionError(
            "device_not_registered",
            f"branch {bhf_id} has no eTIMS device in {environment}: register one with POST /v1/etims/devices",
        )
    if row["status"] == "pending":
        raise RetryableError(
            "device_pending", f"the device of branch {bhf_id} ({environment}) is not initialised yet"
        )
    if row["status"] == "failed":
        failure = row["last_failure"] or {}
        reason = failure.get("message", "")
        raise NeedsAttentionError(
            "device_failed", f"the device of branch {bhf_id} ({environment}) failed to initialise: {reason}"
        )
    key = await context.secret(tenant_id, cmc_scope(environment, bhf_id))
    if key is None:
        raise NeedsAttentionError(
            "cmc_key_missing",
            f"no CMC key is stored for branch {bhf_id} ({environment}): initialise the device again",
        )
    return ActiveDevice(
        tenant_id=tenant_id,
        environment=environment,
        bhf_id=bhf_id,
        device_type=str(row["device_type"]),
        tin=str(loaded.credentials["tin"]),
        base_url=loaded.base_url,
        cmc_key=key.decode(),
        sdc_id=row["sdc_id"],
        mrc_no=row["mrc_no"],
    )


async def device_client(
    context: HandlerContext,
    loaded: IntegrationSettings,
    *,
    bhf_id: str,
    device_type: str,
    cmc_key: str | None,
) -> EtimsClient:
    """An ``EtimsClient`` for one device, through the context's checked (rate-limited) transport."""
    return EtimsClient(
        loaded.base_url,
        device_type=device_type,
        tin=str(loaded.credentials["tin"]),
        bhf_id=bhf_id,
        cmc_key=cmc_key,
        transport=await context.transport(loaded),
    )


# -- jobs -----------------------------------------------------------------------------------------


async def run_device_job(context: HandlerContext, job: Job, attempt: int) -> JobResult:
    """One attempt of a device, code-list or item job (kinds starting with DEVICE_JOB_PREFIXES)."""
    tenant_id = UUID(job.tenant_id)
    if job.kind == KIND_INIT:
        return await initialise_devices(context, tenant_id, job.payload.get("bhf_id"))
    if job.kind == KIND_CODES:
        from connectors.etims.codes import sync_code_lists

        return await sync_code_lists(context, tenant_id)
    if job.kind == KIND_ITEM:
        from connectors.etims.items import save_item

        return await save_item(context, tenant_id, UUID(str(job.payload["item_id"])))
    raise PermanentError("unknown_job_kind", f"the etims device jobs have no kind {job.kind!r}")


async def initialise_devices(context: HandlerContext, tenant_id: UUID, only_bhf_id: str | None) -> JobResult:
    """Register the integration's device (and, after an environment switch, every device the tenant
    had in the other environment) in the integration's environment, initialise each pending one, then
    sync the code lists. Safe to repeat: an initialised device with its key stored is left alone."""
    loaded = await context.integration(tenant_id)
    environment = loaded.environment
    creds = loaded.credentials

    def prepare() -> tuple[bool, list[dict[str, Any]]]:
        with db.connect(context.settings) as conn, conn.transaction():
            if only_bhf_id is None:
                register_device(
                    conn,
                    tenant_id,
                    environment=environment,
                    bhf_id=str(creds["bhf_id"]),
                    device_serial=str(creds["device_serial"]),
                    device_type=str(creds["device_type"]),
                )
                # Switching the environment initialises the tenant's devices there (issue 10); a branch
                # already registered there (the integration's own device, just above) keeps its device.
                for other in _rows(
                    conn,
                    "SELECT DISTINCT ON (bhf_id) * FROM etims_devices o WHERE tenant_id = %s"
                    " AND environment <> %s AND NOT EXISTS (SELECT 1 FROM etims_devices n"
                    " WHERE n.tenant_id = o.tenant_id AND n.environment = %s AND n.bhf_id = o.bhf_id)"
                    " ORDER BY bhf_id, updated_at DESC",
                    (tenant_id, environment, environment),
                ):
                    register_device(
                        conn,
                        tenant_id,
                        environment=environment,
                        bhf_id=other["bhf_id"],
                        device_serial=other["device_serial"],
                        device_type=other["device_type"],
                    )
            query = "SELECT * FROM etims_devices WHERE tenant_id = %s AND environment = %s"
            params: list[Any] = [tenant_id, environment]
            if only_bhf_id is not None:
                query += " AND bhf_id = %s"
                params.append(only_bhf_id)
            return is_suspended(conn, tenant_id), _rows(conn, query + " ORDER BY bhf_id", params)

    suspended, devices = await context.blocking(prepare)
    if suspended:
        raise CompanySuspended(tenant_id)
    outcome: dict[str, str] = {}
    for device in devices:
        outcome[device["bhf_id"]] = await _initialise(context, loaded, device)
    if any(status == "initialized" for status in outcome.values()):
        from connectors.etims.codes import sync_code_lists

        await sync_code_lists(context, tenant_id)
    return JobResult({"environment": environment, "devices": outcome})


async def _initialise(context: HandlerContext, loaded: IntegrationSettings, device: dict[str, Any]) -> str:
    tenant_id, environment, bhf_id = UUID(str(device["tenant_id"])), device["environment"], device["bhf_id"]
    scope = cmc_scope(environment, bhf_id)
    stored = await context.secret(tenant_id, scope)
    if stored is not None and device["status"] != "failed":
        if device["status"] == "pending":
            await context.blocking(lambda: _set_status(context.settings, device["id"], "initialized"))
        return "initialized" if device["status"] == "pending" else str(device["status"])
    if device["status"] == "failed":
        return "failed"  # a person must act (KRA reset, new serial); POST /v1/etims/devices re-registers
    client = await device_client(
        context, loaded, bhf_id=bhf_id, device_type=device["device_type"], cmc_key=None
    )
    try:
        info = await client.initialize(device["device_serial"])
    except DeviceAlreadyInstalled as exc:
        message = ALREADY_INSTALLED_MESSAGE.format(
            serial=device["device_serial"], bhf_id=bhf_id, environment=environment
        )
        await _record_init_failure(context, device, exc.code, message)
        return "failed"
    except ConnectorError as exc:
        if exc.error_class is ErrorClass.RETRYABLE:
            error = exc
            await context.blocking(lambda: _note_failure(context.settings, device, error))
            raise
        await _record_init_failure(
            context, device, exc.code, f"KRA refused the initialisation: {exc.message}"
        )
        return "failed"
    finally:
        await client.aclose()
    key = info.cmc_key
    if not key:
        await _record_init_failure(
            context, device, "no_cmc_key", "KRA confirmed the initialisation but returned no CMC key"
        )
        return "failed"
    # The keys first: a device shown initialised must be able to sign.
    await context.store_secret(tenant_id, scope, key.encode())
    for name, value in sorted(info.keys.items()):  # VSCU's intrlKey, signKey
        await context.store_secret(tenant_id, f"{scope}:{name}", value.encode())

    def mark() -> None:
        with db.connect(context.settings) as conn, conn.transaction():
            conn.execute(
                "UPDATE etims_devices SET status = 'initialized', dvc_id = %s, sdc_id = %s, mrc_no = %s,"
                " taxpayer_name = %s, branch_name = %s, last_success_at = now(), last_failure = NULL,"
                " updated_at = now() WHERE id = %s",
                (info.dvc_id, info.sdc_id, info.mrc_no, info.taxpayer_name, info.branch_name, device["id"]),
            )

    await context.blocking(mark)
    log.info("etims device of branch %s (%s) initialised", bhf_id, environment)
    return "initialized"


def _set_status(settings: Settings, device_id: UUID, status: str) -> None:
    with db.connect(settings) as conn, conn.transaction():
        conn.execute(
            "UPDATE etims_devices SET status = %s, updated_at = now() WHERE id = %s", (status, device_id)
        )


def _note_failure(settings: Settings, device: Mapping[str, Any], exc: ConnectorError) -> None:
    with db.connect(settings) as conn, conn.transaction():
        record_device_failure(
            conn, device["tenant_id"], device["environment"], device["bhf_id"], exc.code, exc.message
        )


async def _record_init_failure(
    context: HandlerContext, device: Mapping[str, Any], code: str, message: str
) -> None:
    def write() -> None:
        with db.connect(context.settings) as conn, conn.transaction():
            conn.execute(
                "UPDATE etims_devices SET status = 'failed', last_failure = %s, updated_at = now()"
                " WHERE id = %s",
                (
                    Jsonb({"code": code, "message": message, "at": datetime.now(UTC).isoformat()}),
                    device["id"],
                ),
            )
        context.service.raise_alert(
            UUID(str(device["tenant_id"])),
            severity="critical",
            cause="etims.device_init_failed",
            subject=f"device:{device['id']}",
            message=message,
            details={
                "environment": device["environment"],
                "bhf_id": device["bhf_id"],
                "device_type": device["device_type"],
                "result_code": code,
            },
        )

    await context.blocking(write)
    log.warning("etims device of branch %s (%s) failed: %s", device["bhf_id"], device["environment"], code)


# -- offline detection ------------------------------------------------------------------------------


def mark_offline_devices(
    conn: psycopg.Connection, *, now: datetime, after: timedelta
) -> list[dict[str, Any]]:
    """Initialised devices with no successful call since ``now - after`` become ``offline``; returns
    them (only those that changed now, so each outage is alerted once)."""
    return _rows(
        conn,
        "UPDATE etims_devices SET status = 'offline', updated_at = now()"
        " WHERE status = 'initialized' AND COALESCE(last_success_at, created_at) < %s RETURNING *",
        (now - after,),
    )


def check_offline(settings: Settings, service: Any, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Mark silent devices offline and raise one ``etims.device_offline`` alert per device (through
    ``service.raise_alert``). The update and the alerts are not one transaction: an alert lost to a
    crash in between is the price of not holding the devices locked while the event store writes."""
    moment = now or datetime.now(UTC)
    after = offline_after()
    with db.connect(settings) as conn, conn.transaction():
        changed = mark_offline_devices(conn, now=moment, after=after)
    for device in changed:
        since = device["last_success_at"] or device["created_at"]
        service.raise_alert(
            UUID(str(device["tenant_id"])),
            severity="warning",
            cause="etims.device_offline",
            subject=f"device:{device['id']}",
            message=(
                f"the eTIMS device of branch {device['bhf_id']} ({device['environment']}) has had no "
                f"successful call since {since.isoformat()}; sales wait and are sent when KRA answers again"
            ),
            details={
                "environment": device["environment"],
                "bhf_id": device["bhf_id"],
                "device_type": device["device_type"],
                "last_success_at": since.isoformat(),
            },
            raised_at=moment,
        )
    return changed


def start_device_watch(context: HandlerContext, interval_s: float | None = None) -> asyncio.Task[None]:
    """The periodic offline check, run by each etims connector worker (started by the handler).
    Several workers checking at once is harmless: the UPDATE hands each device to one of them."""
    every = interval_s or float(os.environ.get(WATCH_INTERVAL_ENV, DEFAULT_WATCH_INTERVAL_S))

    async def watch() -> None:
        while True:
            try:
                await context.blocking(lambda: check_offline(context.settings, context.service))
                await sync_stale_code_lists(context)
            except Exception:  # an outage or a bug must not end the watch; the next round tries again
                log.exception("etims device watch failed; next round in %.0fs", every)
            await asyncio.sleep(every)

    return asyncio.get_running_loop().create_task(watch(), name="etims-device-watch")


def stale_code_lists(conn: psycopg.Connection, *, now: datetime, every: timedelta) -> list[dict[str, Any]]:
    """Per environment whose code lists were last synced before ``now - every`` (or never, once it
    has an initialised device): a tenant whose device can fetch them."""
    return _rows(
        conn,
        "SELECT DISTINCT ON (d.environment) d.environment, d.tenant_id FROM etims_devices d"
        " LEFT JOIN etims_sync_state s ON s.environment = d.environment AND s.kind = 'code_list'"
        " WHERE d.status = 'initialized' AND (s.synced_at IS NULL OR s.synced_at < %s)"
        " AND NOT EXISTS (SELECT 1 FROM etims_companies c WHERE c.tenant_id = d.tenant_id AND c.suspended)"
        " ORDER BY d.environment, d.last_success_at DESC NULLS LAST",
        (now - every,),
    )


async def sync_stale_code_lists(context: HandlerContext) -> None:
    """The scheduled code list sync (``LEDGERFLOW_ETIMS_CODES_SYNC_EVERY``, default 24 h)."""
    from connectors.etims.codes import sync_code_lists

    hours = float(os.environ.get(CODES_SYNC_EVERY_ENV, DEFAULT_CODES_SYNC_EVERY_H))

    def due() -> list[dict[str, Any]]:
        with db.connect(context.settings) as conn:
            return stale_code_lists(conn, now=datetime.now(UTC), every=timedelta(hours=hours))

    for row in await context.blocking(due):
        try:
            await sync_code_lists(context, UUID(str(row["tenant_id"])))
        except ConnectorError as exc:
            log.warning("scheduled code list sync of %s failed: %s", row["environment"], exc.code)


async def stop_device_watch(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- queueing jobs from the API ---------------------------------------------------------------------


async def queue_jobs(settings: Settings, jobs: Sequence[Job]) -> None:
    """Put jobs on ``connector.etims.jobs.v1`` and wait for Kafka's acknowledgement. One short-lived
    producer per call: device registrations, item saves and code syncs are rare operator actions."""
    from engine import kafka
    from streams.connectors.jobs import publish_job

    producer = await kafka.start_producer(settings, "reliable")
    try:
        for job in jobs:
            await publish_job(producer, settings, job)
    finally:
        await producer.stop()
