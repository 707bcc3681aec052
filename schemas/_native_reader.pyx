# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The native Avro reader: a small interpreter over a flat program of op codes (schemas/native_reader.py
derives the program, once per (writer, reader) schema pair, from the compiled reader's analysis).

One program serves every schema, so a schema added later needs no C build. The program is a C array
of Py_ssize_t words; a node is an op code followed by its arguments, children are referred to by
their offset in the array, and constants (dict keys, enum symbols, defaults, logical readers) by
their index in a tuple kept alive by the Program. Anything outside the well-formed case (truncated
body, bad union index, trailing bytes, bad UTF-8, a varint beyond 64 bits, an int out of range, a
negative count) raises _Fallback, and the whole message goes to the ``slow`` callable
(schemas.codec.decode), so records and errors are fastavro's, as with the compiled Python reader.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.datetime cimport import_datetime, timedelta_new
from cpython.dict cimport PyDict_New, PyDict_SetItem
from cpython.list cimport PyList_Append, PyList_New
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    # Public since Python 3.11; what struct's "<f" and "<d" use, so NaNs and infinities come out the same.
    double PyFloat_Unpack4(const char *p, int le) except? -1.0
    double PyFloat_Unpack8(const char *p, int le) except? -1.0

cdef extern from *:
    """
    /* A record's dict sized for its fields up front, as CPython's own dict display ({...}) does:
       growing 8 -> 16 -> 32 -> 64 slots rehashes every key each time. 3.13 made the call internal. */
    #if PY_VERSION_HEX < 0x030D0000
    #define nr_dict_presized(n) _PyDict_NewPresized(n)
    #else
    #define nr_dict_presized(n) PyDict_New()
    #endif
    """
    object nr_dict_presized(Py_ssize_t n)

import_datetime()

# Op codes; the layouts (words after the op code) are documented in schemas/native_reader.py.
cdef enum:
    OP_NULL = 0
    OP_BOOLEAN = 1
    OP_INT = 2
    OP_LONG = 3
    OP_FLOAT = 4
    OP_DOUBLE = 5
    OP_STRING = 6
    OP_BYTES = 7
    OP_FIXED = 8
    OP_ENUM = 9
    OP_TIMESTAMP_MILLIS = 10
    OP_LOGICAL = 11
    OP_ARRAY = 12
    OP_MAP = 13
    OP_RECORD = 14
    OP_UNION = 15

OPS = {
    "null": OP_NULL, "boolean": OP_BOOLEAN, "int": OP_INT, "long": OP_LONG, "float": OP_FLOAT,
    "double": OP_DOUBLE, "string": OP_STRING, "bytes": OP_BYTES, "fixed": OP_FIXED, "enum": OP_ENUM,
    "timestamp-millis": OP_TIMESTAMP_MILLIS, "logical": OP_LOGICAL, "array": OP_ARRAY, "map": OP_MAP,
    "record": OP_RECORD, "union": OP_UNION,
}

cdef int64_t MS_PER_DAY = 86400000
# timedelta's own limit on days; beyond it Python's timedelta raises OverflowError, so does this.
cdef int64_t MAX_DAYS = 999999999


class _Fallback(Exception):
    """The bytes are outside the native reader's well-formed case; fastavro decides."""


cdef struct Cursor:
    const unsigned char *d
    Py_ssize_t p
    Py_ssize_t end


cdef inline int read_long(Cursor *c, int64_t *out) except -1:
    """Zig-zag varint (Avro spec, "Binary Encoding"); more than 64 bits falls back, as in _long."""
    cdef uint64_t n = 0
    cdef unsigned char b
    cdef int shift = 0
    while True:
        if c.p >= c.end:
            raise _Fallback
        b = c.d[c.p]
        c.p += 1
        if shift == 63 and (b & 0x7F) > 1:
            raise _Fallback  # the value needs more than 64 bits
        n |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise _Fallback
    out[0] = <int64_t>((n >> 1) ^ (<uint64_t>0 - (n & 1)))
    return 0


cdef inline int64_t read_count(Cursor *c) except -1:
    """A length or block count; negative ones (sized blocks, hostile lengths) go to fastavro."""
    cdef int64_t v
    if c.p < c.end and c.d[c.p] < 128 and not (c.d[c.p] & 1):
        v = c.d[c.p] >> 1
        c.p += 1
        return v
    read_long(c, &v)
    if v < 0:
        raise _Fallback
    return v


cdef inline object read_string(Cursor *c):
    cdef int64_t n = read_count(c)
    cdef const unsigned char *start
    cdef unsigned char high = 0
    cdef Py_ssize_t i
    cdef object text
    if n > c.end - c.p:
        raise _Fallback
    start = c.d + c.p
    c.p += n
    if 1 < n <= 64:
        # ASCII (all of the bench invoice's ~110 strings): the str made and filled directly, the
        # same compact ASCII object the decoder makes, without its per-string set-up.
        for i in range(n):
            high |= start[i]
        if high < 0x80:
            text = PyUnicode_New(n, 127)
            memcpy(PyUnicode_DATA(text), start, n)
            return text
    # Strict UTF-8, as bytes.decode() (surrogates and overlong forms are errors: fastavro's case);
    # empty and one-character strings come back as CPython's shared singletons, as there.
    return PyUnicode_DecodeUTF8(<const char *>start, n, NULL)


cdef class Program:
    cdef Py_ssize_t *code
    cdef Py_ssize_t size
    cdef Py_ssize_t root
    cdef tuple constants
    cdef object slow
    cdef object epoch
    cdef object deepcopy
    cdef Py_ssize_t header
    cdef public object program  # the words and constants, for a reader debugging a mismatch

    def __cinit__(self, code, tuple constants, Py_ssize_t root, slow, epoch, deepcopy, Py_ssize_t header):
        cdef Py_ssize_t i
        self.size = len(code)
        self.code = <Py_ssize_t *>PyMem_Malloc(max(self.size, 1) * sizeof(Py_ssize_t))
        if self.code == NULL:
            raise MemoryError()
        for i in range(self.size):
            self.code[i] = code[i]
        self.root = root
        self.constants = constants
        self.slow = slow
        self.epoch = epoch
        self.deepcopy = deepcopy
        self.header = header
        self.program = (tuple(code), constants, root)

    def __dealloc__(self):
        PyMem_Free(self.code)

    def __call__(self, data):
        cdef Cursor c
        cdef object record
        try:
            if type(data) is not bytes:
                data = bytes(data)
            c.d = <const unsigned char *>PyBytes_AS_STRING(data)
            c.p = self.header
            c.end = PyBytes_GET_SIZE(data)
            record = self.node(&c, self.root)
            if c.p != c.end:
                raise _Fallback
            return record
        except Exception:
            return self.slow(data)

    cdef inline object constant(self, Py_ssize_t i):
        return <object>PyTuple_GET_ITEM(self.constants, i)

    cdef object node(self, Cursor *c, Py_ssize_t at):
        cdef Py_ssize_t op = self.code[at]
        cdef int64_t v, n, days, rest
        cdef Py_ssize_t i, fields, defaults, key, child
        cdef unsigned char b
        cdef object value, out, item
        cdef tuple symbols
        if op == OP_UNION:
            # One byte: unions have at most 63 branches (the builder refuses more), so any index
            # that is not an even byte below 2 * branches is bad, as in the compiled reader.
            if c.p >= c.end:
                raise _Fallback
            b = c.d[c.p]
            c.p += 1
            if b & 1 or (b >> 1) >= self.code[at + 1]:
                raise _Fallback
            child = self.code[at + 2 + (b >> 1)]
            if child < 0:
                raise _Fallback  # a branch the reader has no match for
            return self.node(c, child)
        if op == OP_NULL:
            return None
        if op == OP_STRING:
            return read_string(c)
        if op == OP_BYTES:
            n = read_count(c)
            if n > c.end - c.p:
                raise _Fallback
            c.p += n
            return PyBytes_FromStringAndSize(<const char *>(c.d + c.p - n), n)
        if op == OP_RECORD:
            fields = self.code[at + 1]
            defaults = self.code[at + 2]
            out = nr_dict_presized(fields + defaults)
            at += 3
            for i in range(fields):
                key = self.code[at]
                value = self.node(c, self.code[at + 1])
                if key >= 0:
                    PyDict_SetItem(out, self.constant(key), value)
                at += 2
            for i in range(defaults):
                value = self.constant(self.code[at + 1])
                if self.code[at + 2]:
                    value = self.deepcopy(value)
                PyDict_SetItem(out, self.constant(self.code[at]), value)
                at += 3
            return out
        if op == OP_LONG or op == OP_INT:
            if c.p < c.end and c.d[c.p] < 128:
                v = c.d[c.p]
                c.p += 1
                return (v >> 1) ^ -(v & 1)
            read_long(c, &v)
            if op == OP_INT and not (-2147483648 <= v <= 2147483647):
                raise _Fallback
            return v
        if op == OP_TIMESTAMP_MILLIS:
            read_long(c, &v)
            # fastavro: epoch + timedelta(microseconds=ms * 1000); the same value, built in C. Floor
            # division by hand: C's truncates towards zero.
            days = v // MS_PER_DAY
            rest = v - days * MS_PER_DAY
            if rest < 0:
                rest += MS_PER_DAY
                days -= 1
            if days > MAX_DAYS or days < -MAX_DAYS:
                raise _Fallback
            return self.epoch + timedelta_new(<int>days, <int>(rest // 1000), <int>((rest % 1000) * 1000))
        if op == OP_BOOLEAN:
            if c.p >= c.end or c.d[c.p] > 1:
                raise _Fallback
            c.p += 1
            return c.d[c.p - 1] == 1
        if op == OP_ARRAY or op == OP_MAP:
            child = self.code[at + 1]
            out = PyList_New(0) if op == OP_ARRAY else PyDict_New()
            n = read_count(c)
            while n:
                for i in range(n):
                    if op == OP_ARRAY:
                        PyList_Append(out, self.node(c, child))
                    else:
                        item = read_string(c)
                        PyDict_SetItem(out, item, self.node(c, child))
                n = read_count(c)
            return out
        if op == OP_FLOAT:
            if c.end - c.p < 4:
                raise _Fallback
            c.p += 4
            return PyFloat_Unpack4(<const char *>(c.d + c.p - 4), 1)
        if op == OP_DOUBLE:
            if c.end - c.p < 8:
                raise _Fallback
            c.p += 8
            return PyFloat_Unpack8(<const char *>(c.d + c.p - 8), 1)
        if op == OP_FIXED:
            n = self.code[at + 1]
            if n > c.end - c.p:
                raise _Fallback
            c.p += n
            return PyBytes_FromStringAndSize(<const char *>(c.d + c.p - n), n)
        if op == OP_ENUM:
            read_long(c, &v)
            symbols = self.constant(self.code[at + 1])
            if v < 0 or v >= PyTuple_GET_SIZE(symbols):
                raise _Fallback
            return symbols[v]
        if op == OP_LOGICAL:
            value = self.node(c, self.code[at + 1])
            return self.constant(self.code[at + 2])(value, self.constant(self.code[at + 3]), None)
        raise _Fallback  # an op code this interpreter does not know: the builder and it disagree
