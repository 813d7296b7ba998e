"""Writing files safely: a file is either written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ".<name>.<pid>.<random>.tmp": the process that writes it is in its name, so a later run can tell
# a temporary file whose writer died (interrupted, killed) from one still being written.
_TMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or not a pid: leave it
        return True
    return True


def remove_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` when its writer died.

    Only files named as :func:`atomic_write` names them (``.<name>.<pid>.<random>.tmp``) whose
    process no longer runs are removed; another live writer's files are left alone.

    Returns:
        The files removed.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            match = _TMP.match(entry.name)
            if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))) and entry.is_file():
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def check_writable(folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` if needed and write (then remove) a temporary file in it: an unusable output
    folder is found before any work, not after it.

    Raises:
        OSError: the folder cannot be created or written (the error names the path).
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".secateurs.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    Path(tmp).unlink()
    remove_stale(path)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it succeeds.

    The temporary file lies beside ``path`` (same file system, so the move is atomic) and is
    removed when ``write`` raises: a reader sees the old file or the new one, never half of one.
    Temporary files that an interrupted earlier write left there are removed first (:func:`remove_stale`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
