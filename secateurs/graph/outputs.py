"""The model's output layers: the prunable layers whose output rows are the model's outputs.

Removing an output neuron of such a layer removes one of the model's outputs (a class logit), which
no training can repair; :func:`secateurs.prune` keeps them whole unless the user names them. With
``example_inputs`` the channel graph (:mod:`.fx`) freezes them; without, :func:`output_layers` finds
them on a symbolic trace that needs no inputs.
"""

from __future__ import annotations

from collections.abc import Collection

from torch import fx, nn

from .fx import LeafTracer

__all__ = ["output_layers"]


def output_layers(model: nn.Module, layers: Collection[str]) -> list[str] | None:
    """The names among ``layers`` (module names) whose outputs reach the model's output with none of
    ``layers`` in between (through activations, flattening, additions, anything else).

    Returns:
        Those names (empty for a container with no ``forward`` of its own, such as ``nn.ModuleDict``,
        which has no output), or ``None`` when torch.fx cannot trace the model.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Softmax(dim=1))
        >>> output_layers(net, ["0", "2"])
        ['2']
    """
    if type(model).forward is nn.Module.forward:
        return []
    try:
        graph = LeafTracer(layers).trace(model)
    except Exception:  # fx raises many types; the caller says that the model could not be traced
        return None
    found: set[str] = set()
    seen: set[fx.Node] = set()
    stack = [n for n in graph.nodes if n.op == "output"]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and node.target in layers:
            found.add(str(node.target))
            continue
        stack.extend(node.all_input_nodes)
    return [name for name in layers if name in found]
