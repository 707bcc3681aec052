# cython: boundscheck=False, wraparound=False, cdivision=True
"""Kafka's murmur2 key hash in C, for the relay's encoders (engine/kafka.py's ``murmur2`` uses it when
built). The Python version took ~2 µs of an encoder's ~31 µs per event (docs/performance.md,
"relay-murmur2"); this one is a few tens of nanoseconds. Also the relay direct path's envelope
(engine/relay_direct.py's ``envelope``; docs/performance.md, "relay-glue")."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t


def murmur2(bytes data not None):
    """As org.apache.kafka.common.utils.Utils.murmur2 (seed 0x9747b28c), unsigned: the same walk as
    engine.kafka.murmur2_python, four little-endian bytes at a time, uint32 arithmetic."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t length = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t whole = length & ~(<Py_ssize_t>3)
    cdef Py_ssize_t i = 0
    cdef uint32_t m = 0x5BD1E995
    cdef uint32_t h = (<uint32_t>0x9747B28C) ^ <uint32_t>length
    cdef uint32_t k
    while i < whole:
        k = (<uint32_t>p[i]) | (<uint32_t>p[i + 1] << 8) | (<uint32_t>p[i + 2] << 16) | (<uint32_t>p[i + 3] << 24)
        k *= m
        k ^= k >> 24
        k *= m
        h *= m
        h ^= k
        i += 4
    cdef Py_ssize_t extra = length & 3
    if extra >= 3:
        h ^= <uint32_t>p[whole + 2] << 16
    if extra >= 2:
        h ^= <uint32_t>p[whole + 1] << 8
    if extra >= 1:
        h ^= <uint32_t>p[whole]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return h


# -- the relay's direct path: an event's envelope ---------------------------------------------------

from cpython.datetime cimport (
    import_datetime, datetime, datetime_tzinfo,
    PyDateTime_GET_YEAR, PyDateTime_GET_MONTH, PyDateTime_GET_DAY,
    PyDateTime_DATE_GET_HOUR, PyDateTime_DATE_GET_MINUTE, PyDateTime_DATE_GET_SECOND,
    PyDateTime_DATE_GET_MICROSECOND,
)
from cpython.unicode cimport PyUnicode_New
from libc.stdint cimport int64_t

import hashlib
from datetime import UTC

import_datetime()

cdef object _sha1 = hashlib.sha1
cdef object _UTC = UTC
cdef const char* _HEX = b"0123456789abcdef"
cdef int[13] _DAYS_BEFORE_MONTH = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
# 2**53: microsecond counts up to it convert to a double exactly, so (double)us / 1e6 is the correctly
# rounded quotient Python's int / int true division gives; beyond it (years far from ours) Python does it.
cdef int64_t _EXACT = 9007199254740992

cdef object _PREFIX_SPEC = ("ce_specversion", b"1.0")
cdef object _CONTENT_TYPE = ("content-type", b"application/avro")


cdef str _uuid5_text(bytes namespace, str aggregate_id, object version):
    cdef bytes digest = _sha1(namespace + f"{aggregate_id}:{version}".encode()).digest()
    cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(digest)
    cdef unsigned char b[16]
    cdef char out[36]
    cdef int i, j = 0
    for i in range(16):
        b[i] = d[i]
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            out[j] = 45  # '-'
            j += 1
        out[j] = _HEX[b[i] >> 4]
        out[j + 1] = _HEX[b[i] & 15]
        j += 2
    return out[:36].decode("ascii")


cdef inline void _digits(char* out, long value, int width):
    cdef int i
    for i in range(width - 1, -1, -1):
        out[i] = 48 + value % 10
        value //= 10


def envelope(
    bytes namespace, str aggregate_id, object version, datetime time, str tenant_id, str traceparent,
    tuple type_headers,
):
    """(event id text, occurred_at millis, CloudEvents headers) of one event, as
    engine.relay_direct.envelope_python computes them: ``event_id_text``, ``_millis`` and
    ``headers_for`` of the publishing module, in one call."""
    cdef datetime u = time if datetime_tzinfo(time) is _UTC else time.astimezone(_UTC)
    cdef long year = PyDateTime_GET_YEAR(u), month = PyDateTime_GET_MONTH(u), day = PyDateTime_GET_DAY(u)
    cdef long hour = PyDateTime_DATE_GET_HOUR(u), minute = PyDateTime_DATE_GET_MINUTE(u)
    cdef long second = PyDateTime_DATE_GET_SECOND(u), micro = PyDateTime_DATE_GET_MICROSECOND(u)
    # isoformat(), then "+00:00" as "Z": microseconds only when not zero.
    cdef char text[27]
    cdef int length = 20 if micro == 0 else 27
    _digits(text, year, 4)
    text[4] = 45
    _digits(text + 5, month, 2)
    text[7] = 45
    _digits(text + 8, day, 2)
    text[10] = 84  # 'T'
    _digits(text + 11, hour, 2)
    text[13] = 58
    _digits(text + 14, minute, 2)
    text[16] = 58
    _digits(text + 17, second, 2)
    if micro:
        text[19] = 46
        _digits(text + 20, micro, 6)
    text[length - 1] = 90  # 'Z'
    # timestamp() of the UTC time: microseconds since the epoch over 1e6, as a double.
    cdef long y = year - 1
    cdef int64_t days = y * 365 + y // 4 - y // 100 + y // 400 + _DAYS_BEFORE_MONTH[month] + day - 719163
    if month > 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        days += 1
    cdef int64_t us = ((days * 86400 + hour * 3600 + minute * 60 + second) * 1000000) + micro
    cdef object occurred_at
    if -_EXACT <= us <= _EXACT:
        occurred_at = <int64_t>((<double>us / 1e6) * 1000.0)
    else:
        occurred_at = int(u.timestamp() * 1000)
    ce_id = _uuid5_text(namespace, aggregate_id, version)
    headers = [
        _PREFIX_SPEC,
        ("ce_id", ce_id.encode()),
        ("ce_source", f"/tenants/{tenant_id}".encode()),
        type_headers[0],
        ("ce_subject", aggregate_id.encode()),
        ("ce_time", text[:length]),
        type_headers[1],
        _CONTENT_TYPE,
        ("traceparent", traceparent.encode()),
    ]
    return ce_id, occurred_at, headers
