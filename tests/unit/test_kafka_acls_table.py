"""The ACL table of a deployment (engine.kafka_acls): who may touch which names."""

from __future__ import annotations

from engine.config import Settings
from engine.kafka_acls import ENGINE_TOPIC_PREFIXES, AclRule, Reader, acl_table, principal


def rules_of(table: list[AclRule], user: str) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(r.resource, r.prefix, r.operations) for r in table if r.principal == f"User:{user}"}


def test_an_ingest_producer_may_only_write_and_describe_ingest_topics() -> None:
    table = acl_table(Settings(topic_prefix=""), engine="engine", ingest_producers=["erp"])
    assert rules_of(table, "erp") == {("topic", "ingest.", ("WRITE", "DESCRIBE"))}


def test_a_reader_may_read_ledger_topics_and_only_its_own_groups() -> None:
    table = acl_table(Settings(topic_prefix=""), engine="engine", readers=[Reader("bi", "bi-team.")])
    assert rules_of(table, "bi") == {
        ("topic", "ledger.", ("READ", "DESCRIBE")),
        ("group", "bi-team.", ("READ", "DESCRIBE")),
    }


def test_the_engine_owns_every_topic_and_group_prefix_it_uses() -> None:
    table = acl_table(Settings(topic_prefix=""), engine="engine")
    assert rules_of(table, "engine") == {
        ("topic", "ledger.", ("ALL",)),
        ("topic", "ingest.", ("ALL",)),
        ("topic", "projection.", ("ALL",)),
        ("topic", "connector.", ("ALL",)),
        ("topic", "router.", ("ALL",)),
        ("topic", "ledgerflow", ("ALL",)),  # faust's app-id topics (changelogs, assignor leader)
        ("group", "ledgerflow", ("ALL",)),
    }


def test_every_topic_the_engine_creates_falls_under_one_of_its_acl_prefixes() -> None:
    # A topic outside them (the router's DLQ once was) would be refused to the engine under SASL.
    from ops.topics import TOPICS

    assert [t for t in TOPICS if not t.startswith(ENGINE_TOPIC_PREFIXES)] == []


def test_every_name_carries_the_deployments_topic_prefix() -> None:
    table = acl_table(
        Settings(topic_prefix="t42."),
        engine="engine",
        ingest_producers=["erp"],
        readers=[Reader("bi", "bi.")],
    )
    assert all(rule.prefix.startswith("t42.") for rule in table)


def test_a_principal_is_a_sasl_user_unless_given_with_its_type() -> None:
    assert principal("engine") == "User:engine"
    assert principal("User:CN=engine,O=ledgerflow") == "User:CN=engine,O=ledgerflow"
