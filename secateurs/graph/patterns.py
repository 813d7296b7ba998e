"""Attention and MLP blocks found by their projections: one recogniser for many transformer families.

``torch.fx`` cannot trace Hugging Face models, and it traces torch's own
``nn.TransformerEncoderLayer`` into ops whose channels it must keep. Their blocks are recognised here instead, from the names
and shapes of their projections (a small table, not one file per family):

===================  =========================================  ===============================
block                projections (relative to the block)        families
===================  =========================================  ===============================
attention, separate  ``query/key/value`` + ``output.dense``      BERT, RoBERTa, ViT (HF)
                     ``q_lin/k_lin/v_lin/out_lin``               DistilBERT
                     ``q_proj/k_proj/v_proj/o_proj``             Llama, Mistral, Qwen2 (GQA)
attention, fused     ``c_attn`` + ``c_proj`` (Conv1D)            GPT-2
                     ``qkv`` + ``proj``                          timm ViT, DeiT, Swin
attention, packed    ``nn.MultiheadAttention``                   torch Transformer layers
MLP                  in -> activation -> out                     every family above
MLP, gated           ``act(gate) * up`` -> ``down``              Llama, Mistral, Qwen2
===================  =========================================  ===============================

A block matches when its projections exist, are Linear (or ``transformers`` Conv1D) and their
shapes agree (q's outputs are o's inputs, k and v have the same width, a whole number of heads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .. import masking

SEPARATE: tuple[tuple[str, str, str, str, str], ...] = (
    # q, k, v, output, the module holding the head count ("" = the block itself)
    ("self.query", "self.key", "self.value", "output.dense", "self"),
    ("attention.query", "attention.key", "attention.value", "output.dense", "attention"),
    ("q_lin", "k_lin", "v_lin", "out_lin", ""),
    ("q_proj", "k_proj", "v_proj", "o_proj", ""),
)
FUSED: tuple[tuple[str, str], ...] = (("c_attn", "c_proj"), ("qkv", "proj"))
MIXING = ("norm", "gate")
"""Submodules of a fused attention block between its heads and its output projection (timm's ``scale_norm``
LayerNorm over every head, its sigmoid ``gate`` Linear): when one is present (not ``nn.Identity``), a removed
head would change the others' outputs, so the heads are kept and the block says why."""
HEAD_PARAMS = {"relative_position_bias_table": 1}
"""Parameters of an attention module with one slice per head: ``{name: axis of the heads}`` (Swin's relative
position biases). Compaction keeps the slices of the heads it keeps."""
ACTIVATIONS = ("act", "act_fn", "activation", "activation_fn", "intermediate_act_fn")
"""Where the activation between an MLP's projections is found: an attribute of the block or of its first
projection's parent."""
MLPS: tuple[tuple[tuple[str, ...], str], ...] = (
    # inputs (a gate first when two), output
    (("intermediate.dense",), "output.dense"),  # BERT, RoBERTa
    (("gate_proj", "up_proj"), "down_proj"),  # Llama, Mistral, Qwen2
    (("lin1",), "lin2"),  # DistilBERT
    (("c_fc",), "c_proj"),  # GPT-2
    (("fc1",), "fc2"),  # ViT (HF and timm), Swin
    (("linear1",), "linear2"),  # torch Transformer layers
)
HEAD_SIZE = ("attention_head_size", "head_dim", "head_size")
SCALED = ("num_attention_heads", "num_heads", "n_heads", "n_head", "num_key_value_heads", "num_kv_heads",
          "all_head_size", "split_size", "attn_dim")
"""Integer attributes of an attention module that count its heads (or their total width): compaction
scales them by the fraction of heads kept (whole key/value groups go, so q and kv counts shrink alike)."""
TORCH_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


@dataclass(frozen=True)
class Attention:
    """One attention block: its projections' module names and its head layout.

    ``q`` holds one name for a fused projection (rows ``[q | k | v]``), or is the packed
    ``nn.MultiheadAttention`` itself when ``packed``.
    """

    q: str
    k: str | None
    v: str | None
    out: str
    holder: str
    head_size: int
    heads: int
    kv_heads: int
    packed: bool = False
    kept: str = ""  # why the heads cannot be removed ("" when they can)


@dataclass(frozen=True)
class Mlp:
    """One MLP block: the layers producing its neurons (a gate first), the one reading them."""

    inputs: tuple[str, ...]
    out: str
    activation: Callable[..., object] | None
    width: int
    kept: str = ""  # why the neurons cannot be removed ("" when they can)


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}.{rel}" if prefix and rel else prefix or rel


def _proj(root: nn.Module, name: str) -> nn.Module | None:
    try:
        m = root.get_submodule(name)
    except AttributeError:
        return None
    return m if isinstance(m, nn.Linear) or masking.transposed(m) else None


def _width(m: nn.Module, out: bool = True) -> int:
    """Output (or input) features of a Linear or Conv1D."""
    rows = masking.as_rows(m, masking.original(m))
    return int(rows.shape[0] if out else rows.shape[1])


def _head_size(holder: nn.Module) -> int | None:
    for attr in HEAD_SIZE:
        v = getattr(holder, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _separate(model: nn.Module, name: str, block: nn.Module) -> Iterator[Attention]:
    for q, k, v, o, holder in SEPARATE:
        mods = [_proj(block, p) for p in (q, k, v, o)]
        if any(m is None for m in mods):
            continue
        size = _head_size(block.get_submodule(holder) if holder else block)
        wq, wk, wv, wo = _width(mods[0]), _width(mods[1]), _width(mods[2]), _width(mods[3], out=False)
        if size is None or wq != wo or wk != wv or wq % size or wk % size or (wq // size) % (wk // size):
            continue
        yield Attention(_join(name, q), _join(name, k), _join(name, v), _join(name, o), _join(name, holder),
                        size, wq // size, wk // size)


def _fused(name: str, block: nn.Module) -> Iterator[Attention]:
    for qkv, o in FUSED:
        a, b = _proj(block, qkv), _proj(block, o)
        heads = next((getattr(block, h) for h in ("num_heads", "n_head") if isinstance(getattr(block, h, None), int)),
                     None)
        if a is None or b is None or not heads:
            continue
        width = _width(b, out=False)
        if _width(a) != 3 * width or width % heads:
            continue
        yield Attention(_join(name, qkv), None, None, _join(name, o), name, width // heads, heads, heads,
                        kept=_mixing(name, block))


def _mixing(name: str, block: nn.Module) -> str:
    """Why a block's units cannot be removed: a module between them and the output projection that mixes them."""
    for attr in MIXING:
        m = getattr(block, attr, None)
        if isinstance(m, nn.Module) and not isinstance(m, nn.Identity):
            return f"{type(m).__name__} {_join(name, attr)!r} between them and the output projection, not followed"
    return ""


def attention_blocks(model: nn.Module) -> list[Attention]:
    """Every attention block of ``model`` the table recognises, in model order."""
    out: list[Attention] = []
    inside_torch_layer = {id(m.self_attn) for m in model.modules() if isinstance(m, TORCH_LAYERS)}
    inside_torch_layer |= {id(m.multihead_attn) for m in model.modules() if isinstance(m, nn.TransformerDecoderLayer)}
    for name, block in model.named_modules():
        if isinstance(block, nn.MultiheadAttention):
            if id(block) in inside_torch_layer and block._qkv_same_embed_dim and block.in_proj_weight is not None:
                out.append(Attention(name, None, None, f"{name}.out_proj", name, block.head_dim,
                                     block.num_heads, block.num_heads, packed=True))
            continue
        out.extend(_separate(model, name, block))
        out.extend(_fused(name, block))
    return out


def mlp_blocks(model: nn.Module) -> list[Mlp]:
    """Every MLP block of ``model`` the table recognises, in model order."""
    out = []
    for name, block in model.named_modules():
        for inputs, o in MLPS:
            ins = [_proj(block, p) for p in inputs]
            last = _proj(block, o)
            if last is None or any(m is None for m in ins):
                continue
            widths = {_width(m) for m in ins}
            if widths != {_width(last, out=False)}:
                continue
            parent = block.get_submodule(inputs[0].rpartition(".")[0]) if "." in inputs[0] else block
            fns = [getattr(h, a, None) for h in (block, parent) for a in ACTIVATIONS]
            fn = next((f for f in fns if callable(f)), None)
            out.append(Mlp(tuple(_join(name, p) for p in inputs), _join(name, o), fn, widths.pop(),
                           kept=_mixing(name, block) if inputs == ("fc1",) else ""))
            break
    return out


def keeps_zero(fn: Callable[..., object] | None) -> bool:
    """Whether an activation maps 0 to 0 (a neuron with zero inputs then outputs exactly 0)."""
    if fn is None:
        return False
    try:
        with torch.no_grad():
            out = fn(torch.zeros(1))
    except Exception:  # an activation that wants other arguments: not known to keep zero
        return False
    return isinstance(out, torch.Tensor) and bool(out.abs().max() == 0)
