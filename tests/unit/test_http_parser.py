"""The answer ``ledgerflow api`` gives to bytes its HTTP parser refuses (engine/api/http_parser.py)."""

import re

import orjson
import pytest

from engine.api.http_parser import MALFORMED, malformed_response


def split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("ascii").split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


@pytest.mark.parametrize(
    "default_headers",
    [[], [(b"server", b"uvicorn"), (b"date", b"Wed, 02 Dec 2026 20:00:00 GMT")]],
)
def test_a_refused_request_gets_the_error_shape_and_a_closed_connection(
    default_headers: list[tuple[bytes, bytes]],
) -> None:
    status, headers, body = split(malformed_response(default_headers))
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    for name, value in default_headers:
        assert headers[name.decode()] == value.decode()
    error = orjson.loads(body)["error"]
    assert set(error) == {"code", "message", "details", "timestamp", "request_id"}
    assert error["code"] == MALFORMED
    assert error["details"] == {}
    assert re.fullmatch(r"req_[0-9a-f]{20}", error["request_id"])
    assert headers["x-request-id"] == error["request_id"]


def test_each_refusal_has_its_own_request_id() -> None:
    ids = {split(malformed_response([]))[1]["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
