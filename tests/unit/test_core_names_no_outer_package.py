"""The core hands no outer package's name to importlib or importlib.resources: the outer packages hand
their tables and dependants over instead (ops/schema.py, connectors/registry.py). import-linter sees
imports only, so this test checks the string literals the import contracts cannot."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import engine

CORE = Path(engine.__file__).parent
# The composition roots wire everything together and may name anything.
ROOTS = {CORE / "cli.py", CORE / "api"}
OUTER = re.compile(r"""^[rbuf]*['"]{1,3}(projections|streams|ops|connectors)(\.[\w.]+)?['"]{1,3}$""")


def core_modules() -> list[Path]:
    return [
        p for p in sorted(CORE.rglob("*.py")) if p not in ROOTS and not any(r in p.parents for r in ROOTS)
    ]


def outer_package_literals(path: Path) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [
        f"{path.name}:{t.start[0]}: {t.string}"
        for t in tokens
        if t.type == tokenize.STRING and OUTER.match(t.string)
    ]


def test_the_check_spots_a_package_named_as_a_string(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'MIGRATIONS = [("projections", "x.sql"), ("engine", "y.sql")]\nDEPS = ["streams.app"]\n'
    )
    assert len(outer_package_literals(sample)) == 2


def test_no_core_module_names_an_outer_package_as_a_string() -> None:
    assert len(core_modules()) > 20
    found = [hit for path in core_modules() for hit in outer_package_literals(path)]
    assert found == []
