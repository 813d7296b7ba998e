"""Hugging Face in, Hugging Face out: a pruned (or compacted) model as a standard ``from_pretrained`` folder.

:func:`export_hf` bakes the masks into a copy of the model, writes the new widths of a
compacted model into its config — ``num_attention_heads`` / ``n_head`` / ``n_heads``,
``num_key_value_heads``, ``head_dim`` when heads were removed, ``intermediate_size`` /
``n_inner`` / ``hidden_dim`` when MLP neurons were, ``hidden_size`` / ``n_embd`` / ``dim`` when the residual
stream was (``sc.prune(..., hidden=True)``) — and saves it with the model's own
``save_pretrained``, so ``AutoModel.from_pretrained(out_dir)`` loads it with ``transformers``
alone. A config holds one size per kind for all layers: the layers must agree, and before
anything is written the shapes of a model built from the new config are compared with the
model's own, so a folder is never written that ``from_pretrained`` would load differently.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import masking
from ..errors import PruningError
from ..graph.patterns import attention_blocks, mlp_blocks
from ..modules import norms

HEADS = ("num_attention_heads", "n_head", "n_heads")
KV_HEADS = ("num_key_value_heads",)
MLP = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim")
HIDDEN = ("hidden_size", "n_embd", "dim", "d_model")
FOLLOWS_HIDDEN = ("pooler_output_size",)


def _uniform(kind: str, sizes: dict[str, int]) -> int | None:
    """The one size all layers share, or an error naming the layers that differ."""
    values = set(sizes.values())
    if len(values) > 1:
        detail = ", ".join(f"{n}: {v}" for n, v in sizes.items())
        raise PruningError(
            f"export_hf: the layers keep different {kind} ({detail}) and a Hugging Face config holds one "
            f"size for all layers; prune with scope='local' (every layer loses the same fraction) or "
            f"save with sc.save"
        )
    return values.pop() if values else None


def compacted_sizes(model: nn.Module) -> dict[str, int]:
    """``{"heads", "kv_heads", "head_dim", "mlp", "hidden"}``: the sizes every recognised block has now."""
    attn = attention_blocks(model)
    out: dict[str, int] = {}
    for key, sizes in (("heads", {a.holder: a.heads for a in attn}), ("kv_heads", {a.holder: a.kv_heads for a in attn}),
                       ("head_dim", {a.holder: a.head_size for a in attn}),
                       ("mlp", {m.out: m.width for m in mlp_blocks(model)}),
                       ("hidden", {a.q: _inputs(model.get_submodule(a.q)) for a in attn})):
        value = _uniform(key.replace("_", " "), sizes)
        if value is not None:
            out[key] = value
    return out


def _inputs(layer: nn.Module) -> int:
    """Input features of a Linear or Conv1D (the residual stream's width, for a q projection)."""
    return int(masking.as_rows(layer, masking.original(layer)).shape[1])


def _set_first(config: Any, names: tuple[str, ...], value: int) -> None:
    for name in names:  # GPT-2's n_inner is None until set (4 x n_embd)
        if hasattr(config, name) and (getattr(config, name) is None or isinstance(getattr(config, name), int)):
            setattr(config, name, value)
            return


def updated_config(model: nn.Module) -> Any:
    """A copy of ``model.config`` with the sizes of the compacted blocks."""
    config = copy.deepcopy(model.config)
    sizes = compacted_sizes(model)
    heads = next((getattr(config, n) for n in HEADS if isinstance(getattr(config, n, None), int)), None)
    if "heads" in sizes and heads is not None and sizes["heads"] != heads:
        config.head_dim = sizes["head_dim"]  # kept: the config would otherwise derive it from hidden_size / heads
        _set_first(config, HEADS, sizes["heads"])
        _set_first(config, KV_HEADS, sizes["kv_heads"])
    if "mlp" in sizes:
        _set_first(config, MLP, sizes["mlp"])
    old = next((getattr(config, n) for n in HIDDEN if isinstance(getattr(config, n, None), int)), None)
    if "hidden" in sizes and old is not None and sizes["hidden"] != old:
        _set_first(config, HIDDEN, sizes["hidden"])
        for name in FOLLOWS_HIDDEN:  # sizes a config keeps apart that equal the hidden size (ViT's pooler)
            if getattr(config, name, None) == old:
                setattr(config, name, sizes["hidden"])
    return config


def _check_shapes(model: nn.Module, config: Any) -> None:
    """A model built from ``config`` must have the model's parameter shapes (built on the meta device)."""
    with torch.device("meta"):
        fresh = type(model)(config)
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, value in fresh.state_dict().items():
        if key in mine and tuple(value.shape) != mine[key]:
            raise PruningError(
                f"export_hf: {type(model).__name__}'s config cannot express the compacted sizes: built from it, "
                f"{key} would be {tuple(value.shape)}, the model has {mine[key]} (models that derive their head "
                "size from hidden_size / heads, as BERT, RoBERTa, DistilBERT and GPT-2 do, can export pruned MLP "
                "neurons but not pruned heads: exclude the attention projections with layers=, or save with sc.save)"
            )


def export_hf(model: nn.Module, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a folder that ``transformers``' ``from_pretrained`` loads alone.

    The masks are baked into a copy (``model`` is unchanged), the config gets the compacted
    sizes, and the folder is written beside ``out_dir`` and renamed into place (an existing
    ``out_dir`` is replaced only once the new one is complete).

    Args:
        model: a ``transformers`` ``PreTrainedModel``, pruned and possibly compacted.
        out_dir: the folder to write.

    Returns:
        The folder written.

    Raises:
        PruningError: ``model`` is not a ``transformers`` model, its layers keep different
            sizes, or its config cannot express them (the message names the layers or tensor).
    """
    if not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise PruningError(
            f"export_hf needs a transformers PreTrainedModel, got {type(model).__name__}; "
            "save other models with sc.save (or state_dict plus their new widths)"
        )
    hooked = norms.hooked(model)
    if hooked:
        raise PruningError(f"export_hf: the residual stream was pruned (hidden=True) and {len(hooked)} norms "
                           f"({hooked[0]}, ...) normalise over its kept channels, which a config cannot express; "
                           "export the compacted model: sc.export_hf(sc.compact(model, example_inputs), out_dir)")
    baked = masking.finalize(copy.deepcopy(model))
    config = updated_config(baked)
    _check_shapes(baked, config)
    baked.config = config
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        baked.save_pretrained(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace(new: Path, out: Path) -> None:
    """Move the folder ``new`` to ``out``; an old ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
