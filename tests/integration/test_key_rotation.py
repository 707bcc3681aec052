"""Key ring rotation: every stored secret re-encrypted under a new key, old keys retired only when
nothing is sealed with them, and running processes following the rotation without a restart."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest

from connectors.catalogue import endpoint_policy
from connectors.gst_irp.sandbox import create_app as create_irp_sandbox
from engine import db, integrations
from engine.application import LedgerService
from engine.commands import IssueInvoice
from engine.config import Settings
from engine.security import ingest_keys, rotation
from engine.security.secrets import KeyRing, KeySet, SecretError, key_ring_file, load_key_ring, new_key_spec
from tests.connectors.contract import LiveServer
from tests.integration.helpers import IRP_ACCOUNT, invoice_body, register_irp_tenant
from tests.integration.processes import Processes, settings_env

pytestmark = [pytest.mark.integration]


@pytest.fixture
def own_ring(settings: Settings, tmp_path: Path) -> Settings:
    """The test's own var/ (and so its own key ring file): the shared one is everyone's."""
    return replace(settings, var_dir=tmp_path / "var")


def sealed_key_ids(settings: Settings) -> dict[str, str]:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        rows = conn.execute(
            "SELECT tenant_id, split_part(credentials_sealed, ':', 1) FROM integrations"
        ).fetchall()
    return {str(r[0]): r[1] for r in rows}


def save_credentials(settings: Settings, tenant_id: UUID, password: str) -> None:
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        integrations.save(
            conn,
            load_key_ring(settings.var_dir),
            tenant_id,
            "gst-irp",
            enabled=True,
            environment="sandbox",
            base_url="http://127.0.0.1:9",
            credentials={**IRP_ACCOUNT.credentials(), "password": password},
            endpoints=endpoint_policy("gst-irp"),
            mode=settings.mode,
        )


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_rotation_reencrypts_every_credential_resumes_when_interrupted_and_retires_the_old_key_last(
    own_ring: Settings,
) -> None:
    settings = own_ring
    db.ensure_schema(settings)
    tenants = [uuid4() for _ in range(7)]  # credentials are stored per tenant id
    for i, tenant_id in enumerate(tenants):
        save_credentials(settings, tenant_id, f"password-{i}")
    old = load_key_ring(settings.var_dir).active
    assert set(sealed_key_ids(settings).values()) == {old}

    new = rotation.add_key(settings, "k-next")
    ring = load_key_ring(settings.var_dir)
    assert ring.active == new and old in ring.keys

    # Interrupted after the first batch of three rows: the rest is still sealed with the old key
    # and opens; re-running re-encrypts exactly the rest.
    class Interrupted(Exception):
        pass

    def stop_after_first_batch(column: str, done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        rotation.reencrypt(settings, ring, batch_size=3, progress=stop_after_first_batch)
    after_interruption = sealed_key_ids(settings)
    assert sorted(after_interruption.values()).count(new) == 3
    with pytest.raises(rotation.RotationError, match="still seals 4"):
        rotation.retire(settings, old)

    seen: list[tuple[str, int, int]] = []
    done = rotation.reencrypt(settings, ring, batch_size=3, progress=lambda *p: seen.append(p))
    assert done["integrations.credentials_sealed"] == 4
    assert seen[-1] == ("integrations.credentials_sealed", 4, 4)
    assert set(sealed_key_ids(settings).values()) == {new}

    uses = {u.key_id: u for u in rotation.key_use(settings, ring)}
    assert uses[new].sealed["integrations.credentials_sealed"] == 7 and uses[new].active
    assert uses[old].total == 0
    with pytest.raises(rotation.RotationError, match="active key"):
        rotation.retire(settings, new)
    rotation.retire(settings, old)
    assert set(KeySet.parse(key_ring_file(settings.var_dir).read_text()).keys) == {new}

    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        for i, tenant_id in enumerate(tenants):
            loaded = integrations.load(conn, load_key_ring(settings.var_dir), tenant_id, "gst-irp")
            assert loaded is not None and loaded.credentials["password"] == f"password-{i}"


def test_rotation_reencrypts_ingest_signing_keys_and_they_still_verify(own_ring: Settings) -> None:
    settings = own_ring
    db.ensure_schema(settings)
    tenant_id = uuid4()
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        issued = [ingest_keys.create(conn, load_key_ring(settings.var_dir), tenant_id) for _ in range(2)]
    old = load_key_ring(settings.var_dir).active

    new = rotation.add_key(settings, "k-ingest")
    ring = load_key_ring(settings.var_dir)
    done = rotation.reencrypt(settings, ring)
    assert done.get("ingest_keys.secret_sealed") == 2
    rotation.retire(settings, old)

    ring = load_key_ring(settings.var_dir)
    assert set(ring.keys) == {new}
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        for key in issued:
            stored = ingest_keys.find(conn, key.key_id)
            assert stored is not None
            assert stored.secret_sealed.startswith(f"{new}:")
            # The secret the producer holds still signs what the agent accepts.
            assert ingest_keys.open_secret(ring, stored) == key.secret


def test_a_ring_from_the_environment_is_not_rotated_by_the_command(
    own_ring: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGERFLOW_SECRET_KEYS", KeySet.parse("k1:" + "A" * 43 + "=").spec())
    with pytest.raises(rotation.RotationError, match="LEDGERFLOW_SECRET_KEYS"):
        rotation.add_key(own_ring)


@pytest.fixture
def irp_url() -> Iterator[str]:
    with LiveServer(create_irp_sandbox(account=IRP_ACCOUNT)) as server:
        yield server.url


def test_a_running_api_and_connector_keep_working_through_a_rotation_and_retirement_by_the_cli(
    own_ring: Settings, service: LedgerService, topics: list[str], irp_url: str, tmp_path: Path
) -> None:
    settings = own_ring
    registered = register_irp_tenant(service, settings, irp_url)
    tenant_id = registered.tenant_id
    old = load_key_ring(settings.var_dir).active
    processes = Processes(settings, tmp_path)
    try:
        engine = [
            processes.start("relay"),
            processes.start("worker"),
            processes.start("connectors", "run", name="connectors"),
        ]
        api, http = processes.start_api(registered.api_key)
        engine.append(api)

        def irn_of(invoice_id: UUID) -> bool:
            return service.get_invoice(tenant_id, invoice_id).einvoice is not None

        def issue(number: str) -> UUID:
            body = IssueInvoice.model_validate(invoice_body(number))
            return service.issue_invoice(tenant_id, body).invoice.id

        first = issue("ROT-1")
        processes.wait_for(
            lambda: irn_of(first), timeout=120, what="an IRN before the rotation", watch=engine
        )
        assert http.get("/v1/integrations/gst-irp").status_code == 200  # the API has read the ring

        rotated = cli(settings, "keys", "rotate", "--key-id", "k-rotated")
        assert rotated.returncode == 0, rotated.stderr
        assert "re-encrypting integrations.credentials_sealed: 1/1" in rotated.stderr
        assert sealed_key_ids(settings) == {str(tenant_id): "k-rotated"}

        status = cli(settings, "keys", "status")
        assert status.returncode == 0, status.stderr
        assert f"{old}" in status.stdout and "can be retired" in status.stdout

        # The API seals with the new key without a restart, and opens what the CLI re-sealed.
        listed = http.get("/v1/integrations")
        assert listed.status_code == 200, listed.text
        saved = http.put(
            "/v1/integrations/gst-irp",
            json={
                "enabled": True,
                "environment": "sandbox",
                "base_url": irp_url,
                "credentials": {"password": IRP_ACCOUNT.password},
            },
        )
        assert saved.status_code == 200, saved.text
        assert sealed_key_ids(settings) == {str(tenant_id): "k-rotated"}
        tested = http.post("/v1/integrations/gst-irp/test")
        assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text

        retired = cli(settings, "keys", "retire", old)
        assert retired.returncode == 0, retired.stderr
        refused = cli(settings, "keys", "retire", "k-rotated")
        assert refused.returncode != 0 and "active key" in refused.stderr

        # The connector, started before the rotation, opens credentials sealed with the new key only.
        second = issue("ROT-2")
        processes.wait_for(
            lambda: irn_of(second), timeout=120, what="an IRN after the rotation", watch=engine
        )
        assert http.post("/v1/integrations/gst-irp/test").json()["ok"] is True
        processes.assert_alive(*engine)
    finally:
        processes.close()


def test_a_value_sealed_with_a_key_missing_from_the_ring_is_named_by_status_and_stops_reencryption(
    own_ring: Settings,
) -> None:
    settings = own_ring
    db.ensure_schema(settings)
    tenant_id = uuid4()
    save_credentials(settings, tenant_id, "password")
    lost = KeySet.parse(new_key_spec("k-lost"))
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        sealed_elsewhere = KeyRing(lost.keys, lost.active).seal(
            b"{}", integrations.associated_data(tenant_id, "gst-irp")
        )
        conn.execute("UPDATE integrations SET credentials_sealed = %s", (sealed_elsewhere,))

    ring = load_key_ring(settings.var_dir)
    uses = {u.key_id: u for u in rotation.key_use(settings, ring)}
    assert not uses["k-lost"].in_ring and uses["k-lost"].total == 1
    with pytest.raises(SecretError, match=f"tenant_id={tenant_id}"):
        rotation.reencrypt(settings, ring)
