"""The result rows, the rich table and ``bench/results/latest.json``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
APPROX = 0.10  # how far a "≈" row may be from its target


@dataclass
class Row:
    stage: str
    metric: str
    value: float
    unit: str
    target: float | None = None
    op: str = ">="  # how value must compare with target: ">=", "<", "<=" or "≈" (within 10 %)
    raw: float | None = None  # the raw aiokafka baseline this stage compares to
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.raw if self.raw else None

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        if self.op == "≈":
            return abs(self.value - self.target) <= APPROX * abs(self.target)
        if self.op == "<=":
            return self.value <= self.target
        return self.value >= self.target if self.op == ">=" else self.value < self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "—"
        symbol = {">=": "≥", "<=": "≤"}.get(self.op, self.op)
        return f"{symbol} {_num(self.target, self.unit)}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed}


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit not in ("MB", "ms") and abs(value) < 10 and value != int(value):
        text = f"{value:.2f}"  # ratios such as achieved rate / limit
    else:
        text = f"{value:,.1f}" if unit in ("MB", "ms") or abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("stage")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("target", justify="right")
    t.add_column("raw aiokafka", justify="right")
    t.add_column("ratio", justify="right")
    t.add_column("result")
    t.add_column("note", overflow="fold", max_width=48)
    for r in rows:
        target = r.target_text
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[dim]info[/]"}[r.passed]
        t.add_row(
            r.stage,
            r.metric,
            _num(r.value, r.unit),
            target,
            _num(r.raw, "msg/s") if r.raw else "—",
            f"{r.ratio:.2f}" if r.ratio is not None else "—",
            verdict,
            r.note,
        )
    return t


def markdown(rows: list[Row]) -> str:
    """The same table as Markdown, for docs/performance.md."""
    lines = [
        "| stage | metric | value | target | raw aiokafka | ratio | result | note |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        target = r.target_text
        verdict = {True: "pass", False: "**FAIL**", None: "info"}[r.passed]
        raw = _num(r.raw, "msg/s") if r.raw else "—"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "—"
        lines.append(
            f"| {r.stage} | {r.metric} | {_num(r.value, r.unit)} | {target} | {raw} | {ratio} | {verdict}"
            f" | {r.note} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "nproc": run("nproc") or str(os.cpu_count()),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor(),
        "memory_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "free_h": run("free", "-h"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_json(rows: list[Row], extra: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS_DIR / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        **extra,
        "rows": [r.as_dict() for r in rows],
        "markdown": markdown(rows),
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def print_table(console: Console, rows: list[Row], title: str) -> None:
    console.print(table(rows, title))
