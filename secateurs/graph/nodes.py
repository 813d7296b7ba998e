"""Helpers shared by the ``torch.fx`` channel analysis: node shapes, labels, freezing."""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from .channels import ChannelGraph, Labels


def shape_of(node: Any) -> tuple[int, ...] | None:
    """The shape recorded by shape propagation for ``node``, or ``None`` when it is not a tensor."""
    meta = getattr(node, "meta", {}).get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def labels_of(arg: Any, env: dict[fx.Node, Any]) -> Labels | None:
    """The channel labels of ``arg`` when it is a node carrying one channel axis."""
    return env.get(arg) if isinstance(arg, fx.Node) and isinstance(env.get(arg), Labels) else None


def flatten_args(args: Any) -> list[Any]:
    """Every leaf of nested args / kwargs."""
    out: list[Any] = []
    fx.node.map_aggregate(args, lambda x: out.append(x))
    return out


def freeze_all(args: Any, env: dict[fx.Node, Any], g: ChannelGraph, reason: str = "") -> None:
    """Freeze every channel that reaches ``args``; ``reason`` says why (default: the op is unknown)."""
    for a in flatten_args(args):
        lab = env.get(a) if isinstance(a, fx.Node) else None
        parts = lab if isinstance(lab, tuple) else (lab,)
        for part in parts:
            if isinstance(part, Labels):
                g.atoms.freeze(part.atoms, reason or "an op secateurs does not follow")


def op_name(node: fx.Node) -> str:
    """A short readable name of ``node``'s op (``torch.flip``, ``.roll()``, ``module 'a.b'``)."""
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_module":
        return f"module {node.target!r}"
    target = node.target
    return f"{getattr(target, '__module__', '') or ''}.{getattr(target, '__name__', target)}".lstrip(".")


def fresh(node: fx.Node, g: ChannelGraph, reason: str = "") -> Labels | None:
    """New frozen atoms for the channel axis (axis 1) of ``node``'s output (an op we cannot follow)."""
    shape = shape_of(node)
    if shape is None or len(shape) < 2:
        return None
    return Labels(1, g.atoms.new(shape[1], frozen=True, reason=reason or f"the output of {op_name(node)}"))


def arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    """Positional argument ``i`` of ``node``, or its keyword ``name``."""
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)
