# Types of the Cython extension schemas/_native_reader.pyx, for mypy.
from collections.abc import Callable
from typing import Any

OPS: dict[str, int]

class Program:
    program: tuple[tuple[int, ...], tuple[Any, ...], int]
    def __init__(
        self,
        code: list[int],
        constants: tuple[Any, ...],
        root: int,
        slow: Callable[[bytes], dict[str, Any]],
        epoch: Any,
        deepcopy: Callable[[Any], Any],
        header: int,
        dumps: Callable[[Any], bytes] | None = None,
    ) -> None: ...
    def __call__(self, data: bytes) -> dict[str, Any]: ...
    def split(self, data: bytes, omit: frozenset[str]) -> tuple[dict[str, Any], str] | None: ...
