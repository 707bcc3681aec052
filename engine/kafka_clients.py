"""How every engine Kafka client connects: bootstrap servers plus the security settings.

The settings (LEDGERFLOW_KAFKA, LEDGERFLOW_KAFKA_SECURITY_PROTOCOL, ..._SASL_MECHANISM, ..._USERNAME,
..._PASSWORD, ..._SSL_CAFILE; engine/config.py) are turned here, and only here, into the three
dialects the engine's Kafka libraries speak:

- `aiokafka_kwargs`: keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient;
- `confluent_config`: the librdkafka property dict of confluent-kafka's clients;
- `faust_credentials`: faust's ``broker_credentials``.

With the default PLAINTEXT nothing but the bootstrap servers is passed, so a client is built exactly
as it was before authentication existed. What a principal may do is the broker's ACLs' business
(docs/runbooks/kafka-acls.md).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from engine.config import Settings

if TYPE_CHECKING:
    import faust


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol != "SASL_SSL":
        return None
    # Verifies the broker's certificate and host name (ssl.create_default_context's defaults).
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """The security keyword arguments of an aiokafka client; empty for PLAINTEXT."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    security: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        # aiokafka names them "plain" but uses them for the SCRAM mechanisms too.
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": settings.kafka_password,
    }
    context = _ssl_context(settings)
    if context is not None:
        security["ssl_context"] = context
    return security


def aiokafka_kwargs(settings: Settings, **options: Any) -> dict[str, Any]:
    """Everything an aiokafka client needs to reach and authenticate to the cluster, plus ``options``
    (acks, group_id, ...)."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **aiokafka_security(settings), **options}


def confluent_config(
    settings: Settings, **options: str | int | float | bool
) -> dict[str, str | int | float | bool]:
    """The librdkafka configuration of a confluent-kafka client, plus ``options``."""
    config: dict[str, str | int | float | bool] = {"bootstrap.servers": settings.kafka_bootstrap}
    if settings.kafka_security_protocol != "PLAINTEXT":
        config.update(
            {
                "security.protocol": settings.kafka_security_protocol.lower(),
                "sasl.mechanism": settings.kafka_sasl_mechanism,
                "sasl.username": settings.kafka_username,
                "sasl.password": settings.kafka_password,
            }
        )
        if settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_ssl_cafile:
            config["ssl.ca.location"] = settings.kafka_ssl_cafile
    config.update(options)
    return config


def faust_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """faust's ``broker_credentials``; None (faust's default, PLAINTEXT) without authentication."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    import faust  # imported here: only the stream worker needs faust

    # faust derives SASL_SSL from the presence of an SSL context, SASL_PLAINTEXT from its absence.
    return faust.SASLCredentials(
        username=settings.kafka_username,
        password=settings.kafka_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=_ssl_context(settings),
    )
