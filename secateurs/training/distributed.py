"""Fine-tuning under ``torch.distributed`` (DDP, launched by ``torchrun``) with masks kept in step.

``secateurs run RECIPE.yaml`` started by ``torchrun --nproc_per_node N`` joins the process
group that torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Then:

- training shards the data with a ``DistributedSampler`` (each process takes
  ``batch_size / N`` examples per step, so the global batch is the recipe's) and wraps
  the model in ``DistributedDataParallel``, which all-reduces the gradients;
- every pruning decision is taken from identical weights and gradients, and the masks
  and weights of rank 0 are broadcast after each one-shot prune (:func:`broadcast_masks`);
- after every stage :func:`verify_identical` compares a hash of every mask, weight and
  buffer across ranks and stops the run, naming the tensor, if any rank differs;
- only rank 0 writes files; a run that resumes reads them on rank 0 and broadcasts.

With one process (``WORLD_SIZE`` unset or 1) none of this happens: no process group is
created and every helper here is a no-op, so a single-process run is unchanged.

The backend is ``gloo`` by default; the recipe runner asks for ``nccl`` when its ``device`` is a GPU (each
process on GPU ``LOCAL_RANK``, see :mod:`secateurs.devices`). Set ``SECATEURS_BACKEND``
(``gloo`` or ``nccl``) or pass ``backend=`` to :func:`init` to choose, and
``SECATEURS_TIMEOUT`` (seconds, default 1800) to bound how long a rank waits for the
others before failing instead of hanging.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import masking
from ..errors import PruningError

BACKENDS = ("gloo", "nccl")
"""Backends :func:`init` accepts."""

_LAUNCH = ("RANK", "MASTER_ADDR", "MASTER_PORT")

# Newer torch renamed DDP's broadcast_buffers (deprecated) to forward_sync_buffers.
_NO_SYNC = ({"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
            else {"broadcast_buffers": False})


class RanksDiverged(RuntimeError):
    """The processes of a run hold different masks or weights (an internal error, not bad input)."""


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank: the group's, else the one torchrun set in ``RANK``, else 0."""
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if _launched_world() > 1 else 0


def is_main() -> bool:
    """Whether this process is rank 0: the one that prints and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (no-op with one process)."""
    if active():
        dist.barrier()


def _launched_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise PruningError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def init(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Args:
        backend: ``"gloo"`` (CPU tensors) or ``"nccl"`` (CUDA tensors); default
            ``$SECATEURS_BACKEND``, else ``"gloo"``.
        timeout_s: how long a collective waits for the other ranks before failing;
            default ``$SECATEURS_TIMEOUT``, else 1800.

    Returns:
        ``True`` when this call created the group (the caller destroys it), ``False``
        when there is nothing to do: one process, or a group that already exists.

    Raises:
        PruningError: a bad backend or timeout, or ``WORLD_SIZE > 1`` without the rest
            of torchrun's variables.
    """
    if not dist.is_available() or dist.is_initialized() or _launched_world() <= 1:
        return False
    missing = [k for k in _LAUNCH if k not in os.environ]
    if missing:
        raise PruningError(f"WORLD_SIZE={_launched_world()} but {', '.join(missing)} not set: "
                           "launch with torchrun (python -m torch.distributed.run)")
    backend = backend or os.environ.get("SECATEURS_BACKEND") or "gloo"
    if backend not in BACKENDS:
        raise PruningError(f"backend (SECATEURS_BACKEND) must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "nccl":  # one GPU per process, the one torchrun numbered for this machine
        if not torch.cuda.is_available():
            raise PruningError("backend nccl needs CUDA GPUs; use gloo (SECATEURS_BACKEND=gloo) on CPUs")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=_timeout(timeout_s))
    return True


def _timeout(timeout_s: float | None) -> timedelta:
    raw = timeout_s if timeout_s is not None else os.environ.get("SECATEURS_TIMEOUT", "1800")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise PruningError(f"timeout (SECATEURS_TIMEOUT) must be a positive number of seconds, got {raw!r}")
    return timedelta(seconds=seconds)


@contextmanager
def session(backend: str | None = None) -> Iterator[None]:
    """:func:`init` on entry; on exit, destroy the group if this call created it."""
    mine = init(backend)
    try:
        yield
    finally:
        if mine:
            dist.destroy_process_group()


def local_batch(batch_size: int) -> int:
    """Examples per process and step, for a global batch of ``batch_size``.

    Raises:
        PruningError: when ``batch_size`` is not a multiple of the number of processes.
    """
    n = world()
    if batch_size % n:
        raise PruningError(f"batch_size {batch_size} must be a multiple of the number of processes ({n}): "
                           f"each process takes batch_size / {n} examples per step")
    return batch_size // n


def shard_loader(data: Dataset, batch_size: int, seed: int) -> DataLoader:
    """This rank's share of ``data``, shuffled by ``seed`` (call ``loader.sampler.set_epoch(e)``).

    Each step, the ranks' batches together are ``batch_size`` consecutive examples of
    one permutation of ``data``. When ``len(data)`` is not a multiple of the number of
    processes, ``DistributedSampler`` repeats a few examples so that every rank takes
    as many steps.
    """
    sampler = DistributedSampler(data, num_replicas=world(), rank=rank(), shuffle=True, seed=seed)
    # the generator only seeds (unused) worker RNGs, as in a single-process run: the global RNG is left alone
    return DataLoader(data, batch_size=local_batch(batch_size), sampler=sampler,
                      generator=torch.Generator().manual_seed(seed))


def wrap(model: nn.Module) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` (or itself, with one process).

    Buffers are not broadcast at each forward pass (``forward_sync_buffers=False``): the
    masks are buffers, they change only at pruning steps taken identically everywhere,
    and re-sending them every step would cost a byte per weight. Call
    :func:`sync_buffers` once training ends for the other buffers.
    """
    if not active():
        return model
    device = _device(model)
    net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None, **_NO_SYNC)
    net.secateurs_masked = frozenset(masking.masks(model))
    return net


def rewrap(net: nn.Module, model: nn.Module) -> nn.Module:
    """``net``, or a new :func:`wrap` of ``model`` if a pruning step masked (or unmasked) a weight.

    Attaching a mask re-registers the weight (torch's ``parametrize`` calls ``set_`` on
    it), which gives it a new gradient accumulator: the hooks through which DDP
    averages its gradient are gone, and the next step would fail. Every rank masks the
    same layers at the same step, so every rank wraps again together.
    """
    if not active() or getattr(net, "secateurs_masked", None) == frozenset(masking.masks(model)):
        return net
    return wrap(model)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Give a :func:`shard_loader` its permutation for ``epoch`` (the same on every rank)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def average_grads(params: list[nn.Parameter]) -> None:
    """Average the gradients of parameters DDP does not see (e.g. gates outside the model)."""
    for p in params:
        if p.grad is not None:
            average_(p.grad)


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers other than masks (batch-norm statistics) on every rank.

    That is what DDP's default ``broadcast_buffers=True`` would leave behind; masks are
    left out, they are checked by :func:`verify_identical` instead of overwritten.
    """
    if active():
        masks = {id(m) for m in masking.masks(model).values()}
        _broadcast([b for b in model.buffers() if id(b) not in masks])


def average_(tensor: Tensor) -> Tensor:
    """Replace ``tensor`` by its mean over the ranks, in place (no-op with one process)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(world())
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable value), on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def broadcast_masks(model: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s masks and weights (and every other buffer).

    Layers masked on ``src`` but not here get a mask first (and the reverse loses
    theirs), so that a rank that loaded a checkpoint can hand it to the others.

    Raises:
        RanksDiverged: when the ranks' models differ in names or shapes.
    """
    if not active():
        return
    wanted = set(broadcast_object(sorted(masking.masks(model)), src))
    for name in sorted(wanted ^ set(masking.masks(model))):
        module_name, _, tensor_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        if name in wanted:
            masking.set_mask(module, torch.ones_like(masking.original(module, tensor_name), dtype=torch.bool),
                             tensor_name)
        else:
            masking.unmask(module, tensor_name)
    broadcast_tensors(model.state_dict(keep_vars=True), src)


def broadcast_tensors(tensors: Mapping[str, Tensor], src: int = 0) -> None:
    """Overwrite every tensor of ``tensors`` with rank ``src``'s, in place.

    Raises:
        RanksDiverged: when the ranks' names, shapes or dtypes differ.
    """
    if not active():
        return
    layout = {k: (tuple(v.shape), str(v.dtype)) for k, v in tensors.items()}
    _same_everywhere(layout, lambda k, v: f"{_label(k)} has shape and dtype {v}")
    _broadcast([tensors[k] for k in sorted(tensors)], src)


def verify_identical(model: nn.Module) -> int:
    """Check that every rank holds the same masks, weights and buffers, bit for bit.

    Each rank hashes every tensor of its ``state_dict`` (masks, the stored weights
    under them, biases, buffers); the hashes are gathered and compared.

    Returns:
        The number of tensors compared (0 with one process).

    Raises:
        RanksDiverged: naming the first tensor where some rank differs from rank 0.
    """
    if not active():
        return 0
    digests = {k: _digest(v) for k, v in model.state_dict().items()}
    _same_everywhere(digests, lambda k, _v: f"{_label(k)} differs")
    return len(digests)


def _same_everywhere(mine: dict[str, Any], say: Any) -> None:
    """Gather ``mine`` from every rank; on every rank, raise if any differs from rank 0's."""
    every: list[dict[str, Any]] = [{} for _ in range(world())]
    dist.all_gather_object(every, mine)
    for r, theirs in enumerate(every[1:], start=1):
        if theirs != every[0]:
            keys = sorted(set(theirs) | set(every[0]))
            key = next(k for k in keys if theirs.get(k) != every[0].get(k))
            what = "is missing on one of them" if key not in theirs or key not in every[0] else say(key, theirs[key])
            raise RanksDiverged(f"ranks 0 and {r} disagree: {what} (rank {rank()} of {world()})")


def _broadcast(tensors: list[Tensor], src: int = 0) -> None:
    with torch.no_grad():
        for t in tensors:
            view = t.detach()
            if view.dtype == torch.bool:  # not every backend sends bools; the same bytes as uint8
                view = view.view(torch.uint8)
            dist.broadcast(view, src=src)


def _digest(t: Tensor) -> str:
    raw = t.detach().contiguous().reshape(-1)
    return hashlib.blake2b(raw.view(torch.uint8).cpu().numpy().tobytes(), digest_size=16).hexdigest()


def _label(key: str) -> str:
    """``"fc1.parametrizations.weight.0.mask"`` -> ``"fc1.weight (mask)"``; plain keys unchanged."""
    name, leaf = masking.split_key(key)
    return key if leaf is None else f"{name} ({'mask' if leaf.endswith('mask') else 'stored values'})"


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
