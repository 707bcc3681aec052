"""A broker of a three-broker Kafka cluster killed under load: nothing accepted is lost.

The test starts its own KRaft cluster (three combined broker+controller nodes, in a tmp dir, on
free ports; the shared single broker and PostgreSQL are not touched), points the engine at it
(LEDGERFLOW_KAFKA lists the three brokers; the schema and topic prefix are the test's own, as
everywhere), runs the API, relay, projector and a stream worker as real subprocesses, feeds
invoices through the API and commands through ``ingest.invoice.v1``, SIGKILLs the broker leading
partition 0 of ``ledger.invoice.v1`` mid-way, lets the engine carry on with two brokers, then
starts the broker again. Topics have three replicas and min.insync.replicas=2 and every producer
uses acks=all, so each write acknowledged before the kill was on a surviving broker.

What is asserted, precisely:

* topics: three replicas, min.insync.replicas=2;
* accepted = every invoice the API answered 201 for, plus every command Kafka acknowledged;
* the event store holds exactly the accepted invoices, each Issued once;
* ``ledger.invoice.v1`` holds each accepted invoice's Issued event at least once: its distinct
  ``ce_id`` count equals the accepted count and its keys are exactly the accepted invoice ids.
  A repeat of a ``ce_id`` is allowed (the relay re-publishes after a failed acknowledgement;
  consumers dedupe on ``ce_id``, docs/topics.md) and its count is printed;
* ``invoice_register`` holds exactly one row per accepted invoice, with the stored total;
* nothing was dead-lettered, and the processes started first are still the ones running.

Run with ``pytest -m cluster tests/integration/test_cluster.py`` (excluded from the default run).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, ConfigResource

from engine.application import LedgerService
from engine.cli import main
from engine.config import Settings, load_settings
from ops import stack
from ops.stack import KafkaCluster
from ops.topics import TOPICS
from tests.integration.processes import Processes
from tests.integration.test_crash_recovery import (
    INVOICE_TOPIC,
    EngineUnderLoad,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster]

BROKERS = 3


def free_ports(count: int) -> list[int]:
    """``count`` free ports below the ephemeral range, where a client's outgoing connection
    cannot take one between this check and the broker binding it."""
    found: list[int] = []
    while len(found) < count:
        port = random.randrange(20_000, 30_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in found:
            found.append(port)
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One cluster for the module (starting one takes ~15-40 s); each test has its own topics."""
    ports = free_ports(2 * BROKERS)
    cluster = KafkaCluster(
        tmp_path_factory.mktemp("kafka-cluster"), tuple(ports[:BROKERS]), tuple(ports[BROKERS:])
    )
    try:
        # The jars are the shared stack's (var/kafka/libs); nothing else of it is used.
        stack.start_cluster(load_settings(), cluster)
        yield cluster
    finally:
        stack.stop_cluster(cluster)


@pytest.fixture
def settings(settings: Settings, cluster: KafkaCluster) -> Settings:
    """The usual per-test schema and topic prefix, with Kafka being the test's own cluster."""
    return replace(settings, kafka_bootstrap=cluster.bootstrap)


@pytest.fixture
def processes(settings: Settings, topics: list[str], tmp_path: Path) -> Iterator[Processes]:
    group = Processes(settings, tmp_path)
    yield group
    group.close()


def admin_for(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 2})


def partition_leaders(settings: Settings, topic: str) -> dict[int, tuple[int, list[int]]]:
    """{partition: (leader node id, in-sync replicas)} as the cluster reports them now."""
    described = admin_for(settings).list_topics(topic, timeout=10).topics[topic]
    return {p: (meta.leader, sorted(meta.isrs)) for p, meta in described.partitions.items()}


def test_the_engine_topics_get_three_replicas_and_two_in_sync_on_a_three_broker_cluster(
    settings: Settings, topics: list[str]
) -> None:
    admin = admin_for(settings)
    names = [settings.topic(t) for t in TOPICS]
    metadata = admin.list_topics(timeout=10).topics
    replicas = {n: {len(p.replicas) for p in metadata[n].partitions.values()} for n in names}
    assert replicas == {n: {BROKERS} for n in names}
    futures = admin.describe_configs([ConfigResource("topic", n) for n in names])
    min_insync = {res.name: future.result()["min.insync.replicas"].value for res, future in futures.items()}
    assert min_insync == dict.fromkeys(names, "2")
    # faust's own topics (created by the worker) follow the same rule.
    assert stack.topic_replication(settings) == stack.TopicReplication(factor=3, min_insync_replicas=2)


def test_stack_status_lists_every_node_of_the_cluster_running_and_seeing_the_others(
    cluster: KafkaCluster,
) -> None:
    result = CliRunner().invoke(main, ["stack", "status", "--cluster-dir", str(cluster.home)])
    assert result.exit_code == 0, result.output
    nodes = [line.split() for line in result.output.splitlines() if line.startswith("kafka-")]
    assert [(n[0], n[1], n[3]) for n in nodes] == [
        (f"kafka-{node.node_id}", "running", node.address) for node in cluster.nodes
    ]
    assert all(f"sees {BROKERS} of {BROKERS} brokers" in line for line in result.output.splitlines()[-3:])


def test_killing_a_broker_under_load_loses_no_accepted_invoice(
    settings: Settings, cluster: KafkaCluster, service: LedgerService, processes: Processes
) -> None:
    ledger_topic = settings.topic(INVOICE_TOPIC)
    engine = EngineUnderLoad(
        settings,
        service,
        processes,
        api_timeout=90,
        state=lambda: f"; broker statuses {stack.cluster_status(cluster)}",
    )
    with engine:
        engine.flowing(0, "invoices flowing through the engine on three brokers")

        # The victim leads at least partition 0 of the ledger topic: its leadership must move.
        victim = partition_leaders(settings, ledger_topic)[0][0]
        before = engine.register_count()
        stack.stop_cluster_node(cluster, victim, hard=True)
        engine.flowing(before, f"invoices flowing with broker {victim} killed")
        leaders = partition_leaders(settings, ledger_topic)
        assert all(leader != victim for leader, _ in leaders.values()), leaders

        before = engine.register_count()
        stack.start_cluster_node(load_settings(), cluster, victim)
        engine.flowing(before, f"invoices flowing after broker {victim} came back")
        processes.wait_for(
            lambda: all(victim in isr for _, isr in partition_leaders(settings, ledger_topic).values()),
            timeout=120,
            interval=0.5,
            what=f"broker {victim} back in sync on every partition of {ledger_topic}",
            explain=lambda: str(partition_leaders(settings, ledger_topic)),
        )

    accepted = engine.accepted()
    # Exactly the accepted invoices: nothing lost, nothing issued twice (stored_issued_in fails on that).
    stored = engine.wait_until_stored(accepted, timeout=120)
    assert set(stored) == accepted
    topic = engine.published_and_projected(stored, timeout=120)
    assert topic.messages >= len(accepted)
    print(
        f"broker {victim} killed and restarted; accepted {len(engine.clients.accepted)} via the API and "
        f"{len(engine.ingest.accepted)} via Kafka; API retries {engine.clients.retried}; ledger topic "
        f"repeats {topic.duplicates}"
    )
