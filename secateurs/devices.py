"""Where work runs: ``device: auto | cpu | cuda[:N]`` (recipes, the command line), and moving batches there.

``auto`` is a GPU when torch sees one (under ``torchrun``, the one ``LOCAL_RANK`` numbers for this process),
the CPU otherwise. ``cuda`` asks for a GPU and is an error without one; ``cuda:N`` names one.

Example:
    >>> resolve("cpu")
    device(type='cpu')
    >>> move({"x": torch.ones(1), "n": 3}, torch.device("cpu"))["n"]
    3
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import PruningError

__all__ = ["ALLOWED", "check", "describe", "move", "of", "resolve"]

ALLOWED = "auto, cpu, cuda or cuda:N"
"""What a device setting may say, as error messages and help texts name it."""

_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")


def check(spec: str, what: str = "device") -> str:
    """``spec`` itself when it is one of :data:`ALLOWED` (whether the machine has it is not asked here).

    Raises:
        PruningError: naming ``what``, the value and the allowed ones.
    """
    if not isinstance(spec, str) or not _SPEC.fullmatch(spec.strip().lower()):
        raise PruningError(f"{what} must be {ALLOWED}, got {spec!r}")
    return spec.strip().lower()


def _local_rank() -> int:
    """The GPU number torchrun gives this process (``LOCAL_RANK``), 0 when not launched by it."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise PruningError(f"LOCAL_RANK must be an integer, got {os.environ['LOCAL_RANK']!r}") from None


def _launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1")


def resolve(spec: str = "auto", what: str = "device") -> torch.device:
    """The device ``spec`` names on this machine.

    Under ``torchrun`` (``WORLD_SIZE > 1``), ``auto`` and ``cuda`` mean this process's own GPU,
    ``cuda:LOCAL_RANK``; naming one GPU for every process (``cuda:N``) is refused, as the processes
    would share it.

    Raises:
        PruningError: a value that is not one of :data:`ALLOWED`, a GPU asked for on a machine without one,
            or a GPU number the machine does not have.
    """
    spec = check(spec, what)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PruningError(f"{what} {spec!r} asks for a GPU, but torch sees none (torch {torch.__version__}, "
                           f"CUDA {torch.version.cuda or 'not built in'}); use {what} cpu or auto")
    if ":" in spec and _launched():
        raise PruningError(f"{what} {spec!r} under torchrun would put every process on one GPU; use {what} cuda "
                           f"or auto (each process takes GPU LOCAL_RANK)")
    index = int(spec.split(":")[1]) if ":" in spec else (_local_rank() if _launched() else torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise PruningError(f"{what} {spec!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                           f"numbered from 0")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """``"cpu"``, or ``"cuda:0 (NVIDIA H200)"``: what a run prints and records."""
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def move(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (also inside tuples, lists and mappings) on ``device``; other values
    as they are. Tensors already there are returned themselves, not copied."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):  # a dict of tensors (Hugging Face batches): a plain dict
        return {k: move(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
        return type(obj)(*(move(v, device) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(move(v, device) for v in obj)
    return obj

