"""Progress on long work: a tqdm bar on a terminal, plain lines in a log, nothing when quiet.

Library calls behave like tqdm's ``disable=None``: a bar on a terminal and
silence otherwise, so a script or a test that prunes prints nothing it did not
ask for. The command line switches to :func:`reporting` mode ``"lines"``, where
output that is not a terminal (a CI log, ``2>run.log``) gets a few plain lines
per task instead of carriage-return bar noise::

    train: 6/23 steps (26%)
    train: 12/23 steps (52%)

``--quiet`` sets mode ``"off"``: nothing at all. The mode lives in a
:class:`contextvars.ContextVar`, so it is scoped to the ``with`` block (and to
its thread) rather than being global state that leaks between runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TextIO, TypeVar

from tqdm.auto import tqdm

Mode = Literal["auto", "lines", "off"]
T = TypeVar("T")

_MODE: contextvars.ContextVar[Mode] = contextvars.ContextVar("secateurs_progress", default="auto")
LINE_EVERY_S = 30.0
"""In lines mode, a task that has not crossed a quarter for this long prints a line anyway."""


@contextlib.contextmanager
def reporting(mode: Mode) -> Iterator[None]:
    """Inside the block, progress is shown per ``mode``.

    Args:
        mode: ``"auto"`` (a bar on a terminal, silent otherwise; the library default),
            ``"lines"`` (a bar on a terminal, plain lines otherwise; the command line)
            or ``"off"`` (nothing; ``--quiet``).
    """
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def mode() -> Mode:
    """The mode in force here."""
    return _MODE.get()


class Progress:
    """One task's progress: ``update()`` after each unit of work, ``close()`` at the end.

    Args:
        total: units of work, or ``None`` when unknown.
        desc: what is being done (``"train"``, ``"score"``), the start of every line.
        unit: the unit's name in plain lines and on the bar (``"step"``, ``"batch"``).
        enabled: ``False`` silences this task whatever the mode (e.g. ``progress=False``).
        stream: where to write (default ``sys.stderr``, looked up when the task starts).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "step", enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.stream = sys.stderr if stream is None else stream
        self._bar: Any = None
        self._lines = False
        self._last_quarter, self._last_line = 0, time.monotonic()
        current = _MODE.get() if enabled else "off"
        if current == "off":
            return
        if _is_terminal(self.stream):
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)
        elif current == "lines":
            self._lines = True

    def update(self, n: int = 1) -> None:
        """Record ``n`` more units done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines:
            self._maybe_line()

    def set_postfix(self, **values: Any) -> None:
        """Show ``key=value`` beside the bar (terminal only; lines stay short)."""
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def set_postfix_str(self, text: str) -> None:
        """Show ``text`` beside the bar (terminal only)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self) -> None:
        """End the task (the bar disappears; lines mode has said 100%, or says the count without a total)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._lines and not self.total and self.n:  # no total, so no 100% line yet: say how many
            self._line(time.monotonic())
        self._lines = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _maybe_line(self) -> None:
        now = time.monotonic()
        if self.total:
            # Every unit when there are few (rounds), else each quarter: a handful of lines per task.
            quarter = self.n if self.total <= 10 else 4 * self.n // self.total
            if quarter > self._last_quarter or self.n == self.total:
                self._last_quarter = quarter
                return self._line(now)
        if now - self._last_line >= LINE_EVERY_S:
            self._line(now)

    def _line(self, now: float) -> None:
        self._last_line = now
        units = self.unit + ("es" if self.unit.endswith(("s", "sh", "ch", "x")) else "s")
        if self.total:
            text = f"{self.desc}: {self.n}/{self.total} {units} ({self.n / self.total:.0%})"
        else:
            text = f"{self.desc}: {self.n} {units}"
        print(text, file=self.stream, flush=True)


def track(items: Iterable[T], desc: str, unit: str = "step", total: int | None = None,
          enabled: bool = True) -> Iterator[T]:
    """``items``, one by one, with progress shown; the total is ``len(items)`` when it has one."""
    if total is None and hasattr(items, "__len__"):
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:  # a DataLoader over an IterableDataset has __len__ but no length
            total = None
    with Progress(total, desc, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False
