"""The command line, run as users run it: ``python -m secateurs`` in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

import secateurs as sc
from secateurs import zoo

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TINY_RECIPE = """\
model: mlp
model_args: {widths: [32]}
data: digits
train: {epochs: 1}
prune:
  - sparsity: 0.5
    finetune: {epochs: 1}
"""


def cli(*args: object, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m secateurs ARGS`` in ``cwd`` with this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.run([sys.executable, "-m", "secateurs", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def files_under(root: Path) -> set[Path]:
    """Every file and folder under ``root``, relative to it."""
    return {p.relative_to(root) for p in root.rglob("*")}


def shared_once(factory: pytest.TempPathFactory, name: str, produce: Callable[[Path], Any]) -> tuple[Any, Path]:
    """``produce(folder)`` run once per test session, its JSON result shared.

    Under pytest-xdist each worker would set a module fixture up again; the lock and
    the stored result make the workers of one session share a single run.
    """
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    folder, stored = root / f"secateurs-cli-{name}", root / f"secateurs-cli-{name}.json"
    with FileLock(str(root / f"secateurs-cli-{name}.lock")):
        if not stored.is_file():
            folder.mkdir(exist_ok=True)
            stored.write_text(json.dumps(produce(folder)))
        return json.loads(stored.read_text()), folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``secateurs demo -o out -q``, run once (about 8 s) and shared by the tests below."""

    def produce(cwd: Path) -> list[Any]:
        r = cli("demo", "-o", "out", "-q", cwd=cwd, timeout=300)
        return [r.returncode, r.stdout, r.stderr]

    (rc, out, err), cwd = shared_once(tmp_path_factory, "demo", produce)
    return subprocess.CompletedProcess(["secateurs", "demo"], rc, out, err), cwd / "out"


@pytest.fixture(scope="module")
def demo_metrics(demo: tuple[subprocess.CompletedProcess[str], Path]) -> dict:
    result, out = demo
    assert result.returncode == 0, result.stderr
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------- success paths


def test_criteria_lists_magnitude_and_random(tmp_path: Path) -> None:
    r = cli("criteria", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert "magnitude" in names and "random" in names
    assert r.stderr == ""


def test_criteria_lists_stage_provided_ways_after_the_criteria(tmp_path: Path) -> None:
    r = cli("criteria", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    head, _, tail = r.stdout.partition("\n\n")
    names = [line.split()[0] for line in head.splitlines()]
    assert "magnitude" in names and "movement" not in names and "data-free" not in names  # usable by name
    lines = {line.split()[0]: line for line in tail.splitlines()[1:]}
    assert "use --amount" in lines["data-free"]
    assert "sc.Movement" in lines["movement"] and "schedule: movement" in lines["movement"]


def test_prune_flags_keep_their_names_and_defaults() -> None:
    from secateurs import cli as command

    a = command._parser().parse_args(["prune", "m.safetensors", "-o", "out"])
    assert {k: v for k, v in vars(a).items() if k not in ("command", "model", "out", "debug")} == {
        "sparsity": None, "amount": None, "scaled": False, "criterion": "magnitude", "granularity": "unstructured",
        "scope": "global", "min_density": 0.0, "layer": [], "data": None, "finetune_epochs": 0, "seed": 0,
        "calibration_batches": 8, "compact": False, "quiet": False, "method": "merge", "device": None, "probes": None,
        "latency": None, "batch_size": None, "round_to": None, "hidden": False}
    a = command._parser().parse_args(["prune", "m", "--sparsity", "0.5", "--min-density", "0.1", "--amount", "auto",
                                      "--scaled", "--calibration-batches", "3", "--seed", "2", "-o", "x", "-q"])
    assert (a.sparsity, a.min_density, a.amount, a.scaled, a.calibration_batches, a.seed, a.quiet) == (
        0.5, 0.1, "auto", True, 3, 2, True)


def test_demo_exits_zero_and_writes_its_outputs(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = demo
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # -q: nothing on stdout
    for name in ("model.safetensors", "dense.safetensors", "report.md", "weights.png", "metrics.json"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    assert (out / "weights.png").read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files
    report = (out / "report.md").read_text()
    assert report.startswith("# secateurs report: lenet-300-100")
    assert "weights.png" in report


def test_demo_metrics_schema(demo_metrics: dict) -> None:
    m = demo_metrics
    dense, final, stages = m["dense"], m["final"], m["stages"]
    assert isinstance(dense["params"], int) and dense["params"] == 266_610  # 784-300-100-10 with biases
    assert 0.0 <= dense["accuracy"] <= 1.0
    for key in ("accuracy", "sparsity", "params", "nonzero", "compression", "flops"):
        assert key in final, key
    assert 0.0 <= final["accuracy"] <= 1.0
    assert final["params"] == dense["params"]
    assert 0 < final["nonzero"] < final["params"]
    assert final["flops"] > 0
    assert isinstance(stages, list) and len(stages) >= 2
    for st in stages:
        assert isinstance(st["name"], str) and st["name"]
        assert 0.0 <= st["accuracy"] <= 1.0
        assert 0.0 <= st["sparsity"] <= 1.0
    assert stages[0]["sparsity"] == 0.0
    assert stages[-1]["accuracy"] == final["accuracy"]


def test_demo_reaches_90_percent_sparsity_without_losing_accuracy(demo_metrics: dict) -> None:
    final, dense = demo_metrics["final"], demo_metrics["dense"]
    assert final["sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert final["compression"] == pytest.approx(10.0, rel=1e-4)
    assert final["flops"] < 0.2 * final["flops_dense"]
    assert final["accuracy"] >= dense["accuracy"] - 0.01  # within one point of the dense model
    assert dense["accuracy"] > 0.85


def test_demo_model_file_matches_metrics(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = demo
    model = sc.load(out / "model.safetensors")  # architecture comes from the file
    assert sc.sparsity(model) == pytest.approx(0.9, abs=1e-6)
    dense = sc.load(out / "dense.safetensors")
    assert sc.masks(dense) == {}
    assert sc.sparsity(dense) == 0.0


def test_summary_prints_a_table(demo: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    _, out = demo
    r = cli("summary", out / "model.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "fc1.weight" in r.stdout and "fc3.weight" in r.stdout
    assert "sparsity 0.9000" in r.stdout
    assert list(tmp_path.iterdir()) == []  # summary writes nothing


def test_prune_channels_and_compact(demo: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    _, out = demo
    r = cli("prune", out / "dense.safetensors", "--sparsity", "0.5", "--granularity", "neuron", "--scope", "local",
            "--compact", "--data", "mnist", "-o", "small", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "small" / "metrics.json").read_text())
    assert m["compacted"] is True
    assert m["final"]["params"] < m["dense"]["params"] / 2
    assert m["final"]["flops"] < m["dense"]["flops"] / 2
    assert m["final"]["nonzero"] == m["final"]["params"]  # nothing masked: the weights are gone
    small = sc.load(tmp_path / "small" / "model.safetensors")
    assert small.fc1.out_features == 150 and small.fc2.in_features == 150 and small.fc3.out_features == 10
    r = cli("summary", tmp_path / "small" / "model.safetensors", cwd=tmp_path)
    assert r.returncode == 0 and "150x784" in r.stdout


def test_data_free_merging_from_the_cli(demo: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    _, out = demo
    r = cli("prune", out / "dense.safetensors", "--criterion", "data-free", "--amount", "0.3", "--data", "mnist",
            "-o", "merged", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "merged" / "metrics.json").read_text())
    assert m["final"]["params"] < m["dense"]["params"]
    assert m["final"]["accuracy"] >= m["dense"]["accuracy"] - 0.02  # 30% of neurons merged, no data, no training
    merged = sc.load(tmp_path / "merged" / "model.safetensors")
    assert merged.fc1.out_features == 210 and merged.fc2.out_features == 70
    r = cli("prune", out / "dense.safetensors", "--criterion", "data-free", "-o", "x", cwd=tmp_path)
    assert r.returncode == 2 and "needs amount" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_prune_a_saved_model_locally(demo: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    _, out = demo
    r = cli("prune", out / "dense.safetensors", "--sparsity", "0.5", "--scope", "local", "-o", "out2", "-q",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out2 = tmp_path / "out2"
    assert {"model.safetensors", "metrics.json"} <= {p.name for p in out2.iterdir()}
    m = json.loads((out2 / "metrics.json").read_text())
    assert m["final"]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert m["stages"][-1]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    for layer in m["layers"]:  # local scope: every layer loses half
        assert layer["sparsity"] == pytest.approx(0.5, abs=1e-3), layer["name"]
    pruned = sc.load(out2 / "model.safetensors")
    assert sc.sparsity(pruned) == pytest.approx(0.5, abs=1e-6)
    assert (out / "dense.safetensors").is_file()  # the input is left alone
    assert sc.masks(sc.load(out / "dense.safetensors")) == {}


def test_run_a_tiny_recipe(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    r = cli("run", "tiny.yaml", "-o", "out", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    for name in ("model.safetensors", "dense.safetensors", "metrics.json", "report.md", "weights.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["final"]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert 0.0 <= m["dense"]["accuracy"] <= 1.0 and 0.0 <= m["final"]["accuracy"] <= 1.0
    assert len(m["stages"]) == 3  # dense, prune, finetune
    assert m["stages"][1]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    model = sc.load(out / "model.safetensors")
    assert tuple(model.fc1.weight.shape) == (32, 64)  # widths from the recipe, 64 inputs from digits
    assert sc.sparsity(model) == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------- bad input


BAD_INPUT = {
    # id: (files to create in cwd, arguments, words the one-line message must hold);
    # "m.safetensors" is a small model saved by secateurs, written by the test.
    "missing-model": ({}, ["prune", "nope.safetensors", "--sparsity", "0.5", "-o", "out"], ["nope.safetensors"]),
    "sparsity-1.5": ({}, ["prune", "m.safetensors", "--sparsity", "1.5", "-o", "out"], ["sparsity", "1.5"]),
    "unknown-criterion": ({}, ["prune", "m.safetensors", "--sparsity", "0.5", "--criterion", "nope", "-o", "out"],
                          ["criterion", "nope", "magnitude"]),
    "bad-scope": ({}, ["prune", "m.safetensors", "--sparsity", "0.5", "--scope", "wide", "-o", "out"],
                  ["scope", "global", "local"]),
    "bad-min-density": ({}, ["prune", "m.safetensors", "--sparsity", "0.5", "--min-density", "2", "-o", "out"],
                        ["--min-density:", "2"]),
    "criterion-movement": ({}, ["prune", "m.safetensors", "--sparsity", "0.5", "--criterion", "movement",
                                "-o", "out"], ["--criterion:", "movement", "schedule"]),
    "flag-of-another-kind": ({}, ["prune", "m.safetensors", "--criterion", "data-free", "--amount", "0.3",
                                  "--sparsity", "0.5", "-o", "out"], ["--sparsity:", "data-free"]),
    "layer-matches-nothing": ({}, ["prune", "m.safetensors", "--sparsity", "0.5", "--layer", "zzz*=0.5",
                                   "-o", "out"], ["zzz*"]),
    "not-a-secateurs-save": ({"x.safetensors": "this is just text\n"},
                             ["prune", "x.safetensors", "--sparsity", "0.5", "-o", "out"], ["x.safetensors"]),
    "summary-not-a-save": ({"x.safetensors": "this is just text\n"}, ["summary", "x.safetensors"],
                           ["x.safetensors"]),
    "malformed-yaml": ({"bad.yaml": "model: mlp\ndata: [digits\ntrain: {epochs: 1}\n"},
                       ["run", "bad.yaml", "-o", "out"], ["bad.yaml"]),
    "recipe-unknown-key": ({"unk.yaml": "model: mlp\nmodel_args: {widths: [32]}\ndata: digits\n"
                                        "trian: {epochs: 1}\n"},
                           ["run", "unk.yaml", "-o", "out"], ["trian", "line 4"]),
    "recipe-unknown-key-in-stage": ({"r.yaml": "# a comment\nmodel: mlp\ndata: digits\nprune:\n"
                                               "  - sparsity: 0.5\n    critrion: magnitude\n"},
                                    ["run", "r.yaml", "-o", "out"], ["critrion", "line"]),
    "recipe-missing": ({}, ["run", "missing.yaml", "-o", "out"], ["missing.yaml"]),
    "no-arguments": ({}, [], []),
}


def _run_bad_case(folder: Path, case: str) -> dict[str, Any]:
    files, args, _ = BAD_INPUT[case]
    cwd = folder / case
    cwd.mkdir()
    model = cwd / "m.safetensors"
    sc.save(zoo.model("mlp", in_features=64, widths=[16]), model)
    for name, text in files.items():
        (cwd / name).write_text(text)
    before, saved = files_under(cwd), model.read_bytes()
    r = cli(*args, cwd=cwd)
    return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr,
            "before": sorted(map(str, before)), "after": sorted(map(str, files_under(cwd))),
            "model_unchanged": model.read_bytes() == saved}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every BAD_INPUT case, run concurrently (each start-up imports torch: ~2 s of CPU)."""

    def produce(folder: Path) -> dict[str, dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            futures = {case: pool.submit(_run_bad_case, folder, case) for case in BAD_INPUT}
            return {case: f.result() for case, f in futures.items()}

    return shared_once(tmp_path_factory, "bad-input", produce)[0]


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line(case: str, bad_runs: dict[str, dict[str, Any]]) -> None:
    r, words = bad_runs[case], BAD_INPUT[case][2]
    assert r["rc"] == 2, (r["rc"], r["stderr"])
    lines = r["stderr"].strip().splitlines()
    assert len(lines) == 1, r["stderr"]
    assert "Traceback" not in r["stderr"]
    assert lines[0].startswith("secateurs: error:"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert r["after"] == r["before"]  # no output folder, model, metrics, plot or temp file left behind
    assert r["model_unchanged"]  # the input model is never touched


def test_unknown_key_in_a_stage_names_its_exact_line(bad_runs: dict[str, dict[str, Any]]) -> None:
    msg = bad_runs["recipe-unknown-key-in-stage"]["stderr"].strip()
    assert re.search(r"\bline (\d+)\b", msg).group(1) == "6", msg
    assert "prune.0.critrion" in msg, msg


def test_no_arguments_exits_2(bad_runs: dict[str, dict[str, Any]]) -> None:
    r = bad_runs["no-arguments"]
    assert r["rc"] == 2
    assert "Traceback" not in r["stderr"]
    assert len(r["stderr"].strip().splitlines()) == 1, r["stderr"]
    assert r["after"] == r["before"]


def test_an_output_path_that_cannot_be_used_exits_2(demo: tuple[subprocess.CompletedProcess[str], Path],
                                                    tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    res = cli("prune", demo[1] / "dense.safetensors", "--sparsity", "0.5", "-o", tmp_path / "a-file" / "out",
              "-q", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "a-file" in res.stderr and "choose another path" in res.stderr
    assert (tmp_path / "a-file").read_text() == "not a folder"
