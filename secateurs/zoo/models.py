"""Model builders, registered by name."""

from __future__ import annotations

import inspect
import itertools
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import PruningError

ARCH_ATTR = "secateurs_arch"
"""The model attribute recording how a zoo model was built (name, arguments, input shape), saved in its file."""

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INPUTS: dict[str, Callable[[dict[str, Any]], tuple[int, ...]]] = {}


def _flat_input(args: dict[str, Any]) -> tuple[int, ...]:
    return (1, int(args["in_features"]))


def _register(
    name: str, input_shape: Callable[[dict[str, Any]], tuple[int, ...]] = _flat_input
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder and how to make one example input from its arguments."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[name] = fn
        _INPUTS[name] = input_shape
        return fn

    return deco


def mlp(in_features: int, widths: Sequence[int], num_classes: int) -> nn.Sequential:
    """Flatten, then ``fc1 … fcN`` with ReLU between, the last one giving the logits."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    sizes = [in_features, *widths, num_classes]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        if i < len(sizes) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    return nn.Sequential(layers)


@_register("lenet-300-100")
def lenet_300_100(in_features: int = 784, num_classes: int = 10) -> nn.Module:
    """LeNet-300-100 (LeCun et al., 1998): a 784-300-100-10 fully connected network."""
    return mlp(in_features, (300, 100), num_classes)


@_register("mlp")
def mlp_model(in_features: int = 784, widths: Sequence[int] = (256, 128), num_classes: int = 10) -> nn.Module:
    """A fully connected network with configurable hidden ``widths``."""
    if not widths or any(int(w) < 1 for w in widths):
        raise PruningError(f"mlp widths must be positive integers, got {list(widths)!r}")
    return mlp(in_features, [int(w) for w in widths], num_classes)


@_register("lenet-5", lambda a: (1, int(a["in_channels"]), int(a["image_size"]), int(a["image_size"])))
def lenet_5(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, for 28×28 images."""
    side = (image_size // 2 - 4) // 2
    if side < 1:
        raise PruningError(f"lenet-5 needs images of at least 12x12 pixels, got image_size={image_size}")
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(in_channels, 6, 5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
        fc1=nn.Linear(16 * side * side, 120), relu3=nn.ReLU(),
        fc2=nn.Linear(120, 84), relu4=nn.ReLU(),
        fc3=nn.Linear(84, num_classes),
    ))


MAX_INPUT = 2**24
"""The most entries an example input may have (64 MiB of float32): a larger ``image_size`` is refused."""


def memory_limit() -> int:
    """Bytes a model's parameters and buffers may take: half of this machine's memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # not a POSIX system: a fixed 8 GiB
        return 8 * 2**30


def _shown(kwargs: dict[str, Any]) -> str:
    text = repr(kwargs)
    return text if len(text) <= 80 else text[:77] + "..."


def _build(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return _BUILDERS[name](**kwargs)
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:  # torch's size checks raise these
        raise PruningError(f"bad arguments for model {name!r}: {' '.join(str(exc).split())[:200]}") from None


def _check_size(name: str, kwargs: dict[str, Any]) -> None:
    """Build the model on the ``meta`` device (no memory) and refuse it when its tensors would not fit."""
    with torch.device("meta"):
        probe = _build(name, kwargs)
    size = sum(t.numel() * t.element_size() for t in itertools.chain(probe.parameters(), probe.buffers()))
    if size > memory_limit():
        raise PruningError(f"model {name!r} with {_shown(kwargs)} needs {size / 2**30:.1f} GiB for its weights; "
                           f"this machine allows {memory_limit() / 2**30:.1f} GiB: choose smaller model_args")


def _input_shape(name: str, full: dict[str, Any]) -> list[int]:
    shape = [int(v) for v in _INPUTS[name](full)]
    if math.prod(shape) > MAX_INPUT:
        raise PruningError(f"model {name!r}: an example input of shape {shape} has more than {MAX_INPUT:,} entries; "
                           f"choose a smaller image_size / in_features")
    return shape


def for_data(name: str, input_shape: Sequence[int], num_classes: int) -> dict[str, int]:
    """The arguments that fit model ``name`` to a data set of ``input_shape`` (one example) and ``num_classes``:
    ``in_channels`` and ``image_size`` for image models, ``in_features`` for flat ones."""
    if name not in _BUILDERS:
        raise PruningError(f"unknown model {str(name)[:60]!r}; allowed: {', '.join(models())}")
    takes = inspect.signature(_BUILDERS[name]).parameters
    fit: dict[str, int] = {"num_classes": int(num_classes)}
    if "in_features" in takes:
        fit["in_features"] = math.prod(int(v) for v in input_shape)
    if "image_size" in takes:
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise PruningError(f"model {name!r} takes square images (channels, side, side); the data set's "
                               f"examples have shape {tuple(input_shape)}")
        fit["in_channels"], fit["image_size"] = int(input_shape[0]), int(input_shape[-1])
    return fit


def models() -> list[str]:
    """Names of the bundled models."""
    return sorted(_BUILDERS)


def arguments(name: str) -> dict[str, Any]:
    """The arguments model ``name`` takes (``model_args``) with their defaults (``None`` when it has none).

    Example:
        >>> arguments("lenet-300-100")
        {'in_features': 784, 'num_classes': 10}
    """
    if name not in _BUILDERS:
        raise PruningError(f"unknown model {str(name)[:60]!r}; allowed: {', '.join(models())}")
    params = inspect.signature(_BUILDERS[name]).parameters.values()
    return {p.name: None if p.default is inspect.Parameter.empty else p.default for p in params}


def model(name: str, **kwargs: Any) -> nn.Module:
    """Build a bundled model by name; it remembers ``name`` and ``kwargs`` for saving.

    The model is first built on the ``meta`` device (no memory): arguments asking for more than
    :func:`memory_limit` bytes of weights, or an example input of more than :data:`MAX_INPUT` entries,
    are refused before anything is allocated.

    Raises:
        PruningError: an unknown name, arguments the builder does not take, or a model too large.
    """
    if name not in _BUILDERS:
        raise PruningError(f"unknown model {str(name)[:60]!r}; allowed: {', '.join(models())}")
    try:
        bound = inspect.signature(_BUILDERS[name]).bind(**kwargs)
    except TypeError as exc:
        raise PruningError(f"bad arguments for model {name!r}: {exc}") from None
    bound.apply_defaults()
    full = {k: list(v) if isinstance(v, tuple) else v for k, v in bound.arguments.items()}
    for key, value in full.items():
        ints = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in ints):
            raise PruningError(f"model {name!r}: {key} must be an integer (or a list of them), got {str(value)[:60]}")
    _check_size(name, kwargs)  # the builder checks its arguments' ranges, on meta tensors
    shape = _input_shape(name, full)
    net = _build(name, kwargs)
    setattr(net, ARCH_ATTR, {"name": name, "kwargs": full, "input_shape": shape})
    return net


def example_inputs(net: nn.Module) -> tuple[Tensor, ...] | None:
    """One random example input for a zoo-built model, or ``None`` for other models."""
    arch = getattr(net, ARCH_ATTR, None)
    if not arch or "input_shape" not in arch:
        return None
    return (torch.randn(*arch["input_shape"], generator=torch.Generator().manual_seed(0)),)
