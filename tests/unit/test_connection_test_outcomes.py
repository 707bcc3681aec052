"""A connection test answers each failure with our own code and a fixed sentence (connectors/catalogue.py)."""

from __future__ import annotations

import pytest

from connectors.catalogue import TEST_OUTCOMES, outcome_of
from connectors.errors import ConnectorError, ErrorClass

RETRYABLE, PERMANENT, NEEDS_ATTENTION = ErrorClass.RETRYABLE, ErrorClass.PERMANENT, ErrorClass.NEEDS_ATTENTION


@pytest.mark.parametrize(
    ("code", "error_class", "outcome"),
    [
        ("timeout", RETRYABLE, "timeout"),
        ("connect_error", RETRYABLE, "connect_error"),
        ("transport_error", RETRYABLE, "connect_error"),
        ("tls_error", RETRYABLE, "tls_error"),
        ("http_503", RETRYABLE, "http_5xx"),
        ("http_500", NEEDS_ATTENTION, "http_5xx"),
        ("http_404", PERMANENT, "http_4xx"),
        ("http_401", NEEDS_ATTENTION, "credentials_refused"),
        ("http_403", NEEDS_ATTENTION, "credentials_refused"),
        ("http_429", RETRYABLE, "rate_limited"),
        ("http_200", NEEDS_ATTENTION, "invalid_response"),
        ("1008", NEEDS_ATTENTION, "credentials_refused"),
        ("token_rejected_after_reauth", NEEDS_ATTENTION, "credentials_refused"),
        ("redirect_not_followed", NEEDS_ATTENTION, "redirect_not_followed"),
        ("address_not_allowed", NEEDS_ATTENTION, "address_not_allowed"),
        ("environment_not_allowed", NEEDS_ATTENTION, "environment_not_allowed"),
        ("invalid_auth_response", NEEDS_ATTENTION, "invalid_response"),
        ("5002 the password 'hunter2' is wrong", RETRYABLE, "provider_error"),
    ],
)
def test_each_failure_maps_to_our_own_code_and_a_fixed_message(
    code: str, error_class: ErrorClass, outcome: str
) -> None:
    assert outcome_of(ConnectorError.of(error_class, code, "remote text")) == outcome
    assert outcome in TEST_OUTCOMES
