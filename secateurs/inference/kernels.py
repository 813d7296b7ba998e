"""Inference-only stand-ins for a pruned ``nn.Linear``, chosen by :func:`secateurs.accelerate`.

Each computes ``x Wᵀ + b`` for the layer's finalized weight ``W`` (pruned entries 0),
on inputs of any number of leading dimensions, the same as the ``nn.Linear`` it
replaces, but stores and multiplies ``W`` differently:

- :class:`CsrLinear`: ``W`` in compressed sparse rows (``torch.sparse``), multiplied
  with ``torch.addmm``; pays off at high unstructured sparsity.
- :class:`CompactLinear`: the rows and columns of ``W`` that are entirely zero are
  dropped; the smaller product is scattered back into the bias.
- :class:`Pointwise`: a 1×1 convolution run by any of these (or of :mod:`.fast`'s) over its channels.
- :class:`SemiStructuredLinear`: a 2:4 weight as ``torch.sparse.to_sparse_semi_structured``
  (fp16/bf16 on a CUDA GPU with sparse tensor cores).

Their tensors are buffers (nothing trains): ``state_dict``, ``torch.no_grad`` and,
except for the GPU-only :class:`SemiStructuredLinear`, ``copy.deepcopy`` work.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.sparse import to_sparse_semi_structured

SEMI_DTYPES = (torch.float16, torch.bfloat16)
# Multiples both torch backends accept for an fp16/bf16 weight (CUTLASS: 32 x 64, cuSPARSELt: 16 x 16).
SEMI_ROWS, SEMI_COLS = 32, 64


def _bias(layer: nn.Linear) -> Tensor | None:
    return None if layer.bias is None else layer.bias.detach().clone()


class CsrLinear(nn.Module):
    """A Linear whose weight is stored as CSR (kept values, their columns, row offsets).

    Example:
        >>> layer = nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(torch.tensor([[1., 0., 0., 0.], [0., 0., 1., 0.]]))
        >>> fast = CsrLinear(layer)
        >>> fast.values.numel(), torch.allclose(fast(torch.ones(3, 4)), layer(torch.ones(3, 4)))
        (2, True)
    """

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        with warnings.catch_warnings():  # torch warns once that CSR is "beta"; we rely only on addmm
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = layer.weight.detach().to_sparse_csr()
        # Three dense buffers rather than one CSR tensor: deepcopy and state_dict cannot handle CSR.
        self.register_buffer("crow", csr.crow_indices().clone())
        self.register_buffer("col", csr.col_indices().clone())
        self.register_buffer("values", csr.values().clone())
        self.register_buffer("bias", _bias(layer))

    def forward(self, x: Tensor) -> Tensor:
        weight = torch.sparse_csr_tensor(self.crow, self.col, self.values, (self.out_features, self.in_features),
                                         check_invariants=False)
        # W @ xᵀ: torch multiplies a sparse left operand by a dense right one; leading dims are flattened.
        xt = x.reshape(-1, self.in_features).t().contiguous()
        y = torch.mm(weight, xt) if self.bias is None else torch.addmm(self.bias.unsqueeze(1), weight, xt)
        return y.t().reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.values.numel()}"


class CompactLinear(nn.Module):
    """A Linear without its all-zero rows and columns: ``out[rows] = x[..., cols] W'ᵀ + b[rows]``.

    The outputs of dropped rows are their bias (or 0); dropped columns multiply only zeros.
    """

    def __init__(self, layer: nn.Linear, rows: Tensor, cols: Tensor) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        w = layer.weight.detach()
        rows, cols = rows.to(w.device), cols.to(w.device)
        self.all_rows, self.all_cols = rows.numel() == self.out_features, cols.numel() == self.in_features
        self.register_buffer("weight", w.index_select(0, rows).index_select(1, cols).contiguous())
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        full = _bias(layer)
        self.register_buffer("bias", full)  # every output's bias: dropped rows output it unchanged
        self.register_buffer("kept_bias", None if full is None else full.index_select(0, rows))

    def forward(self, x: Tensor) -> Tensor:
        if not self.all_cols:
            x = x.index_select(-1, self.cols)
        y = F.linear(x, self.weight, self.kept_bias)
        if self.all_rows:
            return y
        out = y.new_zeros(*y.shape[:-1], self.out_features)
        if self.bias is not None:
            out += self.bias
        return out.index_copy_(out.dim() - 1, self.rows, y)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"kept={tuple(self.weight.shape)}")


class Pointwise(nn.Module):
    """A 1×1 convolution (one group, no padding, any stride) run by a Linear stand-in over its channels.

    ``y[b, :, i, j] = W x[b, :, i·s, j·s] + bias``: the stand-in (:class:`CsrLinear`, a sparse layer of
    :mod:`.fast`, ...) multiplies the channel vector of every position at once.
    """

    def __init__(self, linear: nn.Module, stride: tuple[int, int]) -> None:
        super().__init__()
        self.linear, self.stride = linear, tuple(stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != (1, 1):
            x = x[..., :: self.stride[0], :: self.stride[1]]
        return self.linear(x.movedim(1, -1)).movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def is_pointwise(layer: nn.Module) -> bool:
    """Whether ``layer`` is a 1×1 ``nn.Conv2d`` with one group and no padding (a Linear over channels)."""
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1
            and layer.padding in ((0, 0), "valid") and layer.padding_mode == "zeros")


def as_linear(conv: nn.Conv2d) -> nn.Linear:
    """The ``nn.Linear`` over channels that a pointwise ``conv`` computes at each position (weights shared)."""
    linear = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None,
                       device="meta", dtype=conv.weight.dtype)
    linear.weight = nn.Parameter(conv.weight.detach().reshape(conv.out_channels, conv.in_channels),
                                 requires_grad=False)
    if conv.bias is not None:
        linear.bias = nn.Parameter(conv.bias.detach(), requires_grad=False)
    return linear


def compact_linear(layer: nn.Linear) -> CompactLinear | None:
    """A :class:`CompactLinear` for ``layer``, or ``None`` when no row or column is entirely zero."""
    nonzero = layer.weight.detach() != 0
    rows = nonzero.any(dim=1).nonzero().flatten()
    cols = nonzero.any(dim=0).nonzero().flatten()
    if rows.numel() == layer.out_features and cols.numel() == layer.in_features:
        return None
    if rows.numel() == 0:  # keep one row so the matmul has a shape; its weights are 0
        rows = torch.zeros(1, dtype=torch.long, device=rows.device)
    if cols.numel() == 0:
        cols = torch.zeros(1, dtype=torch.long, device=cols.device)
    return CompactLinear(layer, rows, cols)


class SemiStructuredLinear(nn.Module):
    """A Linear whose 2:4 weight is a ``torch.sparse`` semi-structured tensor (CUDA, fp16/bf16).

    Build it with :func:`semi_structured_linear`, which checks that the GPU path applies.
    """

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        # As torch's semi-structured tutorial does: a (frozen) Parameter that F.linear dispatches on.
        self.weight = nn.Parameter(to_sparse_semi_structured(layer.weight.detach().contiguous()),
                                   requires_grad=False)
        self.register_buffer("bias", _bias(layer))

    def forward(self, x: Tensor) -> Tensor:
        # torch's semi-structured linear views the input as 2-D, so it must be contiguous.
        return F.linear(x.contiguous(), self.weight, self.bias)


def is_two_four(weight: Tensor) -> bool:
    """Whether every 4 consecutive weights along the input dimension hold at most 2 non-zeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.detach() != 0).reshape(weight.shape[0], -1, 4).sum(dim=2) <= 2).all())


def semi_structured_linear(layer: nn.Linear) -> SemiStructuredLinear | None:
    """A :class:`SemiStructuredLinear` for ``layer``, or ``None`` where torch's 2:4 kernels do not apply.

    They need a CUDA weight in fp16 or bf16 whose shape is a multiple of (32, 64) and
    whose non-zeros follow 2:4; a GPU without sparse tensor cores (before Ampere) or a
    torch build without the kernels raises in the conversion, which also gives ``None``.
    """
    w = layer.weight
    rows, cols = w.shape
    if not w.is_cuda or w.dtype not in SEMI_DTYPES or rows % SEMI_ROWS or cols % SEMI_COLS:
        return None
    if not is_two_four(w):
        return None
    try:
        return SemiStructuredLinear(layer)
    except (RuntimeError, NotImplementedError):  # unsupported GPU or build: keep the layer as it is
        return None
