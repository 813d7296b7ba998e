"""Masks that live with the model: ``weight = original ⊙ mask``.

A mask is a :mod:`torch.nn.utils.parametrize` parametrization holding one bool
buffer (``True`` = keep). The module keeps its attribute ``weight``; the
trainable tensor moves to ``parametrizations.weight.original`` and the mask to
``parametrizations.weight.0.mask``. Because the layer always computes
``original * mask``, a pruned weight is exactly zero in every forward pass and
receives a zero gradient, whatever the optimizer (momentum, Adam, weight decay)
does to the stored original. ``state_dict``, ``load_state_dict`` and
``copy.deepcopy`` work as for any module.

This is the only module, with ``surgery/``, that touches ``nn.Module`` internals.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune as torch_prune

from .errors import PruningError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Module types whose ``weight`` is prunable by default (biases and norms never are)."""


class Mask(nn.Module):
    """Parametrization computing ``weight ⊙ mask`` with a bool ``mask`` buffer.

    Example:
        >>> m = Mask(torch.tensor([[True, False], [False, True]]))
        >>> m(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([[1., 0.],
                [0., 4.]])
    """

    def __init__(self, mask: Tensor, copy: bool = True) -> None:
        super().__init__()
        mask = (mask.detach() if mask.requires_grad else mask).to(dtype=torch.bool)  # copy=False keeps the tensor
        self.register_buffer("mask", mask.clone() if copy else mask)
        self.watch = False  # when True, the dense gradient of the masked weight is kept (RigL)
        self.dense_grad: Tensor | None = None

    def forward(self, weight: Tensor) -> Tensor:
        out = weight * self.mask
        if self.watch and out.requires_grad:
            out.register_hook(self._keep)
        return out

    def _keep(self, grad: Tensor) -> None:
        """∂L/∂(W ⊙ M) everywhere, pruned entries included (summed over forward calls)."""
        g = grad.detach()
        self.dense_grad = g.clone() if self.dense_grad is None else self.dense_grad + g


def transposed(module: nn.Module) -> bool:
    """Whether the layer stores its ``weight`` as (in, out): ``transformers``' ``Conv1D`` (GPT-2).

    Read by class name, so that ``transformers`` need not be installed.
    """
    return any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers") for c in type(module).__mro__)


def as_rows(module: nn.Module, tensor: Tensor, tensor_name: str = "weight") -> Tensor:
    """``tensor`` (of ``module.<tensor_name>``'s shape) with output units first: a view, transposed for Conv1D.

    Transposing is its own inverse, so the same call turns a row-first mask back.
    """
    return tensor.t() if tensor_name == "weight" and tensor.dim() == 2 and transposed(module) else tensor


def prunable_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(qualified_module_name, module)`` for every layer whose ``weight`` is prunable, in model order.

    Linear, Conv1d/2d/3d and ``transformers``' ``Conv1D``.
    """
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) or transposed(module):
            yield name, module


def prunable_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """``(module name, module, tensor name)`` of every tensor prunable by default, in model order.

    The ``weight`` of every :func:`prunable_layers` layer and the packed ``in_proj_weight`` of
    ``nn.MultiheadAttention`` (its ``out_proj`` is a Linear).
    """
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) or transposed(module):
            yield name, module, "weight"
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            yield name, module, "in_proj_weight"


def tensor_names(module: nn.Module) -> list[str]:
    """The module's own parameters' names, masked ones included (``weight``, not ``parametrizations...``)."""
    names = [n for n, p in module._parameters.items() if p is not None]
    if parametrize.is_parametrized(module):
        names += [n for n in module.parametrizations if n not in names]
    return names


def tied(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """Groups of ``(module, tensor name)`` that hold one and the same parameter (tied weights)."""
    by_id: dict[int, list[tuple[nn.Module, str]]] = {}
    for name, module in model.named_modules():
        if "parametrizations" in name.split("."):  # a mask's own holder, not a layer
            continue
        for tensor_name in tensor_names(module):
            by_id.setdefault(id(original(module, tensor_name)), []).append((module, tensor_name))
    return [group for group in by_id.values() if len(group) > 1]


def tie(model: nn.Module) -> None:
    """Give every tensor tied to a masked one the same mask: one bool tensor, shared.

    A parameter shared by two modules (a language model's head and its token embedding) is
    one weight; masking it in one module only would let the other read the unmasked values,
    and baking the mask would then change what that module computes. Masks already on
    several members of a group are combined (a weight pruned in one is pruned in all).
    """
    for group in tied(model):
        found = [get_mask(m, n) for m, n in group]
        present = [k for k in found if k is not None]
        if not present:
            continue
        shared = present[0]
        for k in present[1:]:
            if k is not shared:
                shared.logical_and_(k)
        for (module, tensor_name), k in zip(group, found):
            if k is None:
                set_mask(module, shared, tensor_name, copy=False)
            elif k is not shared:
                mask_module(module, tensor_name).mask = shared


def kind(module: nn.Module) -> str:
    """The layer's class name, ``Linear`` rather than torch's generated ``ParametrizedLinear``."""
    cls = type(module)
    if parametrize.is_parametrized(module):
        cls = cls.__bases__[0]
    return cls.__name__


def param_name(module_name: str, tensor_name: str = "weight") -> str:
    """Qualified parameter name, e.g. ``"blocks.0.fc1.weight"``."""
    return f"{module_name}.{tensor_name}" if module_name else tensor_name


def split_key(key: str) -> tuple[str, str | None]:
    """A ``state_dict`` key as ``(plain parameter name, leaf inside its parametrization or None)``.

    Example:
        >>> split_key("fc1.parametrizations.weight.0.mask"), split_key("fc1.bias")
        (('fc1.weight', '0.mask'), ('fc1.bias', None))
    """
    if ".parametrizations." not in f".{key}":
        return key, None
    head, _, rest = key.partition("parametrizations.")
    tensor_name, _, leaf = rest.partition(".")
    return f"{head}{tensor_name}", leaf


def parametrized_key(name: str, leaf: str) -> str:
    """``"fc1.weight"`` -> ``"fc1.parametrizations.weight.<leaf>"`` (``leaf``: ``"original"``, ``"0.mask"``)."""
    module_name, _, tensor_name = name.rpartition(".")
    prefix = f"{module_name}." if module_name else ""
    return f"{prefix}parametrizations.{tensor_name}.{leaf}"


def mask_module(module: nn.Module, tensor_name: str = "weight") -> Mask | None:
    """The :class:`Mask` parametrization on ``module.<tensor_name>``, or ``None``."""
    if not parametrize.is_parametrized(module, tensor_name):
        return None
    for p in module.parametrizations[tensor_name]:
        if isinstance(p, Mask):
            return p
    return None


def get_mask(module: nn.Module, tensor_name: str = "weight") -> Tensor | None:
    """The bool mask on ``module.<tensor_name>``, or ``None`` when it has none."""
    found = mask_module(module, tensor_name)
    return None if found is None else found.mask


def original(module: nn.Module, tensor_name: str = "weight") -> Tensor:
    """The stored tensor before masking (the trainable parameter itself)."""
    if parametrize.is_parametrized(module, tensor_name):
        return module.parametrizations[tensor_name].original
    return getattr(module, tensor_name)


def set_mask(module: nn.Module, mask: Tensor, tensor_name: str = "weight", copy: bool = True) -> None:
    """Attach ``mask`` to ``module.<tensor_name>``, or replace the mask already there.

    Args:
        module: the layer.
        mask: bool tensor of the tensor's shape, ``True`` = keep.
        tensor_name: which tensor of the layer.
        copy: ``False`` lets the layer keep ``mask`` itself (the caller gives it up).

    Raises:
        PruningError: when the mask's shape differs from the tensor's.
    """
    target = original(module, tensor_name)
    if mask.shape != target.shape:
        raise PruningError(
            f"mask for {tensor_name!r} has shape {tuple(mask.shape)}, expected {tuple(target.shape)}"
        )
    existing = mask_module(module, tensor_name)
    if existing is not None:
        existing.mask.copy_(mask)
        return
    order = list(module._parameters)  # put back by _remove, so optimizer state still lines up
    # unsafe=True skips a consistency check that would evaluate the whole
    # parametrization once more; the shape and dtype are checked above.
    holder = Mask(mask.to(target.device), copy=copy)
    holder.order = order
    parametrize.register_parametrization(module, tensor_name, holder, unsafe=True)


def _own_class(module: nn.Module) -> None:
    """Give ``module`` a private copy of torch's generated ``Parametrized*`` class.

    ``copy.deepcopy`` shares that class between the original and the copy, and
    removing a parametrization deletes the ``weight`` property from the class,
    which would break every other copy. A private class keeps them apart.
    """
    cls = type(module)
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)


def _remove(module: nn.Module, tensor_name: str, bake: bool) -> None:
    chain = module.parametrizations[tensor_name]
    if len(chain) != 1 or not isinstance(chain[0], Mask):
        raise PruningError(
            f"{type(module).__name__}.{tensor_name} has other parametrizations besides the mask; "
            "remove them first"
        )
    order = getattr(chain[0], "order", None)
    _own_class(module)
    parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=bake)
    if order:  # torch re-registers the tensor last; restore the original parameter order
        params = module._parameters
        ranked = sorted(params, key=lambda k: order.index(k) if k in order else len(order))
        module._parameters = type(params)((k, params[k]) for k in ranked)


def bake(module: nn.Module, tensor_name: str = "weight") -> None:
    """Write ``original ⊙ mask`` into a plain parameter and drop the mask (no-op if unmasked)."""
    if mask_module(module, tensor_name) is not None:
        _remove(module, tensor_name, bake=True)


def unmask(module: nn.Module, tensor_name: str = "weight") -> None:
    """Drop the mask and keep the stored original values (no-op if unmasked)."""
    if mask_module(module, tensor_name) is not None:
        _remove(module, tensor_name, bake=False)


def masks(model: nn.Module) -> dict[str, Tensor]:
    """``{qualified_param_name: bool mask}`` for every masked weight of ``model``.

    Masks left by :mod:`torch.nn.utils.prune` are adopted first (:func:`adopt_torch_pruning`).
    """
    adopt_torch_pruning(model)
    out: dict[str, Tensor] = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name in module.parametrizations:
                mask = get_mask(module, tensor_name)
                if mask is not None:
                    out[param_name(name, tensor_name)] = mask
    return out


def finalize(model: nn.Module) -> nn.Module:
    """Bake every mask into its weight (pruned entries become 0) and remove the masks.

    Returns:
        ``model`` itself, now with plain parameters.
    """
    for _, module in list(model.named_modules()):
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations):
                bake(module, tensor_name)
    return model


def restore(model: nn.Module) -> nn.Module:
    """Remove every mask and give back the stored weights, pruned entries included.

    The stored values of pruned entries are those they had when pruned, unless
    an optimizer with weight decay or momentum has moved them since (their
    gradient is zero, but decay and momentum do not look at the gradient).

    Returns:
        ``model`` itself, unpruned.
    """
    for _, module in list(model.named_modules()):
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations):
                unmask(module, tensor_name)
    return model


# --- Models pruned with torch.nn.utils.prune: their masks become ours -------------------------------------------


def torch_pruned(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(module name, module, tensor name)`` for every tensor pruned with :mod:`torch.nn.utils.prune`."""
    found = []
    for name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                found.append((name, module, hook._tensor_name))
    return found


def adopt_torch_pruning(model: nn.Module) -> list[str]:
    """Turn :mod:`torch.nn.utils.prune` masks into secateurs masks, in place.

    torch keeps ``<name>_orig`` (a parameter), ``<name>_mask`` (a buffer) and a forward
    pre-hook that writes ``<name> = <name>_orig * <name>_mask``. Each such tensor gets its
    parameter back, unchanged (pruned entries keep their stored values), and a :class:`Mask`
    with the same entries; torch's hook and buffer are removed.

    Returns:
        The qualified names of the adopted tensors (empty when there were none).

    Example:
        >>> from torch.nn.utils import prune
        >>> lin = nn.Linear(4, 2)
        >>> _ = prune.l1_unstructured(lin, "weight", amount=0.5)
        >>> adopt_torch_pruning(lin), int(get_mask(lin).sum())
        (['weight'], 4)
    """
    adopted = []
    for name, module, tensor_name in torch_pruned(model):
        keep = getattr(module, f"{tensor_name}_mask").detach() != 0
        stored = module._parameters.pop(f"{tensor_name}_orig")
        del module._buffers[f"{tensor_name}_mask"]
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name == tensor_name:
                del module._forward_pre_hooks[key]
        if tensor_name in module.__dict__:  # the masked copy torch's hook left as a plain attribute
            delattr(module, tensor_name)
        module.register_parameter(tensor_name, stored)
        set_mask(module, keep, tensor_name)
        adopted.append(param_name(name, tensor_name))
    return adopted
