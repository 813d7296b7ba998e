"""Atomic writes; stale temporary files of dead writers are removed, live writers' are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from secateurs.files import atomic_write, check_writable, remove_stale, write_text


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_files_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f".model.safetensors.{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".model.safetensors.{os.getppid()}.xyz789.tmp"  # a live process's
    other = tmp_path / ".notes.tmp"  # not ours: no pid in its name
    for p in (dead, live, other):
        p.write_text("half")
    write_text(tmp_path / "metrics.json", "{}")
    assert not dead.exists() and live.exists() and other.exists()
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_remove_stale_reports_what_it_removed(tmp_path: Path) -> None:
    dead = tmp_path / f".x.{_dead_pid()}.q.tmp"
    dead.write_text("")
    assert remove_stale(tmp_path) == [dead]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def boom(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "f.txt", boom)
    assert list(tmp_path.iterdir()) == []


def test_check_writable_raises_for_an_unusable_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        check_writable(tmp_path / "file" / "out")
    check_writable(tmp_path / "new" / "out")
    assert (tmp_path / "new" / "out").is_dir() and not list((tmp_path / "new" / "out").iterdir())
