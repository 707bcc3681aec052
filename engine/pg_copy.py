"""PostgreSQL's binary COPY format for rows whose values are the strings, numbers and times the
projections hold (engine/_pg_copy.pyx does the work; see there why).

``kinds_of`` maps a table's column types to the encoder's one-byte kinds, or None when one of them
is a type it does not write (the caller then COPYs in text format); ``encode`` returns the COPY
stream, or None when a value is one the text format should carry (not a plain decimal, a uuid in
another spelling, a NUL in a string...), so that such input meets the errors it always did.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_encode: Callable[[Sequence[dict[str, Any]], bytes, bool, bool], bytearray | None] | None
try:
    from engine._pg_copy import encode as _encode
except ImportError:  # not built (`make install` builds it): every batch goes in text format
    _encode = None

# format_type()'s names, without a type modifier ("numeric(18,2)" -> "numeric"); the server applies
# the modifier in binary input as in text input (numeric_recv, varchar_recv, timestamptz_recv).
_KINDS = {
    "text": b"t",
    "character varying": b"t",
    "json": b"t",  # json's binary form is its text (json_recv validates it as json_in does)
    "jsonb": b"j",
    "uuid": b"u",
    "date": b"d",
    "numeric": b"n",
    "timestamp with time zone": b"T",
    "boolean": b"b",
    "smallint": b"h",
    "integer": b"i",
    "bigint": b"l",
    "bytea": b"B",
}
_MODIFIER = re.compile(r"\(\d+(?:,\d+)?\)")


def kinds_of(types: Iterable[str]) -> bytes | None:
    """The encoder's kinds of columns of these types (format_type's names), or None if one is not
    written in binary."""
    kinds = []
    for pg_type in types:
        kind = _KINDS.get(_MODIFIER.sub("", pg_type))
        if kind is None:
            return None
        kinds.append(kind)
    return b"".join(kinds)


def available() -> bool:
    return _encode is not None


def encode(
    rows: Sequence[dict[str, Any]], kinds: bytes, *, header: bool = True, trailer: bool = True
) -> bytearray | None:
    """``rows`` (dicts whose values, in order, are the columns of ``kinds``) in binary COPY format,
    or None: COPY these in text format. A stream sent in parts has the ``header`` in its first part
    and the ``trailer`` in its last."""
    if _encode is None:
        return None
    return _encode(rows, kinds, header, trailer)
