"""IRP answers -> ConnectorError classes: the code table, HTTP statuses, Retry-After, and the client's
boundary (httpx errors never leak), exercised with httpx.MockTransport."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.errors import (
    ConnectorError,
    ErrorClass,
    NeedsAttentionError,
    PermanentError,
    RetryableError,
    retry_after_seconds,
)
from connectors.gst_irp.client import DuplicateIrn, IrpClient, IrpCredentials
from connectors.gst_irp.errors import CODES, classify

R, P, N = ErrorClass.RETRYABLE, ErrorClass.PERMANENT, ErrorClass.NEEDS_ATTENTION
CREDS = IrpCredentials("cid-123", "csecret-456", "api-user", "hunter2-password", "29AAACA1234F1Z5")


@pytest.mark.parametrize(
    "status, codes, expected",
    [
        (None, [], R),  # no answer at all
        (429, [], R),
        (500, [], R),
        (503, ["2140"], R),  # transport trouble wins over whatever the body says
        (408, [], R),
        (200, ["1005"], R),  # token expired: re-authenticate and retry
        (200, ["2146"], R),
        (200, ["2147"], R),
        (200, ["2150"], N),  # duplicate: adopt only after verification
        (200, ["2270"], P),  # 24-hour cancellation window passed
        (200, ["2230"], N),  # active e-way bill blocks the cancellation
        (200, ["2140"], P),
        (200, ["2172"], P),
        (200, ["2176"], P),
        (200, ["2182"], P),
        (200, ["2189"], P),
        (200, ["2193"], P),
        (200, ["3028"], P),
        (200, ["3029"], P),
        (200, ["9999"], P),
        (200, ["1008"], N),  # credentials: an operator must fix them
        (200, ["1010"], N),
        (200, ["7777"], N),  # unknown code: a person looks rather than a guess
        (200, ["2146", "2189"], P),  # the most severe code decides
        (200, ["1005", "1010"], N),
        (400, [], P),
        (401, [], N),
        (403, [], N),
        (200, [], N),  # Status 0 without any code
    ],
)
def test_classify(status: int | None, codes: list[str], expected: ErrorClass) -> None:
    assert classify(status, codes) is expected


def test_every_table_entry_has_a_meaning() -> None:
    assert all(entry.meaning and entry.code.isdigit() for entry in CODES.values())


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: now
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    assert retry_after_seconds(header, now=now) == expected


def test_connector_error_of_picks_the_subclass_for_the_class() -> None:
    error = ConnectorError.of(ErrorClass.PERMANENT, "2140", "schema", details={"x": 1})

    assert isinstance(error, PermanentError)
    assert (error.error_class, error.code, error.message, error.details) == (P, "2140", "schema", {"x": 1})
    assert isinstance(ConnectorError.of(R, "timeout"), RetryableError)
    assert isinstance(ConnectorError.of(N, "2230"), NeedsAttentionError)


# -- the client's boundary ----------------------------------------------------------------------------

AUTH_OK = {
    "Status": 1,
    "Data": {"AuthToken": "tok-1", "TokenExpiry": "2099-01-01 00:00:00", "UserName": "api-user"},
}


def client_with(handler: Callable[[httpx.Request], httpx.Response]) -> IrpClient:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth"):
            return httpx.Response(200, json=AUTH_OK)
        return handler(request)

    return IrpClient("https://irp.test", CREDS, transport=httpx.MockTransport(route))


def failure(*codes: str, info: Any = None) -> dict[str, Any]:
    return {
        "Status": 0,
        "ErrorDetails": [{"ErrorCode": c, "ErrorMessage": f"message {c}"} for c in codes],
        "InfoDtls": info,
    }


async def raised(client: IrpClient) -> ConnectorError:
    with pytest.raises(ConnectorError) as caught:
        async with client:
            await client.generate_irn({"Version": "1.1"})
    return caught.value


async def test_429_is_retryable_with_the_providers_retry_after() -> None:
    error = await raised(client_with(lambda r: httpx.Response(429, headers={"Retry-After": "12"})))

    assert isinstance(error, RetryableError)
    assert (error.code, error.retry_after) == ("http_429", 12.0)


async def test_5xx_is_retryable() -> None:
    error = await raised(client_with(lambda r: httpx.Response(503, text="upstream down")))

    assert (type(error), error.code, error.retry_after) == (RetryableError, "http_503", None)


async def test_a_read_timeout_is_retryable_and_httpx_does_not_leak() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    error = await raised(client_with(hang))

    assert (type(error), error.code) == (RetryableError, "timeout")
    assert isinstance(error.__cause__, httpx.ReadTimeout)


async def test_a_refused_connection_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    error = await raised(client_with(refuse))

    assert (type(error), error.code) == (RetryableError, "connect_error")


async def test_a_schema_error_is_permanent_with_the_irp_code_and_messages() -> None:
    error = await raised(client_with(lambda r: httpx.Response(200, json=failure("2140", "2189"))))

    assert (type(error), error.code) == (PermanentError, "2140")
    assert [e["code"] for e in error.details["errors"]] == ["2140", "2189"]


async def test_a_duplicate_carries_the_registered_irn() -> None:
    info = [
        {
            "InfCd": "DUPIRN",
            "Desc": {"AckNo": 112010000000001, "AckDt": "2025-05-01 10:00:00", "Irn": "ab" * 32},
        }
    ]
    error = await raised(client_with(lambda r: httpx.Response(200, json=failure("2150", info=info))))

    assert isinstance(error, DuplicateIrn)
    assert error.error_class is N
    assert error.existing is not None
    assert (error.existing.irn, error.existing.ack_no) == ("ab" * 32, "112010000000001")
    assert error.existing.ack_dt is not None and error.existing.ack_dt.utcoffset() == timedelta(
        hours=5, minutes=30
    )


async def test_an_answer_that_is_not_json_needs_attention() -> None:
    error = await raised(client_with(lambda r: httpx.Response(200, text="<html>maintenance</html>")))

    assert (type(error), error.code) == (NeedsAttentionError, "http_200")


async def test_a_token_rejected_twice_needs_attention_after_one_reauthentication() -> None:
    auths = 0

    def route(request: httpx.Request) -> httpx.Response:
        nonlocal auths
        if request.url.path.endswith("/auth"):
            auths += 1
            return httpx.Response(200, json=AUTH_OK)
        return httpx.Response(200, json=failure("1005"))

    error = await raised(IrpClient("https://irp.test", CREDS, transport=httpx.MockTransport(route)))

    assert (type(error), error.code, auths) == (NeedsAttentionError, "token_rejected_after_reauth", 2)


def test_credentials_are_masked_in_reprs() -> None:
    client = IrpClient("https://irp.test", CREDS)

    for text in (repr(CREDS), repr(client), str(CREDS)):
        assert "29AAACA1234F1Z5" in text
        for secret in ("cid-123", "csecret-456", "api-user", "hunter2-password"):
            assert secret not in text


async def test_cancel_refuses_reason_codes_outside_1_to_4() -> None:
    async with client_with(lambda r: httpx.Response(500)) as client:
        with pytest.raises(ValueError, match="reason_code"):
            await client.cancel_irn("ab" * 32, 5, "typo")
