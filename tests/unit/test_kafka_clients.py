"""The Kafka security settings and what each client library is given from them."""

from __future__ import annotations

import ssl

import faust
import pytest

from engine.config import Settings
from engine.kafka_clients import aiokafka_kwargs, confluent_config, faust_credentials


def sasl(**overrides: str) -> Settings:
    values = {
        "kafka_bootstrap": "broker-1:9094,broker-2:9094",
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_username": "engine",
        "kafka_password": "s3cret-engine",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def test_plaintext_clients_get_only_the_bootstrap_servers_as_before() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:9092", kafka_security_protocol="PLAINTEXT")
    assert aiokafka_kwargs(settings) == {"bootstrap_servers": "127.0.0.1:9092"}
    assert confluent_config(settings) == {"bootstrap.servers": "127.0.0.1:9092"}
    assert faust_credentials(settings) is None


def test_plaintext_ignores_a_leftover_username_and_mechanism() -> None:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9092",
        kafka_security_protocol="PLAINTEXT",
        kafka_sasl_mechanism="NONSENSE",
        kafka_username="engine",
    )
    assert aiokafka_kwargs(settings) == {"bootstrap_servers": "127.0.0.1:9092"}


def test_sasl_plaintext_gives_aiokafka_the_mechanism_and_credentials() -> None:
    kwargs = aiokafka_kwargs(sasl(), acks="all")
    assert kwargs == {
        "bootstrap_servers": "broker-1:9094,broker-2:9094",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "engine",
        "sasl_plain_password": "s3cret-engine",
        "acks": "all",
    }


def test_sasl_gives_librdkafka_its_own_property_names() -> None:
    config = confluent_config(sasl(kafka_sasl_mechanism="PLAIN"), **{"group.id": "ledger-reader-1"})
    assert config == {
        "bootstrap.servers": "broker-1:9094,broker-2:9094",
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "engine",
        "sasl.password": "s3cret-engine",
        "group.id": "ledger-reader-1",
    }


def test_sasl_plaintext_gives_faust_credentials_without_tls() -> None:
    credentials = faust_credentials(sasl(kafka_sasl_mechanism="SCRAM-SHA-256"))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert (credentials.username, credentials.password) == ("engine", "s3cret-engine")


def test_sasl_ssl_verifies_the_broker_certificate_in_every_library() -> None:
    settings = sasl(kafka_security_protocol="SASL_SSL")
    context = aiokafka_kwargs(settings)["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = faust_credentials(settings)
    assert credentials is not None and credentials.protocol.value == "SASL_SSL"
    assert confluent_config(settings)["security.protocol"] == "sasl_ssl"


def test_the_password_never_appears_in_the_settings_repr() -> None:
    assert "s3cret-engine" not in repr(sasl())


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"kafka_security_protocol": "SSL"}, "LEDGERFLOW_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "LEDGERFLOW_KAFKA_SASL_MECHANISM"),
        ({"kafka_password": ""}, "LEDGERFLOW_KAFKA_PASSWORD"),
        ({"kafka_username": ""}, "LEDGERFLOW_KAFKA_USERNAME"),
    ],
)
def test_an_unusable_kafka_security_setting_is_refused_naming_the_variable(
    overrides: dict[str, str], names: str
) -> None:
    with pytest.raises(ValueError, match=names):
        sasl(**overrides)


def test_the_environment_variables_configure_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERFLOW_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("LEDGERFLOW_KAFKA_SASL_MECHANISM", "plain")
    monkeypatch.setenv("LEDGERFLOW_KAFKA_USERNAME", "engine")
    monkeypatch.setenv("LEDGERFLOW_KAFKA_PASSWORD", "pw")
    settings = Settings()
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
    assert (settings.kafka_username, settings.kafka_password) == ("engine", "pw")
