"""uvicorn's httptools protocol, answering a malformed request with our error shape.

httptools (llhttp, C) parses a request in a few per cent of an API worker's samples where h11
(pure Python) took about a fifth of them (docs/performance.md, "API ingest"). llhttp is stricter
than h11: it refuses a header line ended by a bare LF, which h11 accepts as a line break. uvicorn
answers every request its parser refuses with a plain-text 400; here the same refusal carries the
error shape of every other answer (engine/api/errors.py), with a generated request id in the body
and in ``X-Request-ID``, so that a client sees one contract whatever it sent
(tests/integration/test_hostile_input.py). The connection is closed after it, as uvicorn does:
after a parse error the rest of the stream cannot be framed.
"""

from __future__ import annotations

import uuid

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from engine.api.errors import error_body

MALFORMED = "malformed_request"
MESSAGE = "the request is not valid HTTP/1.1 (RFC 9112): it was not read"


def malformed_response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole 400 answer, status line to body."""
    # The same form as engine/api/app.py's generated request ids (a client's own id cannot be
    # trusted: the header it came in was not parsed).
    request_id = f"req_{uuid.uuid4().hex[:20]}"
    body = orjson.dumps(error_body(MALFORMED, MESSAGE, None, request_id))
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    for name, value in default_headers:
        head.append(name + b": " + value + b"\r\n")
    head.append(b"content-type: application/json\r\n")
    head.append(b"content-length: " + str(len(body)).encode("ascii") + b"\r\n")
    head.append(b"x-request-id: " + request_id.encode("ascii") + b"\r\n")
    head.append(b"connection: close\r\n\r\n")
    return b"".join(head) + body


class ErrorShapeHttpToolsProtocol(HttpToolsProtocol):
    """``ledgerflow api``'s HTTP/1.1 protocol (``uvicorn.run(http=...)``)."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(malformed_response(self.server_state.default_headers))
        self.transport.close()
