"""``runtime``: input-dependent channel gating of convolutions, decided per input."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field
from torch.utils.data import DataLoader

from ...surgery.gates import average_flops, wrap_convs
from ...surgery.records import record
from .base import register
from .fields import Training

if TYPE_CHECKING:
    from torch import nn

    from .context import Row, StageContext


@register
class Runtime(Training):
    """Gate each Conv2d's channels per input (runtime pruning): a small side network picks the ``keep`` best.

    The gated model trains ``epochs`` epochs; its row reports the FLOPs spent per test input against the dense
    ones (``"runtime <i>: <n> gated convs, keep <k>"``), then ``"runtime <i>"``. Its gates are decided per
    input, so ``export.compact`` cannot follow it.
    """

    name: ClassVar[str] = "runtime"
    example: ClassVar[dict[str, Any]] = {"schedule": "runtime", "epochs": 1}
    blocks_compact: ClassVar[str | None] = "its gates are decided per input"

    schedule: Literal["runtime"] = Field("runtime", description="runtime: per-input channel gating of convolutions")
    keep: float = Field(0.5, gt=0, le=1, description="fraction of each conv's channels computed per input")
    layers: dict[str, float | None] = Field(default_factory=dict,
                                            description="convs to gate: the names or glob patterns given a "
                                                        "non-null value; every Conv2d when there are none")

    def check(self, model: nn.Module) -> None:
        """The convs to gate exist (on a copy: wrapping changes the model)."""
        wrap_convs(copy.deepcopy(model), self.keep, layers=[k for k, v in self.layers.items() if v is not None] or None)

    def prune_while_training(self, ctx: StageContext) -> list[Row]:
        patterns = [k for k, v in self.layers.items() if v is not None] or None
        names = wrap_convs(ctx.model, self.keep, layers=patterns)
        ctx.fit(self.epochs, self.name)
        hidden = ctx.model.get_submodule(names[0]).saliency[2].out_features
        record(ctx.model, {n: {"runtime": {"keep": self.keep, "hidden": hidden}} for n in names})
        flops = average_flops(ctx.model, DataLoader(ctx.test_data, batch_size=256))
        return [{"name": f"runtime {ctx.index}: {len(names)} gated convs, keep {self.keep:g}",
                 "accuracy": ctx.accuracy(ctx.model), "sparsity": 0.0, "flops_per_input": flops.spent,
                 "flops_per_input_dense": flops.dense}]
