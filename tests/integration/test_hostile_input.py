"""The hostile-input probe: a catalogue of hostile requests and ingest messages against the real
engine (API, relay, projector and stream worker as subprocesses), then proof that nothing stopped.

Every answer must be a 2xx or a 4xx in the error shape (docs/api.md), never a 5xx, and afterwards
every process is alive, the relay has published every stored event, the projector has applied
everything the relay published, and `GET /healthz/consumers` is 200. Run with `-s` for the table
(input class, count, outcome) quoted in the closing note of the hostile-input issue.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from engine.application import LedgerService
from engine.config import Settings
from engine.security import ingest_keys
from projections import status as projection_status
from tests.integration.helpers import create_ingest_key, ingest_command, invoice_body, register_tenant
from tests.integration.processes import LedgerflowProcess, Processes, free_port
from tests.integration.test_ingest import publish, with_header

pytestmark = pytest.mark.integration

ERROR_FIELDS = {"code", "message", "details", "timestamp", "request_id"}
UVICORN_BAD_REQUEST = b"Invalid HTTP request received."

# Every text field of an invoice, by where it sits in the body.
TEXT_FIELDS: list[tuple[str, ...]] = [
    ("number",),
    ("place_of_supply",),
    ("buyer", "name"),
    ("buyer", "gstin"),
    ("buyer", "state"),
    ("buyer", "address", "line1"),
    ("buyer", "address", "city"),
    ("buyer", "address", "pincode"),
    ("lines", "0", "description"),
    ("lines", "0", "hsn"),
    ("lines", "0", "unit"),
]
# Control characters (NUL, BEL, ESC, DEL, C1), line breaks, bidi override, lone surrogates.
HOSTILE_TEXT = {
    "NUL": "A\x00B",
    "BEL": "A\x07B",
    "ESC sequence": "A\x1b[31mB",
    "DEL": "A\x7fB",
    "C1 control": "A\x85B",
    "line feed": "A\nB",
    "U+2028": "A\u2028B",
    "RTL override": "A\u202eB",
    "lone surrogate": "A\ud800B",
    "noncharacter": "A\ufffeB",
}
AMOUNT_FIELDS = ("quantity", "unit_price", "discount", "gst_rate")
HOSTILE_NUMBERS: dict[str, Any] = {
    "huge string": "9" * 400,
    "huge exponent string": "1e400",
    "negative": "-1",
    "exponent": "1e3",
    "fullwidth digits": "１０",
    "devanagari digits": "१२",
    "underscore": "1_000",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "17 significant digits": 0.12345678901234567,
    "bool": True,
    "huge JSON number": 10**400,
}
HOSTILE_DATES = [
    "1899-12-31",
    "0001-01-01",
    "9999-12-31",
    "2026-02-30",
    "2026-13-01",
    "+2026-01-01",
    "2126-01-19",
]
HOSTILE_CURSORS = [
    "",
    "!!!",
    "A" * 399,
    "../../etc/passwd",
    "' OR 1=1 --",
    base64.urlsafe_b64encode(b'["2026-01-01","x\\u0000y","00000000-0000-0000-0000-000000000000"]').decode(),
    base64.urlsafe_b64encode(b'["9999-99-99",1,2]').decode(),
    base64.urlsafe_b64encode(b'{"report":"invoices","after":[1,2,3]}').decode(),
    base64.urlsafe_b64encode(b'{"report":"hsn_summary","after":["x","y","z","w","v"]}').decode(),
    base64.urlsafe_b64encode(b"[" * 5000).decode()[:990],
]


def nested(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``value`` at ``path`` (list indexes as digit strings)."""
    copy: Any = json.loads(json.dumps(body))
    target = copy
    for step in path[:-1]:
        target = target[int(step)] if isinstance(target, list) else target[step]
    target[path[-1]] = value
    return dict(copy)


def to_json(body: Any) -> bytes:
    """JSON text with \\u escapes, so that a lone surrogate travels as ``"\\ud800"``."""
    return json.dumps(body, ensure_ascii=True).encode()


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    not_http: bool = False  # the bytes sent are not an HTTP request (RFC 9112)

    def not_http_refused(self) -> bool:
        """A request that is not HTTP at all never reaches the app: the server's HTTP parser
        (uvicorn) answers 400 and closes the connection, without the app's error shape."""
        return self.not_http and self.status == 400 and self.body == UVICORN_BAD_REQUEST

    def outcome(self) -> str:
        """``422 control_character``: the status and the most precise code the answer gives."""
        if 200 <= self.status < 300:
            return f"{self.status}"
        if self.not_http_refused():
            return "400 from the HTTP parser (not HTTP)"
        try:
            error = orjson.loads(self.body)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return f"{self.status} (no error shape)"
        fields = (error.get("details") or {}).get("fields") or []
        return f"{self.status} {fields[0]['code'] if fields else error['code']}"

    def problem(self) -> str | None:
        """Why this answer breaks the contract, if it does."""
        if 200 <= self.status < 300 or self.not_http_refused():
            return None
        if not 400 <= self.status < 500:
            return f"status {self.status}"
        try:
            error = orjson.loads(self.body)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return f"{self.status} without the error shape: {self.body[:200]!r}"
        if set(error) != ERROR_FIELDS or not error["request_id"]:
            return f"{self.status} with an incomplete error: {error}"
        return None


class Probe:
    """Sends the catalogue and tallies the outcomes per input class."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.port = int(base_url.rsplit(":", 1)[1])
        self.auth = {"Authorization": f"Bearer {api_key}"}
        self.http = httpx.Client(base_url=base_url, timeout=60)
        self.tally: dict[str, Counter[str]] = defaultdict(Counter)
        self.problems: list[str] = []
        self.accepted: dict[str, list[str]] = defaultdict(list)
        self.issued: set[str] = set()
        self._lock = threading.Lock()

    def record(self, input_class: str, what: str, answer: Answer) -> Answer:
        with self._lock:
            self.tally[input_class][answer.outcome()] += 1
            if 200 <= answer.status < 300:
                self.accepted[input_class].append(what)
            problem = answer.problem()
            if problem:
                self.problems.append(f"{input_class} / {what}: {problem}")
        return answer

    def send(
        self,
        input_class: str,
        what: str,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Answer:
        # As bytes, so that a header value may be any bytes HTTP allows (non-ASCII included).
        sent = {
            name.encode(): value if isinstance(value, bytes) else value.encode()
            for name, value in {**(self.auth if auth else {}), **(headers or {})}.items()
        }
        response = self.http.request(method, path, content=content, headers=sent, params=params)
        return self.record(
            input_class, what, Answer(response.status_code, response.content, dict(response.headers))
        )

    def invoice(self, input_class: str, what: str, body: Any, **headers: str) -> Answer:
        """POST /v1/invoices; the id of an invoice it issues is kept in ``issued``."""
        answer = self.send(
            input_class,
            what,
            "POST",
            "/v1/invoices",
            content=body if isinstance(body, bytes) else to_json(body),
            headers={"Content-Type": "application/json", **headers},
        )
        if answer.status == 201:
            with self._lock:
                self.issued.add(orjson.loads(answer.body)["id"])
        return answer

    def raw(self, input_class: str, what: str, request: bytes, *, not_http: bool = False) -> Answer:
        """Bytes straight onto a socket: what no HTTP client library would send. ``not_http``:
        the bytes break HTTP's own grammar (a NUL in a field value, RFC 9110 section 5.5)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as conn:
            conn.sendall(request)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
        answer = Answer(int(status_line.split()[1]), body, headers, not_http=not_http)
        return self.record(input_class, what, answer)

    def table(self) -> str:
        lines = [f"{'input class':<40} {'count':>5}  outcome"]
        for input_class, outcomes in self.tally.items():
            described = ", ".join(f"{n}x {o}" if len(outcomes) > 1 else o for o, n in outcomes.most_common())
            if len(outcomes) > 1 and self.accepted[input_class]:
                described += f"; accepted: {', '.join(self.accepted[input_class])}"
            lines.append(f"{input_class:<40} {sum(outcomes.values()):>5}  {described}")
        return "\n".join(lines)


GENERATED_REQUEST_ID = re.compile(r"^req_[0-9a-f]{20}$")


def catalogue(probe: Probe, serial: Iterator[int]) -> None:
    """Every hostile HTTP input, in classes; the answers are checked by ``Probe.record``."""

    def fresh(**changes: Any) -> dict[str, Any]:
        return invoice_body(f"HX-{next(serial)}", **changes)

    for label, text in HOSTILE_TEXT.items():
        for path in TEXT_FIELDS:
            probe.invoice(f"text: {label}", ".".join(path), nested(fresh(), path, text))
    for label, value in HOSTILE_NUMBERS.items():
        for name in AMOUNT_FIELDS:
            probe.invoice(f"number: {label}", name, nested(fresh(), ("lines", "0", name), value))
    for value in HOSTILE_DATES:
        probe.invoice("date out of window / invalid", value, fresh(date=value))

    many = fresh()
    many["lines"] = [dict(many["lines"][0], description=f"Item {i}") for i in range(1000)]
    probe.invoice("1000-line invoice", "1000 lines", many)
    many["lines"].append(many["lines"][0])
    many["number"] = f"HX-{next(serial)}"
    probe.invoice("1001-line invoice", "1001 lines", many)

    padding = fresh(notes="x" * (1024 * 1024 + 1))
    probe.invoice("body > 1 MiB (Content-Length)", "1 MiB + 1", padding)
    probe.send(
        "body > 1 MiB (chunked)",
        "chunked",
        "POST",
        "/v1/invoices",
        content=iter([b'{"number": "', b"x" * (600 * 1024), b"x" * (600 * 1024), b'"}']),  # type: ignore[arg-type]
        headers={"Content-Type": "application/json"},
    )

    for label, body in {
        "empty": b"",
        "truncated": b'{"number": "X-1", "lines": [',
        "not an object": b"[1, 2, 3]",
        "null": b"null",
        "invalid UTF-8": b'{"number": "\xff\xfe"}',
        "BOM": b"\xef\xbb\xbf" + to_json(fresh()),
        "deeply nested": b'{"number": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "duplicate keys": b'{"number": "HX-A", "number": "HX-B"}',
        "NaN literal": b'{"lines": [{"quantity": NaN}]}',
    }.items():
        probe.invoice("malformed JSON", label, body)

    for content_type in (
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "",
        "application/json; charset=utf-16",
    ):
        probe.send(
            "wrong content type",
            content_type or "none",
            "POST",
            "/v1/invoices",
            content=to_json(fresh())
            if "utf-16" not in content_type
            else json.dumps(fresh()).encode("utf-16"),
            headers={"Content-Type": content_type} if content_type else {},
        )

    for cursor in HOSTILE_CURSORS:
        probe.send(
            "crafted cursor", cursor[:20] or "(empty)", "GET", "/v1/invoices", params={"cursor": cursor}
        )
        probe.send(
            "crafted cursor",
            cursor[:20] or "(empty)",
            "GET",
            "/v1/reports/invoices",
            params={"cursor": cursor},
        )
        probe.send(
            "crafted cursor",
            cursor[:20] or "(empty)",
            "GET",
            "/v1/reports/hsn_summary",
            params={"cursor": cursor, "format": "csv"},
        )

    request_ids: dict[str, str | bytes] = {
        "8 KiB": "r" * 8192,
        "quotes and braces": '"},{"level":"error","msg":"forged',
        "non-ASCII (UTF-8 bytes)": "réq-ü".encode(),
        "spaces": "req id with spaces",
    }
    for label, value in request_ids.items():
        echoed = probe.send("X-Request-ID", label, "GET", "/v1/invoices", headers={"X-Request-ID": value})
        # Replaced, never echoed: a request id cannot forge log lines or headers (docs/api.md).
        assert GENERATED_REQUEST_ID.match(echoed.headers["x-request-id"]), (label, echoed.headers)
    for label, value in {
        "CRLF injection": b"req\r\nSet-Cookie: x=1",
        "bare LF": b"req\nX-Forged: 1",
        "NUL": b"req\x00x",
        "64 KiB": b"r" * 65536,
    }.items():
        answered = probe.raw(
            "X-Request-ID (raw socket)",
            label,
            b"GET /v1/invoices HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + b"Authorization: "
            + probe.auth["Authorization"].encode()
            + b"\r\n"
            + b"X-Request-ID: "
            + value
            + b"\r\n\r\n",
            not_http=b"\x00" in value,
        )
        # What followed the line break was never made a header of the answer.
        assert not {"set-cookie", "x-forged"} & {h.lower() for h in answered.headers}, answered.headers
        echoed_id = answered.headers.get("x-request-id", "")
        assert echoed_id in ("", "req") or GENERATED_REQUEST_ID.match(echoed_id), (label, echoed_id)

    for label, value in {
        "absent": None,
        "random key": f"Bearer lf_{uuid.uuid4().hex}",
        "basic auth": "Basic dXNlcjpwYXNz",
        "SQL in key": "Bearer ' OR '1'='1",
        "10 KiB key": "Bearer " + "k" * 10240,
        "scheme only": "Bearer",
    }.items():
        headers = {"Authorization": value} if value is not None else {}
        probe.send("forged/absent bearer token", label, "GET", "/v1/invoices", headers=headers, auth=False)
        probe.send(
            "forged/absent bearer token",
            label,
            "POST",
            "/v1/invoices",
            content=to_json(fresh()),
            headers={"Content-Type": "application/json", **headers},
            auth=False,
        )

    for label, value in {
        "empty bearer": b"Bearer ",
        "NUL in key": b"Bearer lf_\x00x",
        "tab": b"Bearer\tx",
    }.items():
        probe.raw(
            "forged bearer token (raw socket)",
            label,
            b"GET /v1/invoices HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
            + value
            + b"\r\n\r\n",
            not_http=b"\x00" in value,
        )


def parallel_idempotency(probe: Probe, serial: Iterator[int]) -> list[Answer]:
    """Twenty requests at once with one Idempotency-Key and twenty different bodies."""
    key = f"hostile-{uuid.uuid4().hex}"
    bodies = [invoice_body(f"HP-{next(serial)}") for _ in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        return list(
            pool.map(
                lambda b: probe.invoice(
                    "same Idempotency-Key, 20 bodies at once", "parallel", b, **{"Idempotency-Key": key}
                ),
                bodies,
            )
        )


def forged_ingest(settings: Settings, tenant_id: str, other_tenant: str) -> dict[str, str]:
    """Ingest messages no producer of the tenant's would send; returns ce_id -> what it is."""
    own = create_ingest_key(settings, tenant_id)
    theirs = create_ingest_key(settings, other_tenant)
    forged_key = ingest_keys.IssuedIngestKey("ik_0000000000000000", "forged-secret", own.created_at)
    messages = {
        "hx-unsigned": ("unsigned", ingest_command(tenant_id, "hx-unsigned", invoice_body("HI-1"), None)),
        "hx-forged-key": (
            "forged key id",
            ingest_command(tenant_id, "hx-forged-key", invoice_body("HI-2"), forged_key),
        ),
        "hx-other-tenant": (
            "another tenant's key",
            ingest_command(tenant_id, "hx-other-tenant", invoice_body("HI-3"), theirs),
        ),
        "hx-garbage": (
            "signed garbage bytes",
            ingest_command(tenant_id, "hx-garbage", b"\xff\x00{not json", own),
        ),
        "hx-control": (
            "signed, NUL in a field",
            ingest_command(tenant_id, "hx-control", invoice_body("HI-4", place_of_supply="2\x007"), own),
        ),
        "hx-two-sources": (
            "two ce_source headers",
            with_header(
                ingest_command(tenant_id, "hx-two-sources", invoice_body("HI-5"), own),
                "ce_source",
                f"/tenants/{other_tenant}".encode(),
            ),
        ),
    }
    publish(settings, [message for _, message in messages.values()])
    return {ce_id: label for ce_id, (label, _) in messages.items()}


def dead_letter_codes(settings: Settings, expected: set[str], deadline: float) -> dict[str, str]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"hostile-dlq-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topic("ingest.invoice.dlq.v1")])
    found: dict[str, str] = {}
    try:
        while set(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            listed = message.headers() or []
            pairs = list(listed.items()) if isinstance(listed, dict) else listed
            headers = {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v) for k, v in pairs}
            found[headers.get("ce_id", "?")] = headers.get("error-code", "?")
    finally:
        consumer.close()
    return found


@pytest.fixture
def engine(
    settings: Settings, service: LedgerService, topics: list[str], tmp_path: Path
) -> Iterator[tuple[Processes, list[LedgerflowProcess], str]]:
    processes = Processes(settings, tmp_path)
    port = free_port()
    started = [
        processes.start("api", "--port", str(port)),
        processes.start("relay"),
        processes.start("projector"),
        processes.start("worker"),
    ]
    base_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        processes.assert_alive(*started)
        try:
            return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    processes.wait_for(ready, timeout=120, interval=0.2, what="the API answering /readyz", watch=started)
    yield processes, started, base_url
    processes.close()


def dead_letter_count(settings: Settings, topic: str) -> int:
    """Records in a dead-letter topic (it exists: `ensure_all` created every topic)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"count-{uuid.uuid4().hex}"}
    )
    try:
        name = settings.topic(topic)
        partitions = consumer.list_topics(name, timeout=30).topics[name].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=30)
            total += high - low
        return total
    finally:
        consumer.close()


def relay_caught_up(settings: Settings) -> bool:
    """The relay's position is the newest stored event: it has published everything."""
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(max(notification_id), 0) FROM ledger_events),"
            " (SELECT coalesce(max(notification_id), 0) FROM relay_position)"
        ).fetchone()
    return row is not None and row[0] > 0 and row[0] == row[1]


def test_no_hostile_input_gets_a_5xx_or_stops_the_engine_and_everything_is_still_processed(
    settings: Settings,
    service: LedgerService,
    engine: tuple[Processes, list[LedgerflowProcess], str],
) -> None:
    processes, started, base_url = engine
    tenant_id, api_key = register_tenant(service)
    other_tenant, _ = register_tenant(service, state="29", gstin="29AAGCB7383J1Z4")
    probe = Probe(base_url, api_key)
    serial = iter(range(1, 10**6))
    began = time.monotonic()

    labels = forged_ingest(settings, tenant_id, other_tenant)
    catalogue(probe, serial)
    parallel = parallel_idempotency(probe, serial)
    dead = dead_letter_codes(settings, set(labels), deadline=time.monotonic() + 90)
    for ce_id, label in labels.items():
        probe.tally[f"forged ingest: {label}"][f"DLQ {dead.get(ce_id, 'missing')}"] += 1
    elapsed = time.monotonic() - began

    inputs = sum(sum(c.values()) for c in probe.tally.values())
    print(f"\nhostile-input probe: {inputs} inputs in {elapsed:.0f}s")
    print(probe.table())
    assert not probe.problems, "answers outside the contract:\n" + "\n".join(probe.problems)
    assert set(dead) == set(labels), f"ingest messages not dead-lettered: {set(labels) - set(dead)}"
    assert all(code != "?" for code in dead.values()), dead
    assert [a.status for a in parallel].count(201) == 1, Counter(a.outcome() for a in parallel)
    processes.assert_alive(*started)

    # Nothing is stuck: a plain invoice after the storm is issued too, and every invoice issued
    # (the accepted hostile ones included: RTL text, 1000 lines, ...) reaches the read side.
    after = probe.invoice("plain invoice after the probe", "control", invoice_body(f"HZ-{next(serial)}"))
    assert after.status == 201

    def unprojected() -> set[str]:
        processes.assert_alive(*started)
        missing = set()
        for invoice_id in probe.issued:
            got = probe.http.get(f"/v1/invoices/{invoice_id}", headers=probe.auth)
            if got.status_code != 200 or "x-ledgerflow-read-source" in got.headers:
                missing.add(invoice_id)
        return missing

    processes.wait_for(
        lambda: not unprojected(),
        timeout=120,
        interval=0.5,
        what=f"all {len(probe.issued)} issued invoices projected",
        watch=started,
        explain=lambda: f"not projected: {sorted(unprojected())}",
    )
    assert dead_letter_count(settings, "projection.invoice_register.dlq.v1") == 0
    processes.wait_for(
        lambda: relay_caught_up(settings), timeout=120, what="the relay at the newest event", watch=started
    )

    def projector_at_end() -> list[projection_status.ProjectionStatus] | None:
        statuses = projection_status.status(settings)
        return statuses if statuses and all(s.lag == 0 for s in statuses) else None

    processes.wait_for(
        projector_at_end, timeout=120, what="every projection applied up to the topics' end", watch=started
    )
    health = probe.http.get("/healthz/consumers")
    assert health.status_code == 200, health.text
    processes.assert_alive(*started)
