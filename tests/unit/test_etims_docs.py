"""docs/etims.md's troubleshooting table says, for every result code the connector knows, the class
the code gives it: operators act on that table, so it must not drift from ``connectors/etims/errors.py``."""

from __future__ import annotations

import re

from connectors.etims.errors import CODES
from engine.config import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "etims.md"
ROW = re.compile(r"^\| `(\d{3})` \| [^|]+ \| ([a-z -]+) \|", re.MULTILINE)
CLASS_NAMES = {"retryable": "retryable", "permanent": "permanent", "needs_attention": "needs attention"}


def documented() -> dict[str, str]:
    text = DOC.read_text()
    section = text[text.index("## 5. Troubleshooting by result code") : text.index("## 6.")]
    return {code: cls.strip() for code, cls in ROW.findall(section)}


def test_the_troubleshooting_table_has_a_row_for_every_result_code_and_no_other() -> None:
    assert sorted(documented()) == sorted(CODES)


def test_each_documented_class_is_the_one_the_connector_gives_the_code() -> None:
    rows = documented()
    for code, entry in CODES.items():
        expected = "-" if entry.error_class is None else CLASS_NAMES[entry.error_class.value]
        assert rows[code] == expected, f"{code}: the docs say {rows[code]!r}, classify says {expected!r}"
