"""Multi-head attention with some heads removed.

``nn.MultiheadAttention`` requires ``embed_dim == num_heads · head_dim`` for its
query projection, so a model whose heads are removed needs another module:
:class:`PrunedMultiheadAttention` keeps the same parameter names
(``in_proj_weight``, ``in_proj_bias``, ``out_proj``) with ``3 · heads · head_dim``
projection rows, and computes what ``nn.MultiheadAttention`` computes for the
heads it keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrunedMultiheadAttention(nn.Module):
    """Self/cross attention over ``num_heads`` heads of ``head_dim``, from and to ``embed_dim``.

    Supports what the zoo and most encoders use: ``batch_first``, packed projections,
    ``key_padding_mask``, ``attn_mask``, ``need_weights``. Dropout on the attention
    weights is applied in training mode, as in ``nn.MultiheadAttention``.
    """

    # torch's Transformer layers take a fused kernel when this is True, and that kernel assumes
    # embed_dim == num_heads · head_dim; False sends them to their Python path, which calls forward.
    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, *, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.batch_first, self.dropout = batch_first, dropout
        inner = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    @classmethod
    def from_mha(cls, mha: nn.Module, heads: Sequence[int]) -> PrunedMultiheadAttention:
        """Keep ``heads`` (indices) of ``mha`` (an ``nn.MultiheadAttention`` or one of these)."""
        if not packed(mha):
            raise ValueError("only packed q/k/v projections (kdim == vdim == embed_dim) are supported")
        hd, inner = mha.head_dim, mha.num_heads * mha.head_dim
        new = cls(mha.embed_dim, len(heads), hd, bias=mha.in_proj_bias is not None,
                  batch_first=mha.batch_first, dropout=mha.dropout)
        rows = torch.tensor([part * inner + h * hd + i for part in range(3) for h in heads for i in range(hd)],
                            dtype=torch.long)
        cols = rows[: len(heads) * hd]
        with torch.no_grad():
            new.in_proj_weight.copy_(mha.in_proj_weight[rows])
            if new.in_proj_bias is not None:
                new.in_proj_bias.copy_(mha.in_proj_bias[rows])
            new.out_proj.weight.copy_(mha.out_proj.weight[:, cols])
            if new.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None,
                average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        inner = self.num_heads * self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        parts = [F.linear(t, w[i * inner:(i + 1) * inner], None if b is None else b[i * inner:(i + 1) * inner])
                 for i, t in enumerate((query, key, value))]
        q, k, v = (p.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for p in parts)
        scores = q @ k.transpose(-2, -1) / self.head_dim**0.5
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
        if is_causal:
            n = scores.shape[-1]
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        attn = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        out = self.out_proj((attn @ v).transpose(1, 2).flatten(2))
        if not self.batch_first:
            out = out.transpose(0, 1)
        weights = (attn.mean(dim=1) if average_attn_weights else attn) if need_weights else None
        return out, weights


ATTENTION = (nn.MultiheadAttention, PrunedMultiheadAttention)


def packed(m: nn.Module) -> bool:
    """An attention module whose q, k and v projections are one packed ``in_proj_weight``."""
    if isinstance(m, PrunedMultiheadAttention):
        return True
    return isinstance(m, nn.MultiheadAttention) and bool(m._qkv_same_embed_dim) and m.in_proj_weight is not None


def row_tensors(module: nn.Module) -> tuple[str, str]:
    """Names of the tensors whose rows are a layer's output channels: weight and bias."""
    return ("in_proj_weight", "in_proj_bias") if isinstance(module, ATTENTION) else ("weight", "bias")
