"""Distributed fine-tuning: the helpers in a 2-process gloo group, then ``secateurs run`` under torchrun.

The helper checks run once in two spawned processes (``torch.multiprocessing``, a
``file://`` rendezvous); each rank saves what it saw and the tests compare the ranks'
tensors themselves, not :func:`verify_identical`'s verdict. The end-to-end test launches
``python -m torch.distributed.run --nproc_per_node 2 -m secateurs run`` on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from filelock import FileLock
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import secateurs as sc
from secateurs import masking, storage
from secateurs.runs import recipes, runner
from secateurs.training import distributed
from secateurs.training import train

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.distributed


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _plain(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights as the layers use them (masked) and masks: what a saved round keeps."""
    return {k: v.clone() for k, v in storage.plain_state(model).items()}


def _batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _error(fn: Any) -> str | None:
    try:
        fn()
    except Exception as exc:  # recorded, then asserted on in the parent
        return f"{type(exc).__name__}: {exc}"
    return None


# ---- what each rank does (run in both processes, in this order) ----

def _broadcast(r: int, _tmp: Path) -> dict[str, Any]:
    net = _net(seed=r)  # different weights on each rank
    sc.prune(net, 0.5, layers={"2": None} if r == 0 else None)  # rank 1 also masks layer 2
    before = _state(net)
    distributed.broadcast_masks(net)
    return {"before": before, "after": _state(net), "masked": sorted(sc.masks(net))}


def _verify(r: int, _tmp: Path) -> dict[str, Any]:
    net = _net(seed=0)
    sc.prune(net, 0.5)
    count = distributed.verify_identical(net)
    mask = masking.get_mask(net[2])
    if r == 1:
        mask[0, 0] = ~mask[0, 0]  # one mask bit differs
    mask_error = _error(lambda: distributed.verify_identical(net))
    if r == 1:
        mask[0, 0] = ~mask[0, 0]
        w = masking.original(net[0])
        with torch.no_grad():  # one weight differs by one ulp
            w[1, 1] = torch.nextafter(w[1, 1], torch.tensor(float("inf")))
    weight_error = _error(lambda: distributed.verify_identical(net))
    return {"count": count, "mask_error": mask_error, "weight_error": weight_error}


def _rigl(r: int, _tmp: Path) -> dict[str, Any]:
    net = _net(seed=0)
    pruner = sc.RigL(net, sparsity=0.75, every=1, distribution="uniform", seed=0)
    x, y = _batch(16)
    x, y = x[8 * r: 8 * (r + 1)], y[8 * r: 8 * (r + 1)]  # each rank its own half of the batch
    ddp = distributed.wrap(net)  # kept alive until backward: it averages the gradients
    F.cross_entropy(ddp(x), y).backward()
    local = {n: masking.mask_module(m).dense_grad.clone() for n, m in pruner.modules.items()}
    assert pruner.step()  # drops and regrows at step 1
    return {"local_grad": local, "masks": {k: v.clone() for k, v in sc.masks(net).items()}}


def _train(r: int, _tmp: Path) -> dict[str, Any]:
    net = _net(seed=0)
    x, y = _batch(40)
    steps: list[int] = []
    pruner = sc.Gradual(net, 0.5, start=0, end=4, every=2)  # the first prune masks the layers mid-training

    def on_step(t: int) -> None:
        steps.append(t)
        pruner.step(t)

    train(net, TensorDataset(x, y), epochs=2, batch_size=8, progress=False, seed=0, on_step=on_step)
    bad_batch = _error(lambda: train(net, TensorDataset(x, y), batch_size=7, progress=False))
    return {"state": _state(net), "steps": steps, "sparsity": sc.sparsity(net), "bad_batch": bad_batch}


def _resume(r: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"rounds-rank{r}"  # rank 1's stays empty: a machine that does not see rank 0's disk
    first = _net(seed=0)
    init = _state(first)
    sc.Iterative(first, rounds=2, rate=0.5, rewind="init", out_dir=out).next_round()
    files = sorted(p.name for p in out.glob("*")) if out.is_dir() else []
    again = _net(seed=10 + r)  # a fresh process: different weights, no masks
    resumed = sc.Iterative(again, rounds=2, rate=0.5, rewind="init", out_dir=out)
    return {"files": files, "round": resumed.round, "first": _plain(first), "again": _plain(again), "raw": _state(again),
            "init": init, "rewind": {k: v.clone() for k, v in resumed.state.items()}}


SCENARIOS = {"broadcast": _broadcast, "verify": _verify, "rigl": _rigl, "train": _train, "resume": _resume}


def _worker(r: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=r, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        seen = {name: fn(r, Path(tmp)) for name, fn in SCENARIOS.items()}
    finally:
        dist.destroy_process_group()
    torch.save(seen, Path(tmp) / f"rank{r}.pt")


def _once(factory: pytest.TempPathFactory, name: str, produce: Any) -> Path:
    """``produce(folder)`` once per test session, even when pytest-xdist runs this module on two workers."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    folder = root / f"secateurs-distributed-{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            produce(folder)
            (folder / "done").touch()
    return folder


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = _once(tmp_path_factory, "group", lambda d: mp.spawn(_worker, args=(str(d),), nprocs=2, join=True))
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_broadcast_masks_gives_every_rank_rank_0s_masks_and_weights(ranks):
    zero, one = ranks[0]["broadcast"], ranks[1]["broadcast"]
    assert not _equal(zero["before"], one["before"])  # they did differ
    assert _equal(zero["after"], zero["before"]) and _equal(one["after"], zero["before"])
    assert zero["masked"] == one["masked"] == ["0.weight"]  # rank 1 dropped the mask rank 0 lacks


def test_verify_identical_names_the_tensor_that_differs(ranks):
    for r in ranks:
        v = r["verify"]
        assert v["count"] == 6  # 2 stored weights, 2 masks, 2 biases
        assert v["mask_error"].startswith("RanksDiverged") and "2.weight (mask) differs" in v["mask_error"]
        assert "0.weight (stored values) differs" in v["weight_error"]


def test_rigl_regrows_from_the_gradient_averaged_over_ranks(ranks):
    zero, one = ranks[0]["rigl"], ranks[1]["rigl"]
    assert not _equal(zero["local_grad"], one["local_grad"])  # each rank saw different data
    assert _equal(zero["masks"], one["masks"])
    # one process on the whole batch regrows the same weights
    net = _net(seed=0)
    pruner = sc.RigL(net, sparsity=0.75, every=1, distribution="uniform", seed=0)
    before = {k: v.clone() for k, v in sc.masks(net).items()}
    x, y = _batch(16)
    F.cross_entropy(net(x), y).backward()
    pruner.step()
    assert not _equal(before, sc.masks(net))  # the step did change masks
    assert _equal(zero["masks"], sc.masks(net))


def test_ddp_training_with_gradual_pruning_keeps_ranks_identical(ranks):
    zero, one = ranks[0]["train"], ranks[1]["train"]
    assert zero["steps"] == list(range(1, 11))  # 40 examples, global batch 8 (4 per rank), 2 epochs
    assert _equal(zero["state"], one["state"])
    assert zero["sparsity"] == 0.5
    assert "batch_size 7 must be a multiple of the number of processes (2)" in zero["bad_batch"]


def test_iterative_rounds_resume_from_rank_0s_files_only(ranks):
    zero, one = ranks[0]["resume"], ranks[1]["resume"]
    assert zero["files"] == ["rewind.safetensors", "round-1.safetensors", "rounds.json"]
    assert one["files"] == []  # only rank 0 writes
    assert zero["round"] == one["round"] == 1
    assert _equal(one["raw"], zero["raw"])  # stored values under the masks too
    assert _equal(one["again"], zero["first"])  # the masks and the weights they keep
    assert _equal(one["rewind"], zero["init"])  # rank 1's own init (seed 11) was replaced


def test_one_process_creates_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init() is False and not dist.is_initialized()
    assert (distributed.world(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.local_batch(7) == 7 and distributed.verify_identical(_net(0)) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(sc.PruningError, match="MASTER_ADDR"):
        distributed.init()
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, "1")
    with pytest.raises(sc.PruningError, match="SECATEURS_BACKEND"):
        distributed.init(backend="mpi")
    monkeypatch.setenv("SECATEURS_TIMEOUT", "soon")
    with pytest.raises(sc.PruningError, match="SECATEURS_TIMEOUT.*'soon'"):
        distributed.init()
    assert not dist.is_initialized()


# ---- end to end: secateurs run under torchrun ----

RECIPE = """\
model: lenet-300-100
data: mnist
seed: 0
train: {epochs: 1, batch_size: 128}
prune:
  - {schedule: iterative, rounds: 1, rate: 0.5, rewind: null, epochs: 1}
  - {sparsity: 0.9, criterion: magnitude, scope: global, finetune: {epochs: 1, batch_size: 128}}
  - {schedule: rigl, sparsity: 0.9, epochs: 1, every: 8}
  - {schedule: gradual, sparsity: 0.95, epochs: 1, every: 8}
report: true
"""
STAGES = ["dense", "iterative 1", "prune 2: magnitude global 90%", "finetune 2", "rigl 3", "gradual 4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Launched as torchrun's script: `secateurs run` with "{rank}" in the output path replaced by "" on rank 0 and
# "-rank1" on rank 1, so that a file written by rank 1 would land in a folder of its own and be seen.
PER_RANK = """\
import os, sys
from secateurs.cli import main
rank = os.environ["RANK"]
sys.exit(main([a.replace("{rank}", "" if rank == "0" else "-rank" + rank) for a in sys.argv[1:]]))
"""


def _torchrun(cwd: Path, out: str, per_rank: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", SECATEURS_TIMEOUT="120")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    if per_rank:
        (cwd / "per_rank.py").write_text(PER_RANK)
    launch = ["per_rank.py", "run", "recipe.yaml", "-o", out + "{rank}"] if per_rank else \
        ["-m", "secateurs", "run", "recipe.yaml", "-o", out]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *launch]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _launch_twice(folder: Path) -> None:
    """Run the recipe under torchrun, interrupt it, run it again; and once on one process."""
    cwd = folder / "run"
    cwd.mkdir()
    (cwd / "recipe.yaml").write_text(RECIPE)
    for log in ("first", "again"):  # the first run with rank 1's output folder apart, the second as users run it
        done = _torchrun(cwd, "out", per_rank=log == "first")
        assert done.returncode == 0, done.stderr[-3000:]
        (folder / f"{log}.log").write_text(done.stdout)
        if log == "first":
            shutil.copytree(cwd / "out", cwd / "first")
            for name in ("model.safetensors", "metrics.json", "report.md"):  # as if interrupted here
                (cwd / "out" / name).unlink()
    single = runner.run(recipes.parse(RECIPE), folder / "single", quiet=True)
    (folder / "single.json").write_text(json.dumps(single))


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = _once(tmp_path_factory, "torchrun", _launch_twice)
    return {"cwd": folder / "run", "first": (folder / "first.log").read_text(),
            "again": (folder / "again.log").read_text(), "single": json.loads((folder / "single.json").read_text())}


def test_torchrun_checks_every_stage_and_prints_once(launched):
    out = launched["first"]
    assert "dense: 6 tensors identical on all 2 processes" in out  # 3 weights, 3 biases
    for stage in STAGES[1:]:  # and now 3 masks
        assert f"{stage}: 9 tensors identical on all 2 processes" in out
    assert out.count("done: ") == 1 and out.count("dense: accuracy") == 1  # rank 1 is quiet


def test_torchrun_only_rank_0_writes(launched):
    cwd = launched["cwd"]
    names = sorted(str(p.relative_to(cwd / "first")) for p in (cwd / "first").rglob("*"))
    assert names == ["accuracy.png", "dense.safetensors", "metrics.json", "model.safetensors", "report.html",
                     "report.md", "sparsity.png", "stage-1-rounds", "stage-1-rounds/recipe_key",
                     "stage-1-rounds/round-1.safetensors", "stage-1-rounds/rounds.json", "weights.png"]
    assert sorted(p.name for p in cwd.iterdir()) == ["first", "out", "per_rank.py", "recipe.yaml"]  # no out-rank1


def test_torchrun_sparsity_is_exact_and_accuracy_matches_one_process(launched):
    metrics = json.loads((launched["cwd"] / "first" / "metrics.json").read_text())
    final, single = metrics["final"], launched["single"]["final"]
    assert final["prunable_nonzero"] == final["prunable"] - round(0.95 * final["prunable"])
    assert final["prunable_nonzero"] == single["prunable_nonzero"]
    masks = sc.masks(sc.load(launched["cwd"] / "first" / "model.safetensors"))
    assert sum(int(m.sum()) for m in masks.values()) == final["prunable_nonzero"]
    assert final["accuracy"] > 0.8 and abs(final["accuracy"] - single["accuracy"]) <= 0.03
    assert abs(metrics["dense"]["accuracy"] - launched["single"]["dense"]["accuracy"]) <= 0.03


def test_torchrun_resumes_an_interrupted_run(launched):
    out = launched["again"]
    assert "reusing the trained dense model" in out
    first = sc.load(launched["cwd"] / "first" / "model.safetensors")
    again = sc.load(launched["cwd"] / "out" / "model.safetensors")
    assert _equal(first.state_dict(), again.state_dict())  # the same model, from the saved dense and rounds
