"""What a person reads: the run's report (Markdown and HTML, from metrics.json), plots, sensitivity scans."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .html import write_html
from .markdown import write_markdown
from .sensitivity import SensitivityResult, sensitivity

__all__ = ["SensitivityResult", "sensitivity", "write_reports"]


def write_reports(out: str | os.PathLike[str], metrics: Mapping[str, Any]) -> None:
    """Write ``report.md`` and ``report.html`` (plots embedded) into ``out`` from ``metrics``."""
    out = Path(out)
    write_markdown(out / "report.md", metrics)
    write_html(out / "report.html", metrics, out)
