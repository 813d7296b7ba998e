"""The channel graph: atoms (one per channel), their union–find, and which atoms each module reads and writes.

Built by :mod:`.fx` from a traced model or by :mod:`.structural` from a Hugging Face encoder's
module structure; read by coupled pruning, :func:`secateurs.compact` and neuron merging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class Atoms:
    """Union–find over channel atoms, with a frozen flag per set."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.frozen: list[bool] = []
        self.why: dict[int, str] = {}  # root -> why its set is frozen (the first reason seen)

    def new(self, n: int, frozen: bool = False, reason: str = "an input or output of the model") -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.frozen.extend([frozen] * n)
        if frozen:
            self.why.update(dict.fromkeys(range(start, start + n), reason))
        return list(range(start, start + n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.frozen[ra] = self.frozen[ra] or self.frozen[rb]
            if ra not in self.why and rb in self.why:
                self.why[ra] = self.why[rb]

    def freeze(self, atoms: Sequence[int], reason: str = "an op secateurs does not follow") -> None:
        for a in atoms:
            r = self.find(a)
            self.frozen[r] = True
            self.why.setdefault(r, reason)

    def reason(self, a: int) -> str:
        """Why ``a``'s set is frozen (empty when it is not)."""
        r = self.find(a)
        return self.why.get(r, "an op secateurs does not follow") if self.frozen[r] else ""

    def is_frozen(self, a: int) -> bool:
        return self.frozen[self.find(a)]


@dataclass
class Labels:
    """The atoms along one axis of a tensor (the channel axis)."""

    axis: int
    atoms: list[int]
    ops: frozenset[str] = frozenset()  # the elementwise ops passed through since the producer


@dataclass
class ChannelGraph:
    """Which atom each row / column / norm entry of each module belongs to.

    Attributes:
        atoms: the union–find.
        rows: ``{module name: atom per output row}`` (Linear rows, conv filters, depthwise filters).
        cols: ``{module name: atom per input column}`` (Linear inputs, conv input channels).
        norms: ``{module name: atom per channel}`` for BatchNorm layers.
        depthwise: names of depthwise convs (their rows follow their input channels).
        heads: ``{attention module: (atom per q/k/v row, head size)}`` for BERT-style attention,
            whose head count changes with its rows.
        via: ``{consumer module: ops between its input and the layers producing it}``.
        attention: names of packed multi-head attention modules; their ``rows`` are the rows
            of ``in_proj_weight`` (q, then k, then v) and their heads are removed by replacing
            them with :class:`.attention.PrunedMultiheadAttention`.
        hidden: whether the residual stream is followed (``sc.prune(..., hidden=True)``): LayerNorms /
            RMSNorms over channels then pass their channels on instead of freezing them.
        stats: names of the norms over channels in ``norms`` (they normalise over the kept channels,
            :mod:`secateurs.modules.norms`); only with ``hidden``.
        params: ``{qualified parameter name: (axis, atom per entry along it, masked)}``: other parameters
            with one entry per channel (embeddings, position embeddings, a class token, a layer-scale
            ``gamma``), sliced with their channels; ``masked`` when a removed channel's entries must be
            zeroed (added to the channel, not multiplied). Only with ``hidden``.
    """

    atoms: Atoms
    rows: dict[str, list[int]] = field(default_factory=dict)
    cols: dict[str, list[int]] = field(default_factory=dict)
    norms: dict[str, list[int]] = field(default_factory=dict)
    depthwise: set[str] = field(default_factory=set)
    heads: dict[str, tuple[list[int], int]] = field(default_factory=dict)
    attention: set[str] = field(default_factory=set)
    via: dict[str, frozenset[str]] = field(default_factory=dict)
    hidden: bool = False
    stats: set[str] = field(default_factory=set)
    params: dict[str, tuple[int, list[int], bool]] = field(default_factory=dict)
    stream: str = ""  # with ``hidden``: why the residual stream could not be followed ("" when it was)

    def units(self) -> dict[int, list[tuple[str, int]]]:
        """Removable coupled channels: ``{root: [(module, row), ...]}`` over non-frozen roots."""
        out: dict[int, list[tuple[str, int]]] = {}
        for name, atoms in self.rows.items():
            for i, a in enumerate(atoms):
                if not self.atoms.is_frozen(a):
                    out.setdefault(self.atoms.find(a), []).append((name, i))
        return out
