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
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
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


# ---------------------------------------------------------------------------------------------
# The record and its JSON text in one pass (``Program.split``): a read model that stores a record
# as a JSON document (the invoice register's ``document``) gets the text written straight from the
# message, and builds Python objects only for what it reads itself, leaving out arrays (a 5-line
# invoice's lines are most of its ~190 objects). The text is exactly orjson's of the record the
# reader would return (keys in the same order, orjson's escapes); anything this JSON writer does
# not cover raises _Fallback, and ``split`` returns None: the caller decodes as usual.

cdef struct Text:
    char *data
    Py_ssize_t size
    Py_ssize_t room


cdef int text_room(Text *t, Py_ssize_t more) except -1:
    cdef Py_ssize_t room
    cdef char *grown
    if t.size + more <= t.room:
        return 0
    room = max(t.room * 2, t.size + more, 1024)
    grown = <char *>PyMem_Realloc(t.data, room)
    if grown == NULL:
        raise MemoryError()
    t.data = grown
    t.room = room
    return 0


cdef inline int text_put(Text *t, const char *s, Py_ssize_t n) except -1:
    if t.size + n > t.room:
        text_room(t, n)
    memcpy(t.data + t.size, s, n)
    t.size += n
    return 0


cdef inline int text_char(Text *t, char ch) except -1:
    if t.size >= t.room:
        text_room(t, 1)
    t.data[t.size] = ch
    t.size += 1
    return 0


cdef const char *HEX = b"0123456789abcdef"


# Bytes a JSON string cannot hold as they are (orjson's set): control characters, the quote and the
# backslash. 1 marks them, in a table rather than three comparisons a byte.
cdef unsigned char ESCAPED[256]
for _byte in range(256):
    ESCAPED[_byte] = 1 if _byte < 0x20 or _byte == 0x22 or _byte == 0x5C else 0


cdef int text_string(Text *t, const unsigned char *s, Py_ssize_t n) except -1:
    """``s`` (valid UTF-8) as a JSON string, escaped as orjson escapes: the quote, the backslash and
    control characters (\\b \\t \\n \\f \\r, the others as \\u00xx); everything else as it is."""
    cdef Py_ssize_t i = 0, run
    cdef unsigned char ch
    if t.size + n + 2 > t.room:
        text_room(t, n + 2)
    t.data[t.size] = b'"'
    t.size += 1
    while True:
        run = i
        while i < n and not ESCAPED[s[i]]:
            i += 1
        text_put(t, <const char *>(s + run), i - run)
        if i >= n:
            break
        ch = s[i]
        i += 1
        if ch == b'"' or ch == b'\\':
            text_char(t, b'\\')
            text_char(t, <char>ch)
        elif ch == 0x08:
            text_put(t, b"\\b", 2)
        elif ch == 0x09:
            text_put(t, b"\\t", 2)
        elif ch == 0x0A:
            text_put(t, b"\\n", 2)
        elif ch == 0x0C:
            text_put(t, b"\\f", 2)
        elif ch == 0x0D:
            text_put(t, b"\\r", 2)
        else:
            text_put(t, b"\\u00", 4)
            text_char(t, HEX[ch >> 4])
            text_char(t, HEX[ch & 15])
    return text_char(t, b'"')


cdef int text_long(Text *t, int64_t v) except -1:
    cdef char digits[24]
    cdef int i = 24
    cdef uint64_t u = <uint64_t>v if v >= 0 else <uint64_t>0 - <uint64_t>v
    while True:
        i -= 1
        digits[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if v < 0:
        i -= 1
        digits[i] = b'-'
    return text_put(t, digits + i, 24 - i)


cdef int text_str(Text *t, object value) except -1:
    """A str constant (a field name, an enum symbol) as a JSON string."""
    cdef Py_ssize_t n
    cdef const char *s = PyUnicode_AsUTF8AndSize(value, &n)
    return text_string(t, <const unsigned char *>s, n)


cdef inline int string_span(Cursor *c, const unsigned char **start, Py_ssize_t *n) except -1:
    """Where the string at the cursor's bytes are, moving past them; its UTF-8 checked as
    ``read_string`` checks it (strictly), without keeping a str."""
    cdef int64_t size = read_count(c)
    cdef Py_ssize_t i
    cdef unsigned char high = 0
    if size > c.end - c.p:
        raise _Fallback
    start[0] = c.d + c.p
    n[0] = size
    c.p += size
    for i in range(size):
        high |= start[0][i]
    if high >= 0x80:
        PyUnicode_DecodeUTF8(<const char *>start[0], size, NULL)  # raises on invalid UTF-8
    return 0


# What ``Program.both`` returns for a value it wrote as text only (an array, a map).
cdef object NOT_BUILT = object()


cdef class Program:
    cdef Py_ssize_t *code
    cdef Py_ssize_t size
    cdef Py_ssize_t root
    cdef tuple constants
    cdef object slow
    cdef object epoch
    cdef object deepcopy
    cdef Py_ssize_t header
    cdef object dumps
    cdef tuple keys  # per constant: a str's JSON text and a colon, as bytes (None for others)
    cdef Py_ssize_t text_hint  # the room a text was last given: the next one starts there
    cdef public object program  # the words and constants, for a reader debugging a mismatch

    def __cinit__(
        self, code, tuple constants, Py_ssize_t root, slow, epoch, deepcopy, Py_ssize_t header, dumps=None
    ):
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
        self.dumps = dumps  # orjson.dumps, for a default value in ``split``'s text
        self.keys = tuple(
            dumps(value) + b":" if dumps is not None and type(value) is str else None for value in constants
        )
        self.text_hint = 1024
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

    cdef inline Py_ssize_t branch(self, Cursor *c, Py_ssize_t at) except -1:
        """The child of union node ``at`` that the byte at the cursor picks. One byte: unions have
        at most 63 branches (the builder refuses more), so any index that is not an even byte below
        2 * branches is bad, as in the compiled reader."""
        cdef unsigned char b
        cdef Py_ssize_t child
        if c.p >= c.end:
            raise _Fallback
        b = c.d[c.p]
        c.p += 1
        if b & 1 or (b >> 1) >= self.code[at + 1]:
            raise _Fallback
        child = self.code[at + 2 + (b >> 1)]
        if child < 0:
            raise _Fallback  # a branch the reader has no match for
        return child

    cdef object node(self, Cursor *c, Py_ssize_t at):
        cdef Py_ssize_t op = self.code[at]
        cdef int64_t v, n, days, rest
        cdef Py_ssize_t i, fields, defaults, key, child
        cdef object value, out, item
        cdef tuple symbols
        if op == OP_UNION:
            return self.node(c, self.branch(c, at))
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

    def split(self, data, omit):
        """The record and the JSON text of it without its top-level fields named in ``omit`` (a
        frozenset), or None where this writer does not cover the message: anything ``__call__``
        would hand fastavro, and floats, bytes, maps, timestamps and logical types inside the text
        (orjson writes them its own way). The record leaves out arrays (their elements are only in
        the text); the text is orjson's of the full record without those fields."""
        cdef Cursor c
        cdef Text t
        t.data = NULL
        t.size = 0
        t.room = 0
        try:
            text_room(&t, self.text_hint)
            if type(data) is not bytes or self.code[self.root] != OP_RECORD:
                return None
            c.d = <const unsigned char *>PyBytes_AS_STRING(data)
            c.p = self.header
            c.end = PyBytes_GET_SIZE(data)
            record = self.both_record(&c, self.root, &t, omit)
            if c.p != c.end:
                return None
            # Capped: one huge message must not make every later text start that large.
            self.text_hint = min(t.size + t.size // 8, 65536)
            return record, PyUnicode_DecodeUTF8(t.data, t.size, NULL)
        except Exception:
            return None
        finally:
            PyMem_Free(t.data)

    cdef object both_record(self, Cursor *c, Py_ssize_t at, Text *t, object omit):
        """A record as a dict (arrays left out) and as JSON text (fields in ``omit`` left out)."""
        cdef Py_ssize_t fields = self.code[at + 1]
        cdef Py_ssize_t defaults = self.code[at + 2]
        cdef Py_ssize_t i, key, child
        cdef bint first = True
        cdef object out = nr_dict_presized(fields + defaults)
        cdef object name, value
        text_char(t, b'{')
        at += 3
        for i in range(fields):
            key = self.code[at]
            child = self.code[at + 1]
            at += 2
            if key < 0:
                self.node(c, child)  # a field the reader drops: read past
                continue
            name = self.constant(key)
            if omit is not None and name in omit:
                PyDict_SetItem(out, name, self.node(c, child))
                continue
            if not first:
                text_char(t, b',')
            first = False
            self.text_key(t, key)
            value = self.both(c, child, t)
            if value is not NOT_BUILT:
                PyDict_SetItem(out, name, value)
        for i in range(defaults):
            name = self.constant(self.code[at])
            value = self.constant(self.code[at + 1])
            if self.code[at + 2]:
                value = self.deepcopy(value)
            at += 3
            PyDict_SetItem(out, name, value)
            if omit is None or name not in omit:
                if not first:
                    text_char(t, b',')
                first = False
                text_str(t, name)
                text_char(t, b':')
                self.text_default(t, value)
        text_char(t, b'}')
        return out

    cdef inline int text_key(self, Text *t, Py_ssize_t key) except -1:
        """Field name ``key`` (a constant's index) and its colon."""
        cdef object written = <object>PyTuple_GET_ITEM(self.keys, key)
        if written is None:
            raise _Fallback
        return text_put(t, PyBytes_AS_STRING(written), PyBytes_GET_SIZE(written))

    cdef int text_default(self, Text *t, object value) except -1:
        if self.dumps is None:
            raise _Fallback
        cdef bytes written = self.dumps(value)
        return text_put(t, PyBytes_AS_STRING(written), PyBytes_GET_SIZE(written))

    cdef object both(self, Cursor *c, Py_ssize_t at, Text *t):
        """The value at the cursor as a Python object (NOT_BUILT for an array or a map, written as
        text only) and as JSON text."""
        cdef Py_ssize_t op = self.code[at]
        cdef Py_ssize_t start
        cdef int64_t n
        cdef object value
        if op == OP_UNION:
            return self.both(c, self.branch(c, at), t)
        if op == OP_STRING:
            start = c.p
            value = read_string(c)
            n = c.p
            c.p = start
            read_count(c)
            text_string(t, c.d + c.p, n - c.p)
            c.p = n
            return value
        if op == OP_RECORD:
            return self.both_record(c, at, t, None)
        if op == OP_NULL:
            text_put(t, b"null", 4)
            return None
        if op == OP_LONG or op == OP_INT:
            value = self.node(c, at)
            text_long(t, <int64_t>value)
            return value
        if op == OP_BOOLEAN:
            value = self.node(c, at)
            if value:
                text_put(t, b"true", 4)
            else:
                text_put(t, b"false", 5)
            return value
        if op == OP_ENUM:
            value = self.node(c, at)
            text_str(t, value)
            return value
        self.text(c, at, t)  # an array (a map, a float... raise _Fallback there)
        return NOT_BUILT

    cdef int text(self, Cursor *c, Py_ssize_t at, Text *t) except -1:
        """The value at the cursor as JSON text only."""
        cdef Py_ssize_t op = self.code[at]
        cdef Py_ssize_t i, key, child, fields, defaults
        cdef const unsigned char *s
        cdef Py_ssize_t size
        cdef int64_t v, n
        cdef bint first = True
        cdef tuple symbols
        cdef object name, value
        if op == OP_UNION:
            return self.text(c, self.branch(c, at), t)
        if op == OP_STRING:
            string_span(c, &s, &size)
            return text_string(t, s, size)
        if op == OP_NULL:
            return text_put(t, b"null", 4)
        if op == OP_LONG or op == OP_INT:
            if c.p < c.end and c.d[c.p] < 128:
                v = c.d[c.p]
                c.p += 1
                v = (v >> 1) ^ -(v & 1)
            else:
                read_long(c, &v)
                if op == OP_INT and not (-2147483648 <= v <= 2147483647):
                    raise _Fallback
            return text_long(t, v)
        if op == OP_BOOLEAN:
            if c.p >= c.end or c.d[c.p] > 1:
                raise _Fallback
            c.p += 1
            if c.d[c.p - 1]:
                return text_put(t, b"true", 4)
            return text_put(t, b"false", 5)
        if op == OP_RECORD:
            fields = self.code[at + 1]
            defaults = self.code[at + 2]
            text_char(t, b'{')
            at += 3
            for i in range(fields):
                key = self.code[at]
                child = self.code[at + 1]
                at += 2
                if key < 0:
                    self.node(c, child)
                    continue
                if not first:
                    text_char(t, b',')
                first = False
                self.text_key(t, key)
                self.text(c, child, t)
            for i in range(defaults):
                name = self.constant(self.code[at])
                value = self.constant(self.code[at + 1])
                at += 3
                if not first:
                    text_char(t, b',')
                first = False
                text_str(t, name)
                text_char(t, b':')
                self.text_default(t, value)
            return text_char(t, b'}')
        if op == OP_ARRAY:
            child = self.code[at + 1]
            text_char(t, b'[')
            n = read_count(c)
            while n:
                for i in range(n):
                    if not first:
                        text_char(t, b',')
                    first = False
                    self.text(c, child, t)
                n = read_count(c)
            return text_char(t, b']')
        if op == OP_ENUM:
            read_long(c, &v)
            symbols = self.constant(self.code[at + 1])
            if v < 0 or v >= PyTuple_GET_SIZE(symbols):
                raise _Fallback
            return text_str(t, symbols[v])
        # A map (duplicate keys: the dict keeps one, the text would have both), floats and doubles
        # (orjson's own shortest form), bytes (orjson refuses them), timestamps, logical types.
        raise _Fallback
