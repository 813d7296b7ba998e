"""Running data through a model for criteria: batches, gradients, captured inputs.

Every helper here leaves the model as it found it: training/eval mode,
``requires_grad`` flags and existing ``.grad`` values are restored, and
scores are computed in eval mode so that BatchNorm statistics do not move.

A batch is ``(inputs, targets)``, a bare input tensor, or a dict of tensors
(passed as keyword arguments, as Hugging Face models expect; a ``labels`` entry
is also handed to ``loss_fn`` as the targets). ``loss_fn(outputs, targets)``
must average over the batch, as ``F.cross_entropy`` does by default. Batches are moved to the model's
device (a GPU model takes CPU batches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import devices, masking
from .errors import PruningError
from .inputs import evaluating
from .progress import track

Batch = tuple[tuple[Any, ...], dict[str, Any], Any]


def batches(data: Iterable[Any], desc: str | None = "score") -> Iterator[Batch]:
    """Normalise ``data`` to ``(args, kwargs, targets)`` triples.

    Args:
        data: the batches, in any of the forms above.
        desc: label of the progress shown while they are read, or ``None`` for none
            (a caller that only peeks at the first batch).

    Raises:
        PruningError: data that is not iterable, a batch of another form, or no batch at all.
    """
    if isinstance(data, (Tensor, Mapping)) or not isinstance(data, Iterable):
        raise PruningError(
            f"data= must be an iterable of batches (a list or a DataLoader), got {type(data).__name__}"
        )
    seen = False
    for b in data if desc is None else track(data, desc, unit="batch"):
        seen = True
        if isinstance(b, Tensor):
            yield (b,), {}, None
        elif isinstance(b, Mapping):
            yield (), dict(b), b.get("labels")
        elif isinstance(b, (tuple, list)) and len(b) in (1, 2):
            yield (b[0],), {}, (b[1] if len(b) == 2 else None)
        else:
            raise PruningError(
                f"data batches must be (inputs, targets), a tensor or a dict of tensors, got {type(b).__name__}"
            )
    if not seen:
        raise PruningError("data= has no batches; give at least one")


def forward(model: nn.Module, batch: Batch) -> Any:
    """Model outputs for one normalised batch, moved to the model's device first."""
    args, kwargs, _ = devices.move(batch, devices.of(model))
    return model(*args, **kwargs)


def batch_size(batch: Batch) -> int:
    """Number of examples in a batch (first dimension of its first tensor)."""
    args, kwargs, _ = batch
    first = args[0] if args else next(iter(kwargs.values()))
    return int(first.shape[0])


@contextlib.contextmanager
def scoring(model: nn.Module, grad_params: Iterable[Tensor] = ()) -> Iterator[None]:
    """Eval mode; only ``grad_params`` require grad; everything restored on exit."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    wanted = {id(p) for p in grad_params}
    try:
        with evaluating(model):
            for p in params:
                p.requires_grad_(id(p) in wanted)
                p.grad = None
            yield
    finally:
        for p, f, g in zip(params, flags, grads):
            p.requires_grad_(f)
            p.grad = g


def losses(model: nn.Module, data: Iterable[Any], loss_fn: Callable[..., Tensor]) -> Iterator[tuple[Tensor, Batch]]:
    """``(loss, batch)`` for every batch, with autograd on (inside :func:`scoring`)."""
    for batch in batches(data):
        out = forward(model, batch)
        loss = loss_fn(out, devices.move(batch[2], devices.of(model)))
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise PruningError("loss_fn must return a scalar tensor (average over the batch)")
        yield loss, batch


def weights(layers: Mapping[str, nn.Module]) -> dict[str, Tensor]:
    """The trainable tensor behind each layer's weight (the original when masked)."""
    return {name: masking.original(module) for name, module in layers.items()}


def gradients(
    model: nn.Module, layers: Mapping[str, nn.Module], data: Iterable[Any], loss_fn: Callable[..., Tensor]
) -> Iterator[dict[str, Tensor]]:
    """Per batch, ``{param name: ∂L/∂W}`` of each layer's masked weight (zero where pruned)."""
    params = weights(layers)
    with scoring(model, params.values()):
        for loss, _ in losses(model, data, loss_fn):
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            yield {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)}


@contextlib.contextmanager
def hooks(modules: Mapping[str, nn.Module], fn: Callable[[str, nn.Module, Any, Any], None]) -> Iterator[None]:
    """Forward hooks ``fn(name, module, inputs, output)`` on ``modules``, removed on exit."""
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: fn(n, mod, i, o)) for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def outputs_per_channel(y: Tensor, module: nn.Module) -> Tensor:
    """A layer's output as ``(batch, positions, channels)``."""
    if isinstance(module, nn.Linear):
        return y.reshape(y.shape[0], -1, y.shape[-1])
    return y.movedim(1, -1).reshape(y.shape[0], -1, y.shape[1])


def run(model: nn.Module, data: Iterable[Any]) -> None:
    """Forward every batch without gradients, in eval mode (for input-capturing hooks)."""
    with scoring(model), torch.no_grad():
        for batch in batches(data):
            forward(model, batch)
