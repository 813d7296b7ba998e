"""How busy the machine was while a benchmark timed something (shared by the benchmarks)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator


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


SPIN = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def competing(enabled: bool = True, limit_s: float = 600.0) -> Iterator[None]:
    """With ``enabled``, one competing CPU-bound process runs beside the body (``--busy``): a busy loop
    that ends by itself after ``limit_s`` seconds and is killed when the body ends."""
    if not enabled:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", SPIN.format(limit=limit_s)])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()
