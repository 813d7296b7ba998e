"""Latency lookup tables: the measured time of one layer at given widths, cached on disk per machine.

A :class:`LayerSpec` is one prunable layer (a Conv1d/2d/3d or a Linear) at given input and output channel
counts, with everything else that sets its cost (kernel, stride, groups, the input's spatial size, the
batch). A :class:`LatencyTable` maps specs to a :class:`~.timing.Timing`, measuring each spec the first time
it is asked for, by running a freshly built layer of that shape in isolation on random inputs. The table
lives in ``<cache dir>/latency/<key>.json``, one file per :func:`~.timing.machine` (processor, device,
dtype, batch size, thread count, torch version), written atomically and merged with what another process
wrote meanwhile, so a second run on the same machine measures nothing again.

The cache directory is ``$SECATEURS_CACHE``, else ``$XDG_CACHE_HOME/secateurs``, else ``~/.cache/secateurs``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PruningError
from ..files import write_text
from .timing import Timing, machine, machine_key, time_call

__all__ = ["LatencyTable", "LayerSpec", "cache_dir", "spec_of"]

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


@dataclass(frozen=True)
class LayerSpec:
    """One layer's shape: what its time depends on.

    Attributes:
        kind: ``"conv"`` or ``"linear"``.
        c_in: input channels (features).
        c_out: output channels (features).
        size: the input's spatial size (conv), or the rows a Linear sees besides the batch (``(tokens,)``).
        batch: the batch size.
        kernel, stride, padding, dilation: as the conv's (empty for a Linear).
        depthwise: one group per channel (``c_in == c_out == groups``).
        bias: whether it has a bias.
    """

    kind: str
    c_in: int
    c_out: int
    size: tuple[int, ...]
    batch: int
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    depthwise: bool = False
    bias: bool = True

    def at(self, c_in: int, c_out: int) -> LayerSpec:
        """The same layer with other channel counts (a depthwise conv keeps ``c_in == c_out``)."""
        if self.depthwise:
            c_in = c_out
        return replace(self, c_in=max(1, c_in), c_out=max(1, c_out))

    def key(self) -> str:
        """A stable text key (the JSON of the fields)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def build(self, device: torch.device | str, dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
        """A fresh layer of this shape and a random input for it."""
        if self.kind == "linear":
            layer: nn.Module = nn.Linear(self.c_in, self.c_out, bias=self.bias)
            x = torch.randn(self.batch, *self.size, self.c_in)
        else:
            layer = CONVS[len(self.size)](self.c_in, self.c_out, self.kernel, self.stride, self.padding,
                                          self.dilation, groups=self.c_in if self.depthwise else 1, bias=self.bias)
            x = torch.randn(self.batch, self.c_in, *self.size)
        return layer.to(device=device, dtype=dtype).eval(), x.to(device=device, dtype=dtype)


def spec_of(module: nn.Module, input_shape: tuple[int, ...]) -> LayerSpec | None:
    """The :class:`LayerSpec` of a plain Conv1d/2d/3d or Linear fed ``input_shape``; ``None`` for another layer
    (a grouped conv that is not depthwise, an attention block), whose time the table does not model."""
    if isinstance(module, nn.Linear):
        return LayerSpec("linear", module.in_features, module.out_features, tuple(input_shape[1:-1]),
                         input_shape[0], bias=module.bias is not None)
    conv = next((k for k in CONVS.values() if type(module) is k), None)
    if conv is None or isinstance(module.padding, str):
        return None
    depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
    if module.groups > 1 and not depthwise:
        return None
    return LayerSpec("conv", module.in_channels, module.out_channels, tuple(input_shape[2:]), input_shape[0],
                     tuple(module.kernel_size), tuple(module.stride), tuple(module.padding),
                     tuple(module.dilation), depthwise, module.bias is not None)


def cache_dir() -> Path:
    """Where latency tables are kept (see the module's docstring)."""
    if os.environ.get("SECATEURS_CACHE"):
        return Path(os.environ["SECATEURS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "secateurs"


Measure = Callable[[LayerSpec], Timing]
"""How a table measures one spec it does not hold yet (tests give a deterministic one)."""


class LatencyTable:
    """Measured layer latencies of one machine, device, dtype, batch size and thread count, cached on disk.

    Args:
        device: where layers run.
        dtype: their dtype.
        batch_size: the batch the specs are measured at (part of the key).
        folder: the cache directory (default :func:`cache_dir`); ``None`` keeps the table in memory only.
        measure: how to time a spec; default: build it (:meth:`LayerSpec.build`) and time it alone
            (:func:`~.timing.time_call`).

    Example:
        >>> t = LatencyTable(batch_size=1, folder=None, measure=lambda s: Timing(s.c_out / 10, 0.0, 3))
        >>> t.get(LayerSpec("linear", 4, 20, (), 1)).ms, t.measured
        (2.0, 1)
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int = 1, folder: str | os.PathLike[str] | None | bool = True,
                 measure: Measure | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PruningError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.device, self.dtype = torch.device(device), dtype
        self.machine = machine(self.device, dtype, batch_size)
        self.key = machine_key(self.machine)
        folder = cache_dir() if folder is True else folder
        self.path = None if folder in (None, False) else Path(folder) / "latency" / f"{self.key}.json"
        self.entries: dict[str, Timing] = self._read()
        self.measured = 0  # specs measured by this table (not found in the cache)
        self._measure = measure or self._time

    def _read(self) -> dict[str, Timing]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {k: Timing(float(v["ms"]), float(v["spread_ms"]), int(v["n"])) for k, v in raw["entries"].items()}
        except (ValueError, KeyError, TypeError):  # a damaged file is measured again, not trusted
            return {}

    def _time(self, spec: LayerSpec) -> Timing:
        layer, x = spec.build(self.device, self.dtype)
        with torch.inference_mode():
            return time_call(lambda: layer(x), repeats=7, warmup=1, budget_s=0.3, device=self.device)

    def get(self, spec: LayerSpec) -> Timing:
        """The spec's timing, measured now if the table does not hold it."""
        key = spec.key()
        if key not in self.entries:
            self.entries[key] = self._measure(spec)
            self.measured += 1
        return self.entries[key]

    def save(self) -> Path | None:
        """Write the table (merged with entries another process saved meanwhile) atomically; its path."""
        if self.path is None:
            return None
        merged = {**self._read(), **self.entries}
        body = {"machine": self.machine, "entries": {k: v.as_dict() for k, v in sorted(merged.items())}}
        write_text(self.path, json.dumps(body, indent=1) + "\n")
        return self.path

    def as_dict(self) -> dict[str, Any]:
        """The machine and the number of entries, for results and reports."""
        return {"key": self.key, "machine": self.machine, "entries": len(self.entries), "path": str(self.path)}
