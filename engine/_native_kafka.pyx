# cython: boundscheck=False, wraparound=False, cdivision=True
"""Kafka's murmur2 key hash in C, for the relay's encoders (engine/kafka.py's ``murmur2`` uses it when
built). The Python version took ~2 µs of an encoder's ~31 µs per event (docs/performance.md,
"relay-murmur2"); this one is a few tens of nanoseconds."""

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
