# cython: boundscheck=False, wraparound=False, cdivision=True
"""Rows as PostgreSQL's binary COPY format, in C (engine/pg_copy.py is the interface).

Why: the projections COPY their rows in text format, where the server reads every byte of a row to
find its delimiters and escapes (the register's ~3.5 KB JSON document each time) and psycopg
escapes every byte on the way out. In binary format each field is length-prefixed. psycopg's own
binary COPY wants Python objects of each column's type (UUID, Decimal, date), which the decoded
events do not hold (their uuids, amounts and dates are strings), and converting them cost more
than the text format saved (docs/performance.md, gst-register and rebuild60). This reads the
strings as they are.

The format: https://www.postgresql.org/docs/current/sql-copy.html ("Binary Format"); each type's
binary representation is its ``*_send``/``*_recv`` pair in PostgreSQL's sources (numeric.c, uuid.c,
date.c, timestamp.c, varlena.c, jsonb.c).

Anything this does not read exactly as the server's text input would (a uuid in braces, a date in
another style, an exponent in a number, a NUL in a string, a value of another Python type) makes
``encode`` return None: the caller then COPYs that batch in text format, as before, so such input
meets exactly the errors and results it always did.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING
from cpython.datetime cimport (
    import_datetime, date, datetime, datetime_tzinfo,
    PyDateTime_GET_YEAR, PyDateTime_GET_MONTH, PyDateTime_GET_DAY,
    PyDateTime_DATE_GET_HOUR, PyDateTime_DATE_GET_MINUTE, PyDateTime_DATE_GET_SECOND,
    PyDateTime_DATE_GET_MICROSECOND,
    PyDate_CheckExact, PyDateTime_CheckExact,
)
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int16_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

from datetime import UTC
from uuid import UUID

import_datetime()

cdef object _UTC = UTC
cdef object _UUID = UUID

# Column kinds, one byte each (engine/pg_copy.py maps PostgreSQL types to them).
DEF K_TEXT = 116       # 't': text, varchar, json: the UTF-8 bytes
DEF K_JSONB = 106      # 'j': jsonb: version 1, then the text
DEF K_UUID = 117       # 'u': uuid from its 36-character (or 32-digit) hex text, or a uuid.UUID
DEF K_DATE = 100       # 'd': date from 'YYYY-MM-DD' or a datetime.date
DEF K_NUMERIC = 110    # 'n': numeric from a plain decimal string ('-12.30') or an int
DEF K_TIMESTAMPTZ = 84 # 'T': timestamptz from an aware datetime
DEF K_BOOL = 98        # 'b'
DEF K_INT2 = 104       # 'h'
DEF K_INT4 = 105       # 'i'
DEF K_INT8 = 108       # 'l'
DEF K_BYTEA = 66       # 'B': bytea from bytes, as they are

# 2000-01-01, PostgreSQL's epoch for dates and timestamps, as days since 0001-01-01 (proleptic).
DEF PG_EPOCH_DAYS = 730119
# numeric_recv refuses a display scale beyond NUMERIC_DSCALE_MASK; far below it anyway, a number
# this long is not an amount: leave it to the text path.
DEF MAX_DIGITS = 1000

cdef const char* SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
cdef int[13] DAYS_BEFORE_MONTH = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
cdef int[13] DAYS_IN_MONTH = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


cdef class _Buffer:
    """The stream being written, in a bytearray handed out as it is (no copy at the end)."""
    cdef bytearray array
    cdef char* data
    cdef Py_ssize_t length
    cdef Py_ssize_t capacity

    def __cinit__(self):
        self.capacity = 1 << 16
        self.array = PyByteArray_FromStringAndSize(NULL, self.capacity)
        self.data = PyByteArray_AS_STRING(self.array)
        self.length = 0

    cdef int reserve(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t wanted = self.length + more
        cdef Py_ssize_t capacity = self.capacity
        if wanted <= capacity:
            return 0
        while capacity < wanted:
            capacity *= 2
        PyByteArray_Resize(self.array, capacity)
        self.data = PyByteArray_AS_STRING(self.array)
        self.capacity = capacity
        return 0

    cdef bytearray finish(self):
        PyByteArray_Resize(self.array, self.length)
        return self.array

    cdef inline int put_big_endian(self, uint64_t value, int width) except -1:
        """The low ``width`` bytes of ``value``, most significant first (network order)."""
        self.reserve(width)
        cdef char* p = self.data + self.length
        cdef int i
        for i in range(width):
            p[i] = <char>((value >> (8 * (width - 1 - i))) & 0xFF)
        self.length += width
        return 0

    cdef inline int put16(self, int value) except -1:
        return self.put_big_endian(<uint16_t>value, 2)

    cdef inline int put32(self, int64_t value) except -1:
        return self.put_big_endian(<uint32_t>value, 4)

    cdef inline int put64(self, int64_t value) except -1:
        return self.put_big_endian(<uint64_t>value, 8)

    cdef inline int put(self, const char* source, Py_ssize_t size) except -1:
        self.reserve(size)
        memcpy(self.data + self.length, source, size)
        self.length += size
        return 0


cdef inline bint _leap(long year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


cdef inline int64_t _days(long year, long month, long day):
    """Days from 2000-01-01 to the given proleptic Gregorian date."""
    cdef long y = year - 1
    cdef int64_t days = y * 365 + y // 4 - y // 100 + y // 400 + DAYS_BEFORE_MONTH[month] + day
    if month > 2 and _leap(year):
        days += 1
    return days - 1 - PG_EPOCH_DAYS


cdef inline int _digit(char c):
    return c - 48 if 48 <= c <= 57 else -1


cdef inline int _hex(char c):
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef bint _text(_Buffer out, object value, bint jsonb) except -1:
    if type(value) is not str:
        return False
    cdef Py_ssize_t size
    cdef const char* utf8 = PyUnicode_AsUTF8AndSize(value, &size)
    if memchr(utf8, 0, size) != NULL:
        return False  # psycopg refuses a NUL client-side; the text path keeps its message
    out.put32(size + 1 if jsonb else size)
    if jsonb:
        out.put("\x01", 1)
    out.put(utf8, size)
    return True


cdef bint _uuid(_Buffer out, object value) except -1:
    cdef bytes packed
    if type(value) is _UUID:
        # A uuid.UUID (a tenant id the decoder made from the Avro logical type): its 16 bytes.
        packed = value.bytes
        out.put32(16)
        out.put(PyBytes_AS_STRING(packed), 16)
        return True
    if type(value) is not str:
        return False
    cdef Py_ssize_t size
    cdef const char* s = PyUnicode_AsUTF8AndSize(value, &size)
    cdef unsigned char raw[16]
    cdef int i = 0, j = 0, hi, lo
    cdef bint hyphens = size == 36
    if size != 36 and size != 32:
        return False
    while j < 16:
        if hyphens and (i == 8 or i == 13 or i == 18 or i == 23):
            if s[i] != 45:
                return False
            i += 1
            continue
        hi = _hex(s[i])
        lo = _hex(s[i + 1])
        if hi < 0 or lo < 0:
            return False
        raw[j] = <unsigned char>(hi * 16 + lo)
        i += 2
        j += 1
    out.put32(16)
    out.put(<char*>raw, 16)
    return True


cdef bint _date(_Buffer out, object value) except -1:
    cdef long year, month, day
    cdef Py_ssize_t size
    cdef const char* s
    cdef int i
    if PyDate_CheckExact(value):
        year, month, day = PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value), PyDateTime_GET_DAY(value)
    elif type(value) is str:
        s = PyUnicode_AsUTF8AndSize(value, &size)
        if size != 10 or s[4] != 45 or s[7] != 45:
            return False
        for i in range(10):
            if i == 4 or i == 7:
                continue
            if _digit(s[i]) < 0:
                return False
        year = _digit(s[0]) * 1000 + _digit(s[1]) * 100 + _digit(s[2]) * 10 + _digit(s[3])
        month = _digit(s[5]) * 10 + _digit(s[6])
        day = _digit(s[8]) * 10 + _digit(s[9])
        if year < 1 or month < 1 or month > 12 or day < 1:
            return False
        if day > DAYS_IN_MONTH[month] + (1 if month == 2 and _leap(year) else 0):
            return False
    else:
        return False
    out.put32(4)
    out.put32(_days(year, month, day))
    return True


cdef bint _timestamptz(_Buffer out, object value) except -1:
    if not PyDateTime_CheckExact(value) or datetime_tzinfo(value) is None:
        return False  # a naive time is the session time zone's business: the text path's
    cdef int64_t shift = 0
    if datetime_tzinfo(value) is not _UTC:
        offset = value.utcoffset()
        if offset is None:
            return False
        shift = (<int64_t>offset.days * 86400 + <int64_t>offset.seconds) * 1000000 + offset.microseconds
    cdef int64_t days = _days(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value), PyDateTime_GET_DAY(value))
    cdef int64_t seconds = (
        days * 86400
        + PyDateTime_DATE_GET_HOUR(value) * 3600
        + PyDateTime_DATE_GET_MINUTE(value) * 60
        + PyDateTime_DATE_GET_SECOND(value)
    )
    out.put32(8)
    out.put64(seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(value) - shift)
    return True


cdef bint _numeric(_Buffer out, object value) except -1:
    """numeric_send's layout: ndigits, weight, sign, dscale, then base-10000 digits, most significant
    first; the value is the sum of digit[i] * 10000 ** (weight - i)."""
    cdef Py_ssize_t size
    cdef const char* s
    if type(value) is int:
        value = str(value)
    elif type(value) is not str:
        return False
    s = PyUnicode_AsUTF8AndSize(value, &size)
    cdef Py_ssize_t i = 0, int_start, int_end, frac_start = 0, frac_end = 0
    cdef bint negative = False
    if size > 0 and s[0] == 45:
        negative = True
        i = 1
    int_start = i
    while i < size and _digit(s[i]) >= 0:
        i += 1
    int_end = i
    if i < size and s[i] == 46:
        i += 1
        frac_start = i
        while i < size and _digit(s[i]) >= 0:
            i += 1
        frac_end = i
        if frac_end == frac_start:
            return False  # "1." : the text path's business
    if i != size or int_end == int_start or int_end - int_start + frac_end - frac_start > MAX_DIGITS:
        return False
    while int_start < int_end and s[int_start] == 48:
        int_start += 1  # leading zeros
    cdef Py_ssize_t int_digits = int_end - int_start
    cdef Py_ssize_t dscale = frac_end - frac_start
    # The digits as one run, the integer part padded on the left to whole groups of four and the
    # fraction on the right: group g covers run[4g:4g+4].
    cdef Py_ssize_t lead = (4 - int_digits % 4) % 4
    cdef Py_ssize_t int_groups = (int_digits + 3) // 4
    cdef Py_ssize_t frac_groups = (dscale + 3) // 4
    cdef Py_ssize_t groups = int_groups + frac_groups
    # At most MAX_DIGITS (1,000) digits: at most 251 groups of four, the integer and the fraction
    # part each padded to whole groups.
    cdef int16_t digits[252]
    cdef Py_ssize_t g, k, position, first, last
    cdef int d, c
    for g in range(groups):
        d = 0
        for k in range(4):
            position = g * 4 + k  # in the padded run
            if g < int_groups:
                position -= lead
                c = _digit(s[int_start + position]) if position >= 0 else 0
            else:
                position -= int_groups * 4
                c = _digit(s[frac_start + position]) if position < dscale else 0
            d = d * 10 + c
        digits[g] = <int16_t>d
    first = 0
    while first < groups and digits[first] == 0:
        first += 1
    last = groups
    while last > first and digits[last - 1] == 0:
        last -= 1
    out.put32(8 + 2 * (last - first))
    out.put16(<int>(last - first))
    out.put16(<int>(int_groups - 1 - first) if last > first else 0)
    out.put16(0x4000 if negative and last > first else 0)
    out.put16(<int>dscale)
    for g in range(first, last):
        out.put16(digits[g])
    return True


cdef bint _integer(_Buffer out, object value, int width) except -1:
    if type(value) is not int:
        return False  # a bool too: the text path sends 'true', which the server refuses
    cdef int64_t v
    try:
        v = value
    except OverflowError:
        return False
    if width == 2:
        if not -32768 <= v <= 32767:
            return False
        out.put32(2)
        out.put16(<int>v)
    elif width == 4:
        if not -2147483648 <= v <= 2147483647:
            return False
        out.put32(4)
        out.put32(v)
    else:
        out.put32(8)
        out.put64(v)
    return True


cdef bint _field(_Buffer out, object value, int kind) except -1:
    if value is None:
        out.put32(-1)
        return True
    if kind == K_TEXT:
        return _text(out, value, False)
    if kind == K_NUMERIC:
        return _numeric(out, value)
    if kind == K_UUID:
        return _uuid(out, value)
    if kind == K_TIMESTAMPTZ:
        return _timestamptz(out, value)
    if kind == K_DATE:
        return _date(out, value)
    if kind == K_JSONB:
        return _text(out, value, True)
    if kind == K_BOOL:
        if type(value) is not bool:
            return False
        out.put32(1)
        out.put("\x01" if value else "\x00", 1)
        return True
    if kind == K_INT2:
        return _integer(out, value, 2)
    if kind == K_INT4:
        return _integer(out, value, 4)
    if kind == K_INT8:
        return _integer(out, value, 8)
    if kind == K_BYTEA:
        # byteasend/bytearecv: the bytes themselves (the text form is their hex or escape text).
        if type(value) is not bytes:
            return False
        out.put32(<uint32_t>len(<bytes>value))
        out.put(PyBytes_AS_STRING(value), len(<bytes>value))
        return True
    return False


def encode(rows, bytes kinds not None, bint header=True, bint trailer=True):
    """``rows`` in binary COPY format (a bytearray): dicts whose values, in order, are the columns whose kinds
    ``kinds`` gives, one byte each; or None when a value is not one this reads exactly as the
    server's text input would. ``header`` and ``trailer``: begin and end the stream (a COPY sent
    in several parts has the header in the first and the trailer in the last)."""
    cdef _Buffer out = _Buffer()
    cdef const unsigned char* k = <const unsigned char*>PyBytes_AS_STRING(kinds)
    cdef Py_ssize_t columns = len(kinds)
    cdef Py_ssize_t position, column
    cdef PyObject* key
    cdef PyObject* value
    if header:
        out.put(SIGNATURE, 11)
        out.put32(0)  # flags
        out.put32(0)  # header extension length
    cdef Py_ssize_t count = len(rows), done = 0, start
    try:
        for row in rows:
            if type(row) is not dict or len(<dict>row) != columns:
                return None
            start = out.length
            out.put16(<int>columns)
            position = 0
            column = 0
            while PyDict_Next(<dict>row, &position, &key, &value):
                if not _field(out, <object>value, k[column]):
                    return None
                column += 1
            done += 1
            if done == 1 and count > 1:
                # Room for the rest at once, by the first row's size and an eighth more: growing by
                # doubling copied the stream about once more, which was most of this function's time.
                out.reserve((out.length - start) * (count - 1) * 9 // 8 + 2)
    except UnicodeEncodeError:
        return None  # a lone surrogate: psycopg's text path refuses it, with its own message
    if trailer:
        out.put16(-1)
    return out.finish()
