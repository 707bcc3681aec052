# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The native Avro writer: a small interpreter over a flat program of op codes (schemas/native_writer.py
documents the layout and derives programs from a schema; engine/relay_direct.py from the direct
path's plans).

One extension serves every schema and plan, as the native reader does: a program is a C array of
Py_ssize_t words; a node is an op code followed by its arguments, children are referred to by their
offset in the array, constants (dict keys, helpers, Python functions for the rare complex
expressions) by their index in a tuple kept alive by the Program. Values a plan names (the stored
dict, the line being written, ...) live in *slots*, a list passed to the Python functions too.

The contract is that of the Python writer the Program is built beside (``slow``): the same bytes,
byte for byte. Anything outside the exact case (a value not of exactly the schema's type, a missing
key, an int out of range, a string UTF-8 cannot encode, any exception of a helper) raises, and the
whole call goes to ``slow``, which writes it or raises the real error.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    bint PyUnicode_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    bint PyDict_CheckExact(object o)
    bint PyList_CheckExact(object o)
    bint PyBytes_CheckExact(object o)
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    int PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)

import orjson

# The keys of a stored wrapped value ({"_type_": ..., "_data_": ...}) as the str objects orjson.loads
# makes of them (its key cache keeps one per short key): a dict lookup whose key is the dict's own
# object skips comparing the text. The bench invoice has 67 wrapped values, two lookups each. Equal
# text either way, so a key orjson no longer keeps only loses the shortcut.
cdef object _TYPE_KEY, _DATA_KEY
_TYPE_KEY, _DATA_KEY = orjson.loads(b'{"_type_": 0, "_data_": 0}')

# Op codes; the layouts (words after the op code) are documented in schemas/native_writer.py.
cdef enum:
    # writes of a value given by the caller, as a schema type
    W_NULL = 0
    W_BOOLEAN = 1
    W_INT = 2
    W_LONG = 3
    W_STRING = 4
    W_UNION = 5
    W_ARRAY = 6
    W_MAP = 7
    W_RECORD = 8
    # statements of a plan
    S_SEQ = 20
    S_BYTES = 21
    S_FIELD = 22
    S_SET = 23
    S_EXEC = 24
    S_SWITCH = 25
    S_ARRAY = 26
    # values of a plan
    V_SLOT = 40
    V_CONST = 41
    V_ITEM = 42
    V_GET = 43
    V_UNWRAP = 44
    V_MONEY = 45
    V_NUMBER = 46
    V_PRICE = 47
    V_APPLY = 48
    V_CALL = 49
    V_OR = 50
    V_EQ = 51

OPS = {
    "null": W_NULL, "boolean": W_BOOLEAN, "int": W_INT, "long": W_LONG, "string": W_STRING,
    "union": W_UNION, "array": W_ARRAY, "map": W_MAP, "record": W_RECORD,
    "seq": S_SEQ, "bytes": S_BYTES, "field": S_FIELD, "set": S_SET, "exec": S_EXEC,
    "switch": S_SWITCH, "each": S_ARRAY,
    "slot": V_SLOT, "const": V_CONST, "item": V_ITEM, "get": V_GET, "unwrap": V_UNWRAP,
    "money": V_MONEY, "number": V_NUMBER, "price": V_PRICE, "apply": V_APPLY, "call": V_CALL,
    "or": V_OR, "eq": V_EQ,
}


class _Fallback(Exception):
    """A value outside the native writer's exact case; the Python writer decides."""


cdef struct Buffer:
    char *data
    Py_ssize_t size
    Py_ssize_t capacity
    bint heap


# Messages up to this size are built on the C stack (the bench's 5-line invoice is about 1.6 KB).
DEF STACK = 8192


cdef int grow(Buffer *b, Py_ssize_t need) except -1:
    cdef Py_ssize_t capacity = b.capacity * 2
    cdef char *data
    while capacity < b.size + need:
        capacity *= 2
    if b.heap:
        data = <char *>PyMem_Realloc(b.data, capacity)
    else:
        data = <char *>PyMem_Malloc(capacity)
        if data != NULL:
            memcpy(data, b.data, b.size)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.capacity = capacity
    b.heap = True
    return 0


cdef inline int put(Buffer *b, const char *p, Py_ssize_t n) except -1:
    if b.size + n > b.capacity:
        grow(b, n)
    memcpy(b.data + b.size, p, n)
    b.size += n
    return 0


cdef inline int put_byte(Buffer *b, unsigned char c) except -1:
    if b.size + 1 > b.capacity:
        grow(b, 1)
    b.data[b.size] = <char>c
    b.size += 1
    return 0


cdef inline int put_long(Buffer *b, int64_t v) except -1:
    """Zig-zag varint (Avro spec, "Binary Encoding"), as codec._zigzag for a 64-bit value."""
    cdef uint64_t n = (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)
    if b.size + 10 > b.capacity:
        grow(b, 10)
    while n > 0x7F:
        b.data[b.size] = <char>((n & 0x7F) | 0x80)
        b.size += 1
        n >>= 7
    b.data[b.size] = <char>n
    b.size += 1
    return 0


cdef inline int put_string(Buffer *b, object v) except -1:
    """``v.encode()`` with its length, for an exact str only; strict UTF-8 (a lone surrogate raises,
    as encode() does). ASCII strings are written from the str's own storage."""
    cdef Py_ssize_t n
    cdef const char *p
    if not PyUnicode_CheckExact(v):
        raise _Fallback
    if PyUnicode_IS_ASCII(v):
        n = PyUnicode_GET_LENGTH(v)
        p = <const char *>PyUnicode_DATA(v)
    else:
        p = PyUnicode_AsUTF8AndSize(v, &n)
    put_long(b, n)
    put(b, p, n)
    return 0


cdef inline bint ascii_digits(object v, Py_ssize_t start, Py_ssize_t end):
    """Characters [start, end) of an ASCII str all in 0-9, and at least one: str.isdigit() there."""
    cdef const unsigned char *p = <const unsigned char *>PyUnicode_DATA(v)
    cdef Py_ssize_t i
    if end <= start:
        return False
    for i in range(start, end):
        if p[i] < 48 or p[i] > 57:
            return False
    return True


cdef inline Py_ssize_t find_char(object v, unsigned char c, Py_ssize_t start):
    cdef const unsigned char *p = <const unsigned char *>PyUnicode_DATA(v)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(v)
    cdef Py_ssize_t i
    for i in range(start, n):
        if p[i] == c:
            return i
    return -1


cdef class Program:
    cdef Py_ssize_t *code
    cdef Py_ssize_t size
    cdef Py_ssize_t root
    cdef Py_ssize_t slots
    cdef Py_ssize_t arguments
    cdef bint statement
    cdef tuple constants
    cdef bytes prefix
    cdef object slow
    cdef public object program  # the words and constants, for a reader debugging a mismatch

    def __cinit__(self, code, tuple constants, Py_ssize_t root, bint statement, Py_ssize_t arguments,
                  Py_ssize_t slots, bytes prefix, slow):
        cdef Py_ssize_t i
        self.size = len(code)
        self.code = <Py_ssize_t *>PyMem_Malloc(max(self.size, 1) * sizeof(Py_ssize_t))
        if self.code == NULL:
            raise MemoryError()
        for i in range(self.size):
            self.code[i] = code[i]
        self.root = root
        self.statement = statement
        self.arguments = arguments
        self.slots = max(slots, arguments)
        self.constants = constants
        self.prefix = prefix
        self.slow = slow
        self.program = (tuple(code), constants, root)

    def __dealloc__(self):
        PyMem_Free(self.code)

    def __call__(self, *args):
        cdef char stack[STACK]
        cdef Buffer b
        cdef list env
        cdef Py_ssize_t i
        cdef object item
        if len(args) != self.arguments:
            return self.slow(*args)
        b.data = stack
        b.size = 0
        b.capacity = STACK
        b.heap = False
        try:
            env = PyList_New(self.slots)
            for i in range(self.slots):
                item = args[i] if i < self.arguments else None
                Py_INCREF(item)
                PyList_SET_ITEM(env, i, item)
            put(&b, PyBytes_AS_STRING(self.prefix), PyBytes_GET_SIZE(self.prefix))
            if self.statement:
                self.run(&b, env, self.root)
            else:
                self.write(&b, env, self.root, args[0])
            return PyBytes_FromStringAndSize(b.data, b.size)
        except Exception:
            return self.slow(*args)
        finally:
            if b.heap:
                PyMem_Free(b.data)

    cdef inline object constant(self, Py_ssize_t i):
        return <object>PyTuple_GET_ITEM(self.constants, i)

    cdef int write(self, Buffer *b, list env, Py_ssize_t at, object v) except -1:
        """Write ``v`` as the schema type of node ``at`` (the compiled writer's checks, codec.py)."""
        cdef Py_ssize_t op = self.code[at]
        cdef Py_ssize_t i, n, child
        cdef int overflow
        cdef long long x
        cdef PyObject *key
        cdef PyObject *item
        cdef PyObject *found
        if op == W_STRING:
            return put_string(b, v)
        if op == W_UNION:
            # [op, index of null or -1, index of the other branch, its child]
            if v is None:
                if self.code[at + 1] < 0:
                    raise _Fallback
                return put_byte(b, <unsigned char>(self.code[at + 1] * 2))
            put_byte(b, <unsigned char>(self.code[at + 2] * 2))
            return self.write(b, env, self.code[at + 3], v)
        if op == W_LONG or op == W_INT:
            if not PyLong_CheckExact(v):
                raise _Fallback
            x = PyLong_AsLongLongAndOverflow(v, &overflow)
            if overflow:
                raise _Fallback
            if op == W_INT and not (-2147483648 <= x <= 2147483647):
                raise _Fallback
            return put_long(b, x)
        if op == W_NULL:
            if v is not None:
                raise _Fallback
            return 0
        if op == W_BOOLEAN:
            if v is True:
                return put_byte(b, 1)
            if v is False:
                return put_byte(b, 0)
            raise _Fallback
        if op == W_RECORD:
            # [op, fields, per field: constant key, child]; exactly the schema's fields.
            n = self.code[at + 1]
            if not PyDict_CheckExact(v) or PyDict_Size(v) != n:
                raise _Fallback
            for i in range(n):
                found = PyDict_GetItem(v, self.constant(self.code[at + 2 + 2 * i]))
                if found == NULL:
                    raise _Fallback
                self.write(b, env, self.code[at + 3 + 2 * i], <object>found)
            return 0
        if op == W_ARRAY:
            # [op, items child]: one block, then the empty block (as fastavro).
            if not PyList_CheckExact(v):
                raise _Fallback
            n = PyList_GET_SIZE(v)
            if n:
                put_long(b, n)
                child = self.code[at + 1]
                for i in range(n):
                    self.write(b, env, child, <object>PyList_GET_ITEM(v, i))
            return put_byte(b, 0)
        if op == W_MAP:
            # [op, values child]: one block of pairs in the dict's order, then the empty block.
            if not PyDict_CheckExact(v):
                raise _Fallback
            n = PyDict_Size(v)
            if n:
                put_long(b, n)
                child = self.code[at + 1]
                i = 0
                while PyDict_Next(v, &i, &key, &item):
                    put_string(b, <object>key)
                    self.write(b, env, child, <object>item)
            return put_byte(b, 0)
        raise _Fallback  # an op code this interpreter does not know: the builder and it disagree

    cdef int run(self, Buffer *b, list env, Py_ssize_t at) except -1:
        """Execute statement node ``at`` of a plan."""
        cdef Py_ssize_t op = self.code[at]
        cdef Py_ssize_t i, n, slot, child
        cdef object v, items
        if op == S_FIELD:
            # [op, value node, write node]
            return self.write(b, env, self.code[at + 2], self.eval(env, self.code[at + 1]))
        if op == S_SEQ:
            n = self.code[at + 1]
            for i in range(n):
                self.run(b, env, self.code[at + 2 + i])
            return 0
        if op == S_BYTES:
            v = self.constant(self.code[at + 1])
            return put(b, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
        if op == S_SET:
            # [op, slot, value node]
            env[self.code[at + 1]] = self.eval(env, self.code[at + 2])
            return 0
        if op == S_EXEC:
            self.constant(self.code[at + 1])(env)
            return 0
        if op == S_SWITCH:
            # [op, condition value node, then statement, otherwise statement]
            if self.eval(env, self.code[at + 1]):
                return self.run(b, env, self.code[at + 2])
            return self.run(b, env, self.code[at + 3])
        if op == S_ARRAY:
            # [op, items value node, slot of the item, item statement]
            items = self.eval(env, self.code[at + 1])
            if not PyList_CheckExact(items):
                raise _Fallback
            n = PyList_GET_SIZE(items)
            if n:
                put_long(b, n)
                slot = self.code[at + 2]
                child = self.code[at + 3]
                for i in range(n):
                    env[slot] = <object>PyList_GET_ITEM(items, i)
                    self.run(b, env, child)
            return put_byte(b, 0)
        raise _Fallback

    cdef object eval(self, list env, Py_ssize_t at):
        """The value of value node ``at`` (the plan's Python expression, computed in C)."""
        cdef Py_ssize_t op = self.code[at]
        cdef object v, data
        cdef PyObject *found
        cdef Py_ssize_t n, point
        if op == V_SLOT:
            return env[self.code[at + 1]]
        if op == V_ITEM or op == V_GET:
            # item: [op, container value node, constant key], d[key] (a missing key raises, so the
            # Python writer raises); get: the same and a default value node or -1, d.get(key[,
            # default]). On a dict only.
            v = self.eval(env, self.code[at + 1])
            if not PyDict_CheckExact(v):
                raise _Fallback
            found = PyDict_GetItem(v, self.constant(self.code[at + 2]))
            if found != NULL:
                return <object>found
            if op == V_ITEM:
                raise _Fallback
            if self.code[at + 3] >= 0:
                return self.eval(env, self.code[at + 3])
            return None
        if op == V_MONEY or op == V_NUMBER or op == V_PRICE:
            # [op, value node, constant helper]: the helper's early return done here, for an ASCII
            # string already in its wire form (stored bare or as {"_type_", "_data_"}); the helper
            # itself otherwise (engine/publishing.py: _money, _number, _price).
            v = self.eval(env, self.code[at + 1])
            data = v
            if PyDict_CheckExact(v):
                found = PyDict_GetItem(v, _TYPE_KEY)
                if found != NULL:
                    found = PyDict_GetItem(v, _DATA_KEY)
                    data = <object>found if found != NULL else None
            if PyUnicode_CheckExact(data) and PyUnicode_IS_ASCII(data):
                n = PyUnicode_GET_LENGTH(data)
                if op == V_MONEY:
                    # _money: 0 < value.find(".") == len(value) - 3 and "E" not in value: as it is;
                    # _is_canonical_decimal and no point or one decimal: padded to two.
                    point = find_char(data, 46, 0)
                    if 0 < point and point == n - 3 and find_char(data, 69, 0) < 0:
                        return data
                    if canonical_decimal(data, n, point):
                        if point < 0:
                            return data + ".00"
                        if point == n - 2:
                            return data + "0"
                elif op == V_NUMBER:
                    # _number: _is_plain_decimal, then trailing zeros and the point stripped when
                    # there is a point.
                    point = plain_decimal(data, n)
                    if point == -1:
                        return data
                    if point >= 0:
                        while n > 0 and (<const unsigned char *>PyUnicode_DATA(data))[n - 1] == 48:
                            n -= 1
                        while n > 0 and (<const unsigned char *>PyUnicode_DATA(data))[n - 1] == 46:
                            n -= 1
                        return data[:n]
                elif price_as_is(data, n):
                    return data
            return self.constant(self.code[at + 2])(v)
        if op == V_UNWRAP:
            # [op, value node, constant _unwrap_top]: relay_direct's _u, publishing._unwrap_top's
            # common cases here (no "_type_": the dict; a str kind but "uuid_hex": its "_data_"),
            # the helper itself otherwise.
            v = self.eval(env, self.code[at + 1])
            if not PyDict_CheckExact(v):
                return v
            found = PyDict_GetItem(v, _TYPE_KEY)
            if found == NULL or <object>found is None:
                return v
            if PyUnicode_CheckExact(<object>found) and <object>found != "uuid_hex":
                found = PyDict_GetItem(v, _DATA_KEY)
                if found == NULL:
                    raise _Fallback
                return <object>found
            return self.constant(self.code[at + 2])(v)
        if op == V_OR:
            # [op, left, right]: ``left or right``
            v = self.eval(env, self.code[at + 1])
            if v:
                return v
            return self.eval(env, self.code[at + 2])
        if op == V_EQ:
            # [op, left, right]: ``left == right``
            return self.eval(env, self.code[at + 1]) == self.eval(env, self.code[at + 2])
        if op == V_APPLY:
            # [op, value node, constant callable]: a helper of one argument
            return self.constant(self.code[at + 2])(self.eval(env, self.code[at + 1]))
        if op == V_CONST:
            return self.constant(self.code[at + 1])
        if op == V_CALL:
            # [op, constant function of the slots]: an expression left to Python
            return self.constant(self.code[at + 1])(env)
        raise _Fallback


cdef inline Py_ssize_t plain_decimal(object v, Py_ssize_t n):
    """publishing._is_plain_decimal for an ASCII str (leading minus signs stripped, digits, at
    most one point, digits): -2 when it is not, -1 when it is without a point, else the point."""
    cdef const unsigned char *p = <const unsigned char *>PyUnicode_DATA(v)
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t point
    while start < n and p[start] == 45:
        start += 1
    point = find_char(v, 46, start)
    if point < 0:
        return -1 if ascii_digits(v, start, n) else -2
    if not ascii_digits(v, start, point):
        return -2
    if point + 1 < n and not ascii_digits(v, point + 1, n):
        return -2
    return point


cdef inline bint canonical_decimal(object v, Py_ssize_t n, Py_ssize_t point):
    """publishing._is_canonical_decimal for an ASCII str whose first point is at ``point`` (-1:
    none): one optional leading minus, digits, no leading zero unless the whole part is "0", at
    most one point, digits after it."""
    cdef const unsigned char *p = <const unsigned char *>PyUnicode_DATA(v)
    cdef Py_ssize_t start = 1 if n > 0 and p[0] == 45 else 0
    cdef Py_ssize_t end = point if point >= 0 else n
    if not ascii_digits(v, start, end):
        return False
    if end - start > 1 and p[start] == 48:
        return False
    return point < 0 or point + 1 == n or ascii_digits(v, point + 1, n)


cdef inline bint price_as_is(object v, Py_ssize_t n):
    """_price's early return, for an ASCII str: _is_plain_decimal (plain_decimal), exactly two
    decimals, no leading zero unless the whole part is "0"."""
    cdef const unsigned char *p = <const unsigned char *>PyUnicode_DATA(v)
    cdef Py_ssize_t point = plain_decimal(v, n)
    cdef Py_ssize_t start = 0
    if point < 0 or n - point - 1 != 2:
        return False
    while p[start] == 45:  # the leading minus signs plain_decimal skipped
        start += 1
    return point - start == 1 or p[start] != 48
