"""What every benchmark writes beside its table: the command, the date and the machine."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path


def machine_line() -> str:
    try:
        import torch

        torch_v = torch.__version__
    except Exception:  # torch is optional for some benchmarks
        torch_v = "n/a"
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except OSError:
        pass
    return (f"{platform.machine()}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch_v}")


def write_result(path: str | Path, table: str, command: str) -> Path:
    """Append a section to a result file: the table, then how it was made (earlier runs stay above it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    before = path.read_text().rstrip() + "\n\n" if path.is_file() else ""
    path.write_text(f"{before}{table.rstrip()}\n\n---\nCommand: `{command}`  \nDate: {stamp}  \n"
                    f"Machine: {machine_line()}\n")
    return path
