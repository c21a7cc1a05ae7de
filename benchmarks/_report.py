"""Shared helper for benchmark scripts: write one section of benchmarks/RESULTS.md.

Each script owns a section delimited by ``<!-- BEGIN name -->`` / ``<!-- END name -->`` and replaces only
that section, so several benchmarks can share one results file. The header records the command, the machine,
the date and the load average when the figures were taken.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_description(device: str = "cpu") -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.startswith("cuda") and torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name()}"
    return desc


def header(title: str, device: str = "cpu") -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cmd = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    return (
        f"## {title}\n\n"
        f"- command: `{cmd}`\n"
        f"- machine: {machine_description(device)}\n"
        f"- device: {device}\n"
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, 1-min load average at start {load:.2f}\n"
    )


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(out) + "\n"


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``text``, atomically."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else "# Benchmark results\n\nEach section is written by its script.\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _m: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
