"""A small trainer and evaluator for the zoo's classification tasks, on the model's device (CPU or GPU)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .. import devices
from ..progress import Progress
from . import distributed


def train(
    model: nn.Module,
    data: TensorDataset,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    desc: str = "train",
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    extra_params: Iterable[nn.Parameter] = (),
    extra_lr: float | None = None,
    on_optimizer: Callable[[torch.optim.Optimizer], None] | None = None,
) -> list[float]:
    """Train ``model`` with Adam and cross-entropy; masks, if any, stay applied.

    Args:
        model: the network (trained in place).
        data: ``(inputs, labels)`` pairs.
        epochs, lr, batch_size, weight_decay: the usual.
        seed: seeds the shuffling, so runs repeat exactly.
        desc: label of the progress bar.
        progress: show progress (a bar on a terminal, plain lines off one; see
            :mod:`secateurs.progress`), on rank 0 only.
        on_step: called with the global step number after each optimizer step
            (where a pruning schedule hooks in).
        penalty: ``penalty(model)`` added to each batch's loss (a sparsity regulariser).
        extra_params: more parameters for the optimizer (e.g. L0 gates living outside the model).
        extra_lr: their learning rate (default ``lr``).
        on_optimizer: called once with the optimizer (e.g. so RigL can reset the state of regrown weights).

    Under ``torchrun`` (see :mod:`secateurs.distributed`) the model is wrapped in DDP and
    each process takes ``batch_size / world`` examples of every step's global batch. Batches are moved
    to the model's device (the data may stay on the CPU).

    Returns:
        The mean training loss of each epoch (over this process's examples).
    """
    if distributed.active():  # each process takes its share of every global batch
        loader = distributed.shard_loader(data, batch_size, seed)
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
    progress = progress and distributed.is_main()
    device = devices.of(model)
    net = distributed.wrap(model)  # DDP under torchrun: gradients averaged over the processes
    groups: list[dict] = [{"params": list(model.parameters())}]
    extra = list(extra_params)
    if extra:
        groups.append({"params": extra, "lr": lr if extra_lr is None else extra_lr, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if on_optimizer is not None:
        on_optimizer(opt)
    model.train()
    losses, step = [], 0
    bar = Progress(epochs * len(loader), desc, unit="step", enabled=progress)
    for epoch in range(epochs):
        distributed.set_epoch(loader, epoch)
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            if penalty is not None:
                loss = loss + penalty(model)
            loss.backward()
            distributed.average_grads(extra)  # outside the model, DDP does not average them
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step)
                net = distributed.rewrap(net, model)  # DDP again if the step masked a new layer
            total += float(loss.detach()) * len(y)
            n += len(y)
            bar.update()
        losses.append(total / max(n, 1))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    distributed.sync_buffers(model)
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorDataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``data``, a fraction in [0, 1] (batches moved to the model's device)."""
    was_training = model.training
    model.eval()
    correct, device = 0, devices.of(model)
    for x, y in DataLoader(data, batch_size=batch_size):
        correct += int((model(x.to(device)).argmax(dim=1) == y.to(device)).sum())
    model.train(was_training)
    return correct / len(data)
