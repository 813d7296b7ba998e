"""Example inputs: accepting them, calling a model on them, and comparing its outputs.

Example inputs come as one tensor, a dict of tensors (keyword inputs, as Hugging Face
models take them) or a tuple of positional inputs; everything here takes the three forms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .errors import PruningError


def as_inputs(example_inputs: Any) -> tuple[Any, ...]:
    """Accept one tensor, a dict of tensors (keyword inputs) or a tuple of inputs; return a tuple."""
    if isinstance(example_inputs, (torch.Tensor, dict)):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise PruningError(
        f"example_inputs must be a tensor, a dict of tensors or a tuple of inputs, got {type(example_inputs).__name__}"
    )


def call_model(model: nn.Module, inputs: tuple[Any, ...]) -> Any:
    """``model(*inputs)``, or ``model(**inputs[0])`` for one dict of tensors (Hugging Face)."""
    if len(inputs) == 1 and isinstance(inputs[0], dict):
        return model(**inputs[0])
    return model(*inputs)


def first_tensor(out: Any) -> Any:
    """The main output: the tensor itself, ``last_hidden_state`` or the first element."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    return out


@contextlib.contextmanager
def evaluating(*models: nn.Module) -> Iterator[None]:
    """Eval mode inside; on exit every submodule gets back its own mode (a frozen BatchNorm stays frozen)."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


def run_example(model: nn.Module, inputs: tuple[Any, ...]) -> Any:
    """The model's main output on ``inputs``, in eval mode (modes restored after).

    Raises:
        PruningError: the model fails on them: the caller's ``example_inputs`` are at fault.
    """
    try:
        with evaluating(model):
            return first_tensor(call_model(model, inputs))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise PruningError(f"example_inputs: the model fails on them ({type(exc).__name__}: {exc})") from None


def tolerance(t: Tensor) -> float:
    """Relative tolerance of "the same outputs" for ``t``'s dtype: 1e-2 in 16-bit floats, 1e-4 otherwise."""
    return 1e-2 if t.dtype in (torch.float16, torch.bfloat16) else 1e-4


def difference(out: Tensor, reference: Tensor) -> float:
    """Largest absolute difference (in float32); ``inf`` when the shapes differ, 0 for empty tensors.

    Example:
        >>> difference(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
        0.5
    """
    if out.shape != reference.shape:
        return float("inf")
    return float((out.float() - reference.float()).abs().max()) if reference.numel() else 0.0


def same(out: Tensor, reference: Tensor, rtol: float | None = None) -> bool:
    """Whether ``out`` equals ``reference`` within ``rtol`` (default :func:`tolerance`) of its scale.

    The scale is ``max(1, max |reference|)``: absolute for small outputs, relative for large ones.
    """
    scale = max(1.0, float(reference.abs().max())) if reference.numel() else 1.0
    return difference(out, reference) <= (tolerance(reference) if rtol is None else rtol) * scale


def check_same(reference: Any, out: Any, what: str, rtol: float | None = None) -> None:
    """Raise ``RuntimeError`` (a bug of ``what``, not bad input) when two main outputs differ.

    Outputs that are not tensors are not compared.
    """
    if isinstance(reference, Tensor) and isinstance(out, Tensor) and not same(out, reference, rtol):
        raise RuntimeError(f"{what} changed the model's outputs by {difference(out, reference):.3g}; "
                           "please report this as a bug")
