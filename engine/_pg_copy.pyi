from collections.abc import Sequence
from typing import Any

def encode(
    rows: Sequence[dict[str, Any]], kinds: bytes, header: bool = True, trailer: bool = True
) -> bytearray | None: ...
