"""Who may do what on the Kafka cluster: the ACL table of a Ledgerflow deployment.

Signed ingest commands (docs/topics.md, "Signing ingest commands") are the first layer; the
broker's ACLs are the second (docs/runbooks/kafka-acls.md):

- an upstream **ingest producer** may WRITE and DESCRIBE topics prefixed ``ingest.`` and nothing
  else: it cannot write a ``ledger.*`` fact, read anything or join a group;
- the **engine** may do everything on the topics and consumer groups it uses (``ledger.``,
  ``ingest.``, ``projection.``, ``connector.``, ``router.`` and the ``ledgerflow`` prefix of its consumer
  groups and faust's internal topics);
- a downstream **reader** may READ and DESCRIBE ``ledger.*`` and use consumer groups under its own
  prefix; it cannot write.

Every name carries the deployment's topic prefix (LEDGERFLOW_TOPIC_PREFIX, empty in production),
so the same table protects a test's topics on a test's broker. `apply_acls` creates the table
through confluent-kafka's AdminClient as a principal the broker lists in ``super.users``;
creating an ACL that exists already is a no-op on the broker, so applying twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engine.config import Settings
from engine.errors import ConfigurationError
from engine.kafka_clients import confluent_config

ResourceKind = Literal["topic", "group"]

# Topic and group name prefixes the engine's processes use (ops/topics.py, streams/connectors/
# spec.py, projections/runner.py; faust names its group, changelog and assignor topics after the
# app id ``ledgerflow-streams``).
ENGINE_TOPIC_PREFIXES = ("ledger.", "ingest.", "projection.", "connector.", "router.", "ledgerflow")
ENGINE_GROUP_PREFIX = "ledgerflow"
INGEST_TOPIC_PREFIX = "ingest."
LEDGER_TOPIC_PREFIX = "ledger."


class KafkaAclError(ConfigurationError, RuntimeError):
    """The broker refused or failed to create an ACL (message names the binding)."""


@dataclass(frozen=True)
class AclRule:
    """ALLOW ``operations`` to ``principal`` on every ``resource`` whose name starts with ``prefix``."""

    principal: str
    resource: ResourceKind
    prefix: str
    operations: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.principal:<28} {self.resource:<6} {self.prefix + '*':<32} {','.join(self.operations)}"


@dataclass(frozen=True)
class Reader:
    """A downstream consumer principal and the consumer-group prefix it may use."""

    principal: str
    group_prefix: str


def principal(user: str) -> str:
    """``User:<name>``, Kafka's principal for a SASL user; a name given with its type is kept."""
    return user if ":" in user else f"User:{user}"


def acl_table(
    settings: Settings,
    *,
    engine: str,
    ingest_producers: Sequence[str] = (),
    readers: Sequence[Reader] = (),
) -> list[AclRule]:
    """The ACLs for these principals, every name under ``settings.topic_prefix``."""
    p = settings.topic_prefix
    rules = [AclRule(principal(engine), "topic", p + name, ("ALL",)) for name in ENGINE_TOPIC_PREFIXES]
    rules.append(AclRule(principal(engine), "group", p + ENGINE_GROUP_PREFIX, ("ALL",)))
    for producer in ingest_producers:
        rules.append(AclRule(principal(producer), "topic", p + INGEST_TOPIC_PREFIX, ("WRITE", "DESCRIBE")))
    for reader in readers:
        rules.append(
            AclRule(principal(reader.principal), "topic", p + LEDGER_TOPIC_PREFIX, ("READ", "DESCRIBE"))
        )
        rules.append(
            AclRule(principal(reader.principal), "group", p + reader.group_prefix, ("READ", "DESCRIBE"))
        )
    return rules


def apply_acls(settings: Settings, rules: Sequence[AclRule], timeout: float = 30.0) -> int:
    """Create ``rules`` on the cluster of ``settings`` (whose principal must be a super user);
    returns how many bindings were sent. Raises `KafkaAclError` naming the first refused one."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
    bindings = [
        AclBinding(
            kinds[rule.resource],
            rule.prefix,
            ResourcePatternType.PREFIXED,
            rule.principal,
            "*",
            AclOperation[operation],
            AclPermissionType.ALLOW,
        )
        for rule in rules
        for operation in rule.operations
    ]
    if not bindings:
        return 0
    admin = AdminClient(confluent_config(settings, **{"socket.timeout.ms": int(timeout * 1000)}))
    futures = admin.create_acls(bindings, request_timeout=timeout)
    for binding, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise KafkaAclError(f"could not create {binding}: {exc.args[0]}") from exc
    return len(bindings)
