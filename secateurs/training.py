"""A small CPU trainer and evaluator for the zoo's classification tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .progress import Progress


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
        progress: show progress (a bar on a terminal; see :mod:`secateurs.progress`).
        on_step: called with the global step number after each optimizer step
            (where a pruning schedule hooks in).
        penalty: ``penalty(model)`` added to each batch's loss (a sparsity regulariser).
        extra_params: more parameters for the optimizer (e.g. L0 gates living outside the model).
        extra_lr: their learning rate (default ``lr``).
        on_optimizer: called once with the optimizer (e.g. so RigL can reset the state of regrown weights).

    Returns:
        The mean training loss of each epoch.
    """
    loader = DataLoader(data, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
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
    for _ in range(epochs):
        total, n = 0.0, 0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            if penalty is not None:
                loss = loss + penalty(model)
            loss.backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step)
            total += float(loss.detach()) * len(y)
            n += len(y)
            bar.update()
        losses.append(total / max(n, 1))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorDataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``data``, a fraction in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = 0
    for x, y in DataLoader(data, batch_size=batch_size):
        correct += int((model(x).argmax(dim=1) == y).sum())
    model.train(was_training)
    return correct / len(data)
