# Types of the Cython extension schemas/_native_writer.pyx, for mypy.
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
        statement: bool,
        arguments: int,
        slots: int,
        prefix: bytes,
        slow: Callable[..., bytes],
    ) -> None: ...
    def __call__(self, *args: Any) -> bytes: ...
