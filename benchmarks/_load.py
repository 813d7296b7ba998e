"""How busy the machine was while a benchmark timed something (shared by the benchmarks)."""

from __future__ import annotations

import os


def busy_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes spent busy, CPU seconds this process spent), from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    own = os.times()
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own.user + own.system
