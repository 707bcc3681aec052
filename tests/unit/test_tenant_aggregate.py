"""The Tenant aggregate's profile, named keys and integration audit, in memory (eventsourcing POPO)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from engine.application import in_memory_ledger
from engine.domain.tenant import LastApiKey, LegalIdentityImmutable, Tenant, UnknownApiKey

ADDRESS = {"line1": "14 Residency Road", "line2": None, "city": "Bengaluru", "pincode": "560025"}


def new_tenant(*, saved: bool = True) -> Tenant:
    """A registered tenant; ``saved``: its Registered event already taken away (as after a save)."""
    tenant = Tenant(
        name="Demo",
        legal_name="Demo Electricals Private Limited",
        country="IN",
        gstin="29AAGCB7383J1Z4",
        state="29",
        einvoicing_enabled=False,
        api_key_id="k1",
        address=None,
    )
    if saved:
        tenant.collect_events()
    return tenant


def test_a_profile_change_records_who_and_the_old_and_new_value_of_each_changed_field() -> None:
    tenant = new_tenant()
    assert tenant.update_profile(changed_by="api_key:k1", name="Demo Electricals", address=ADDRESS)
    (updated,) = tenant.collect_events()
    assert isinstance(updated, Tenant.ProfileUpdated)
    assert updated.changed_by == "api_key:k1"
    assert updated.changes == {
        "name": {"old": "Demo", "new": "Demo Electricals"},
        "address": {"old": None, "new": ADDRESS},
    }
    assert tenant.name == "Demo Electricals" and tenant.address == ADDRESS


def test_sending_the_same_values_again_records_nothing() -> None:
    tenant = new_tenant()
    tenant.update_profile(changed_by="operator:api", contacts=[{"name": "Asha"}])
    tenant.collect_events()
    assert not tenant.update_profile(changed_by="operator:api", contacts=[{"name": "Asha"}], state="29")
    assert tenant.collect_events() == []


@pytest.mark.parametrize(
    "change", [{"gstin": "27AAGCB7383J1Z8"}, {"state": "27"}, {"country": "KE"}, {"legal_name": "Other Ltd"}]
)
def test_the_legal_identity_cannot_change(change: dict[str, str]) -> None:
    tenant = new_tenant()
    with pytest.raises(LegalIdentityImmutable) as raised:
        tenant.update_profile(changed_by="api_key:k1", name="New name", **change)
    assert raised.value.fields == list(change)
    assert tenant.name == "Demo" and tenant.collect_events() == []


def test_named_keys_are_added_rotated_one_at_a_time_and_revoked() -> None:
    tenant = new_tenant()
    tenant.add_api_key(key_id="k2", name="erp", changed_by="api_key:k1")
    tenant.rotate_api_key(
        key_id="k3",
        previous_key_id="k2",
        previous_key_valid_until=datetime.now(UTC) + timedelta(hours=1),
        name="erp",
        changed_by="api_key:k1",
    )
    assert tenant.api_keys == {"k1": "default", "k3": "erp"}
    assert tenant.api_key_id == "k1"  # rotating another key leaves the primary alone
    tenant.revoke_api_key(key_id="k3", changed_by="api_key:k1")
    assert tenant.api_keys == {"k1": "default"}
    kinds = [type(e).__name__ for e in tenant.collect_events()]
    assert kinds == ["ApiKeyAdded", "ApiKeyRotated", "ApiKeyRevoked"]


def test_the_last_key_cannot_be_revoked_and_an_unknown_one_is_reported() -> None:
    tenant = new_tenant()
    with pytest.raises(LastApiKey):
        tenant.revoke_api_key(key_id="k1", changed_by="api_key:k1")
    with pytest.raises(UnknownApiKey):
        tenant.revoke_api_key(key_id="nope", changed_by="api_key:k1")
    assert tenant.collect_events() == []


def test_the_einvoicing_flag_follows_the_gst_irp_integration_switch() -> None:
    tenant = new_tenant()
    settings = {"environment": "sandbox", "base_url": "https://gsp.example.com", "credentials_changed": []}
    tenant.change_integration_settings(provider="gst-irp", enabled=True, changed_by="op", **settings)
    assert tenant.einvoicing_enabled
    tenant.change_integration_settings(provider="other", enabled=False, changed_by="op", **settings)
    assert tenant.einvoicing_enabled
    tenant.change_integration_settings(provider="gst-irp", enabled=False, changed_by="op", **settings)
    assert not tenant.einvoicing_enabled


def test_the_whole_history_saves_and_loads_back_to_the_same_state() -> None:
    ledger = in_memory_ledger()
    tenant = new_tenant(saved=False)
    tenant.update_profile(changed_by="api_key:k1", address=ADDRESS, branches=[{"name": "Mysuru"}])
    tenant.add_api_key(key_id="k2", name="erp", changed_by="api_key:k1")
    tenant.change_integration_settings(
        provider="gst-irp",
        enabled=True,
        environment="sandbox",
        base_url="https://gsp.example.com",
        credentials_changed=["password"],
        changed_by="api_key:k1",
    )
    ledger.save(tenant)
    loaded = ledger.repository.get(tenant.id)
    assert loaded.profile == tenant.profile
    assert loaded.api_keys == {"k1": "default", "k2": "erp"}


def test_a_rotation_stored_before_named_keys_still_loads() -> None:
    ledger = in_memory_ledger()
    tenant = Tenant(
        name="Old",
        legal_name="Old Ltd",
        country="IN",
        gstin=None,
        state="29",
        einvoicing_enabled=False,
        api_key_id="k1",
        address=None,
    )
    tenant.rotate_api_key(key_id="k2", previous_key_id="k1", previous_key_valid_until=None)
    registered, rotated = (ledger.mapper.to_stored_event(e) for e in tenant.collect_events())
    # The rotation as the first release stored it: no name, no changed_by.
    state = orjson.loads(rotated.state)
    del state["name"], state["changed_by"]
    old_rotation = type(rotated)(
        originator_id=rotated.originator_id,
        originator_version=rotated.originator_version,
        topic=rotated.topic,
        state=orjson.dumps(state),
    )
    ledger.recorder.insert_events([registered, old_rotation])
    loaded = ledger.repository.get(tenant.id)
    assert loaded.api_key_id == "k2"
    assert loaded.api_keys == {"k2": "default"}


def test_user_and_read_grant_events_name_who_and_what_and_load_back() -> None:
    ledger = in_memory_ledger()
    tenant = new_tenant(saved=False)
    tenant.add_user(user_id="u1", role="accountant", changed_by="api_key:k1")
    tenant.change_user(
        user_id="u1", changes={"role": {"old": "accountant", "new": "principal"}}, changed_by="user:u0"
    )
    tenant.give_read_grant(user_id="c1", home_tenant_id="h1", changed_by="operator:api")
    tenant.withdraw_read_grant(user_id="c1", home_tenant_id="h1", changed_by="operator:api")
    ledger.save(tenant)
    recorded = [(type(e).__name__, getattr(e, "changed_by", None)) for e in ledger.events.get(tenant.id)]
    assert recorded[-4:] == [
        ("UserAdded", "api_key:k1"),
        ("UserChanged", "user:u0"),
        ("ReadGrantGiven", "operator:api"),
        ("ReadGrantWithdrawn", "operator:api"),
    ]
    assert ledger.repository.get(tenant.id).profile == tenant.profile
