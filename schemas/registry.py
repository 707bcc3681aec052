"""Schema look-up over the ``.avsc`` files shipped in this package.

Files live at ``schemas/avro/<aggregate>/<event>.v<N>.avsc`` and describe the CloudEvents type
``ledgerflow.<aggregate>.<event>``. Every version stays in the package forever: consumers may meet old
messages during a replay, and ``GET /v1/schemas/<fingerprint>`` must keep answering for them.
The current (producer) schema of a type is its highest version.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from schemas import codec
from schemas.compiled_reader import CompiledReader, compile_reader
from schemas.native_reader import available as native_available
from schemas.native_reader import compile_native
from schemas.native_writer import available as native_writer_available
from schemas.native_writer import compile_native_writer

__all__ = [
    "AVRO_DIR",
    "SAMPLES_DIR",
    "SchemaVersion",
    "UnknownEventType",
    "all_types",
    "by_fingerprint",
    "current",
    "decode_event",
    "encode_event",
    "prepare_readers",
    "versions",
]

AVRO_DIR = Path(__file__).parent / "avro"
SAMPLES_DIR = Path(__file__).parent / "samples"
CE_TYPE_PREFIX = "ledgerflow."
_FILE_RE = re.compile(r"^(?P<event>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")


class UnknownEventType(KeyError):
    """No schema is shipped for this CloudEvents type."""


@dataclass(frozen=True)
class SchemaVersion:
    ce_type: str
    version: int
    schema: dict[str, Any]  # raw JSON as in the file; what the HTTP endpoint serves
    parsed: Any  # fastavro-parsed form, for encoding/decoding
    fingerprint: bytes  # 8 bytes, message (little-endian) order
    fingerprint_hex: str
    path: Path
    # The precompiled writer: a record -> its single-object message (schemas/native_writer.py when
    # the extension is built, else codec.compile_writer; the same bytes and errors).
    write: Callable[[Mapping[str, Any]], bytes] = field(repr=False, compare=False)

    @property
    def dataschema(self) -> str:
        """Value of the ``ce_dataschema`` header for messages written with this version."""
        return f"/v1/schemas/{self.fingerprint_hex}"

    @property
    def sample_path(self) -> Path:
        """Where the example record of this version lives (``schemas/samples/...json``)."""
        return SAMPLES_DIR / self.path.parent.name / self.path.with_suffix(".json").name


@dataclass(frozen=True)
class _Catalogue:
    by_type: dict[str, list[SchemaVersion]]  # versions ascending
    by_fp: dict[bytes, SchemaVersion]


def _load_file(path: Path, aggregate: str, event: str, version: int) -> SchemaVersion:
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise ValueError(f"{path}: top-level schema must be a record")
    # The namespace mirrors the aggregate so generated classes (Java packages, etc.) land predictably.
    if raw.get("namespace") != f"ledgerflow.{aggregate}":
        raise ValueError(f"{path}: namespace must be ledgerflow.{aggregate}")
    fp = codec.fingerprint(raw)
    return SchemaVersion(
        ce_type=f"{CE_TYPE_PREFIX}{aggregate}.{event}",
        version=version,
        schema=raw,
        parsed=codec.parse(raw),
        fingerprint=fp,
        fingerprint_hex=fp.hex(),
        path=path,
        write=compile_native_writer(raw, fp) if native_writer_available() else codec.compile_writer(raw, fp),
    )


@functools.cache
def _catalogue() -> _Catalogue:
    # Loaded once per process: parsing and fingerprinting are far too slow for the per-message path.
    by_type: dict[str, list[SchemaVersion]] = {}
    for path in sorted(AVRO_DIR.glob("*/*.avsc")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise ValueError(f"{path}: expected <event>.v<N>.avsc")
        sv = _load_file(path, path.parent.name, match["event"], int(match["version"]))
        by_type.setdefault(sv.ce_type, []).append(sv)

    by_fp: dict[bytes, SchemaVersion] = {}
    for ce_type, svs in by_type.items():
        svs.sort(key=lambda s: s.version)
        numbers = [s.version for s in svs]
        # A gap would mean a version was deleted, and old messages written with it could no longer be read.
        if numbers != list(range(1, len(svs) + 1)):
            raise ValueError(f"{ce_type}: versions must be 1..N without gaps, found {numbers}")
        for sv in svs:
            clash = by_fp.get(sv.fingerprint)
            if clash is not None:
                # Two files with the same canonical form would make the fingerprint ambiguous.
                raise ValueError(f"{sv.path} and {clash.path} share fingerprint {sv.fingerprint_hex}")
            by_fp[sv.fingerprint] = sv
    return _Catalogue(by_type=by_type, by_fp=by_fp)


def all_types() -> list[str]:
    """Every CloudEvents type with a schema, sorted."""
    return sorted(_catalogue().by_type)


def versions(ce_type: str) -> list[SchemaVersion]:
    """All versions of a type, oldest first."""
    try:
        return list(_catalogue().by_type[ce_type])
    except KeyError:
        raise UnknownEventType(ce_type) from None


def current(ce_type: str) -> SchemaVersion:
    """The version producers write: the highest one."""
    return versions(ce_type)[-1]


def by_fingerprint(fp: bytes | str) -> SchemaVersion | None:
    """Any version by fingerprint, given as the 8 message-order bytes or their 16 hex digits."""
    if isinstance(fp, str):
        try:
            fp = bytes.fromhex(fp)
        except ValueError:
            return None
    return _catalogue().by_fp.get(fp)


def encode_event(ce_type: str, record: Mapping[str, Any]) -> tuple[bytes, SchemaVersion]:
    """Encode with the current schema of ``ce_type``; the version is returned for ``ce_dataschema``."""
    sv = current(ce_type)
    return sv.write(record), sv


def _writer_parsed(fp: bytes) -> Any:
    sv = _catalogue().by_fp.get(fp)
    return None if sv is None else sv.parsed


def decode_event(data: bytes, ce_type: str | None = None) -> dict[str, Any]:
    """Decode a message with the current schema of its type (resolving from the writer's version).

    With ``ce_type`` (e.g. from the ``ce_type`` header) a message whose schema belongs to a different
    type is rejected, so a mislabelled message cannot be processed as the wrong event.
    """
    if type(data) is bytes and len(data) >= codec.HEADER_SIZE and data.startswith(codec.MAGIC):
        fp = data[len(codec.MAGIC) : codec.HEADER_SIZE]  # what codec.split returns, without its views
    else:
        fp, _ = codec.split(data)  # raises the CodecError of a short or foreign message
    found = _decoder(fp)
    if found is None:
        raise codec.CodecError(f"unknown schema fingerprint {fp.hex()}")
    writer_type, read = found
    if ce_type is not None and writer_type != ce_type:
        raise codec.CodecError(f"schema {fp.hex()} belongs to {writer_type}, not {ce_type}")
    return read(data)


def split_event(data: bytes, ce_type: str, omit: frozenset[str]) -> tuple[dict[str, Any], str] | None:
    """A message of ``ce_type`` as its record without arrays and the JSON text of the full record
    (``orjson.dumps`` of what ``decode_event`` returns, less the top-level fields in ``omit``), read
    in one pass by the native reader (``Program.split``). None for anything else: no native reader,
    a message of another type or version the native reader does not cover, a body ``decode_event``
    would hand fastavro, or a value the text cannot hold as orjson writes it. The caller then
    decodes the message as usual, and gets that path's record or error."""
    if type(data) is not bytes or len(data) < codec.HEADER_SIZE or not data.startswith(codec.MAGIC):
        return None
    found = _decoder(data[len(codec.MAGIC) : codec.HEADER_SIZE])
    if found is None or found[0] != ce_type:
        return None
    split = getattr(found[1], "split", None)
    return None if split is None else cast(tuple[dict[str, Any], str] | None, split(data, omit))


def prepare_readers(ce_types: Iterable[str] | None = None) -> None:
    """Load the catalogue and build the readers of every version of ``ce_types`` (None: of every
    type) now, at a process's start, rather than on the first message of each (the catalogue and
    a reader cost a consumer ~0.1 s of CPU when its first batch arrives)."""
    catalogue = _catalogue()
    for ce_type in catalogue.by_type if ce_types is None else ce_types:
        for sv in catalogue.by_type.get(ce_type, ()):
            _decoder(sv.fingerprint)


@functools.cache
def _decoder(fp: bytes) -> tuple[str, Callable[[bytes], dict[str, Any]]] | None:
    """The type of a writer version and the function decoding its messages to the current version:
    the native or compiled reader when there is one (the same record or CodecError as codec.decode,
    which they fall back to; docs/performance.md "Compiled reader", "native-reader"), else codec.decode."""
    writer = _catalogue().by_fp.get(fp)
    if writer is None:
        return None
    reader = current(writer.ce_type)
    compiled = _compiled_reader(writer.fingerprint, reader.fingerprint)
    if compiled is not None:
        return writer.ce_type, compiled
    reader_parsed = None if reader is writer else reader.parsed
    return writer.ce_type, functools.partial(
        codec.decode, writer_schema_lookup=_writer_parsed, reader_schema=reader_parsed
    )


@functools.cache
def _compiled_reader(writer_fp: bytes, reader_fp: bytes) -> CompiledReader | None:
    """The reader of a (writer, reader) version pair, built once (a few ms): the native one
    (schemas/native_reader.py) when the extension is built, else the compiled Python one."""
    writer, reader = _catalogue().by_fp[writer_fp], _catalogue().by_fp[reader_fp]
    resolved = None if reader is writer else reader.schema
    if native_available():
        native = compile_native(writer.schema, resolved)
        if native is not None:
            return native
    return compile_reader(writer.schema, resolved)
