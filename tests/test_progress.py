"""Progress: a bar on a terminal, plain lines in a log, nothing when quiet."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import secateurs as sc
from secateurs import progress
from secateurs.progress import Progress, reporting, track

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^[\w ]+: \d+/\d+ \w+s \(\d+%\)$")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(total: int, mode: progress.Mode, stream: io.StringIO, enabled: bool = True) -> str:
    with reporting(mode):
        bar = Progress(total, "train", enabled=enabled, stream=stream)
        for _ in range(total):
            bar.update()
        bar.close()
    return stream.getvalue()


def test_lines_mode_off_a_terminal_prints_each_quarter() -> None:
    text = _run(200, "lines", io.StringIO())
    assert text.splitlines() == ["train: 50/200 steps (25%)", "train: 100/200 steps (50%)",
                                 "train: 150/200 steps (75%)", "train: 200/200 steps (100%)"]


def test_few_units_get_a_line_each() -> None:
    text = _run(3, "lines", io.StringIO())
    assert text.splitlines() == ["train: 1/3 steps (33%)", "train: 2/3 steps (67%)", "train: 3/3 steps (100%)"]


def test_off_auto_and_disabled_print_nothing_off_a_terminal() -> None:
    assert _run(40, "off", io.StringIO()) == ""
    assert _run(40, "auto", io.StringIO()) == ""  # the library default: silent in logs and tests
    assert _run(40, "lines", io.StringIO(), enabled=False) == ""
    assert _run(40, "off", _Terminal()) == ""  # --quiet silences the terminal bar too


def test_a_terminal_gets_a_tqdm_bar_in_both_modes() -> None:
    for mode in ("auto", "lines"):
        text = _run(40, mode, _Terminal())
        assert text.startswith("\rtrain:") and "/40" in text, mode  # tqdm redraws in place


def test_mode_is_scoped_to_the_block() -> None:
    assert progress.mode() == "auto"
    with reporting("off"):
        with reporting("lines"):
            assert progress.mode() == "lines"
        assert progress.mode() == "off"
    assert progress.mode() == "auto"


def test_track_yields_everything_and_closes_when_left_early() -> None:
    stream = io.StringIO()
    with reporting("lines"), contextlib.redirect_stderr(stream):
        assert list(track(range(5), "round", unit="round")) == [0, 1, 2, 3, 4]
        for _ in track([1, 2, 3], "early"):
            break
    assert stream.getvalue().splitlines()[-1] == "round: 5/5 rounds (100%)"
    assert "early" not in stream.getvalue()  # nothing finished before the break


def test_scoring_with_data_reports_batches() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(8)]
    stream = io.StringIO()
    with reporting("lines"), contextlib.redirect_stderr(stream):
        sc.prune(net, sparsity=0.5, criterion="taylor", data=data, loss_fn=F.cross_entropy)
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "score: 8/8 batches (100%)", lines


def test_a_loader_without_a_length_is_counted_without_a_total() -> None:
    class Stream(torch.utils.data.IterableDataset):  # streaming data: DataLoader has __len__, len() raises
        def __iter__(self):
            g = torch.Generator().manual_seed(0)
            return iter([(torch.randn(4, generator=g), int(i % 3)) for i in range(24)])

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    stream = io.StringIO()
    with reporting("lines"), contextlib.redirect_stderr(stream):
        sc.prune(net, sparsity=0.5, criterion="taylor", data=torch.utils.data.DataLoader(Stream(), batch_size=4),
                 loss_fn=F.cross_entropy)
    assert sc.sparsity(net) == 0.5
    assert stream.getvalue().splitlines()[-1] == "score: 6 batches"


def test_a_quiet_run_silences_every_bar_not_just_training(tmp_path: Path) -> None:
    from secateurs.runs import recipes, runner

    recipe = recipes.parse("model: mlp\nmodel_args: {widths: [16]}\ndata: digits\ntrain: {epochs: 0}\n"
                           "prune:\n  - {sparsity: 0.5, criterion: taylor, calibration_batches: 2}\n"
                           "  - {schedule: iterative, rounds: 2, rate: 0.2, epochs: 1}\nreport: false\n", "test")
    stream = io.StringIO()
    with reporting("lines"), contextlib.redirect_stderr(stream):
        runner.run(recipe, tmp_path, quiet=True)
    assert stream.getvalue() == ""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "secateurs", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_off_a_terminal_prints_plain_lines_and_quiet_prints_nothing(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("model: mlp\nmodel_args: {widths: [16]}\ndata: digits\ntrain: {epochs: 2}\n"
                                     "prune:\n  - sparsity: 0.5\n    finetune: {epochs: 1}\n")
    loud = _cli("run", "r.yaml", "-o", "loud", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "\r" not in loud.stderr and "\x1b" not in loud.stderr  # no bar redrawing in a log
    lines = loud.stderr.splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines
    assert "train: 46/46 steps (100%)" in lines and "finetune 1: 23/23 steps (100%)" in lines
    assert len(lines) <= 12  # a handful per task, not one per step
    assert "done:" in loud.stdout
    quiet = _cli("run", "r.yaml", "-o", "quiet", "-q", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""
    assert (tmp_path / "quiet" / "report.html").is_file()


def test_iterative_rounds_and_compaction_of_big_models_report_progress() -> None:
    from secateurs.surgery.records import apply

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    stream = io.StringIO()
    with reporting("lines"), contextlib.redirect_stderr(stream):
        sc.Iterative(net, rounds=3, rate=0.2, rewind=None).run(lambda m, k: None)
    assert stream.getvalue().splitlines() == [f"iterative: {k}/3 rounds ({k / 3:.0%})" for k in (1, 2, 3)]
    big = nn.Sequential(*[nn.Linear(4, 4) for _ in range(70)])
    stream = io.StringIO()
    with reporting("lines"), contextlib.redirect_stderr(stream):
        apply(big, {str(i): {"rows": [0, 1]} for i in range(70)})  # 70 modules shrink: a big model
    assert stream.getvalue().splitlines()[-1] == "compact: 70/70 modules (100%)"
    assert big[69].out_features == 2
