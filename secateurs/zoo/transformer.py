"""A small transformer encoder that classifies an image read as a sequence of rows.

Each image row (all channels side by side) is one token, so a 28×28 MNIST digit is
28 tokens of 28 values. The model is plain ``torch.nn`` layers and traces with
``torch.fx.symbolic_trace``; ``nn.MultiheadAttention`` is a leaf of fx's default
tracer, so it shows up as one ``call_module`` node per block.

Example:
    >>> from secateurs import zoo
    >>> net = zoo.model("transformer")
    >>> net(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..errors import PruningError
from .cnn import _check_positive, image_input
from .models import _register


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block (Vaswani et al., 2017; pre-norm as in Xiong et al., 2020).

    ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``; the MLP is ``mlp.fc1`` → ``mlp.act``
    (GELU) → ``mlp.fc2``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(OrderedDict(
            fc1=nn.Linear(dim, mlp_ratio * dim), act=nn.GELU(), fc2=nn.Linear(mlp_ratio * dim, dim),
        ))

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class RowTransformer(nn.Module):
    """Transformer encoder classifier over image rows.

    Layers are ``embed`` (Linear from ``C·W`` to ``dim``) plus the ``pos_embed``
    parameter, ``blocks.<i>`` (each an :class:`EncoderBlock`, so ``blocks.0.attn`` and
    ``blocks.0.mlp.fc1``), ``norm`` and ``head``.
    """

    def __init__(self, image_size: int, in_channels: int, num_classes: int, dim: int, heads: int,
                 depth: int, mlp_ratio: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_channels * image_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, image_size, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.permute(0, 2, 1, 3).flatten(2)  # (N, C, H, W) -> (N, H, C·W): one token per row
        x = self.blocks(self.embed(tokens) + self.pos_embed)
        return self.head(self.norm(x).mean(dim=1))


@_register("transformer", image_input)
def transformer(image_size: int = 28, in_channels: int = 1, num_classes: int = 10, dim: int = 64,
                heads: int = 4, depth: int = 2, mlp_ratio: int = 4) -> nn.Module:
    """A small transformer encoder classifier (Vaswani et al., 2017, "Attention Is All You
    Need") that reads an ``image_size``×``image_size`` image as ``image_size`` row tokens.

    Args:
        image_size: side of the square input images (the number of tokens).
        in_channels: channels of the input images.
        num_classes: number of logits.
        dim: width of the tokens.
        heads: attention heads; must divide ``dim``.
        depth: number of encoder blocks.
        mlp_ratio: hidden width of each block's MLP, as a multiple of ``dim``.

    Raises:
        PruningError: non-positive sizes, or ``heads`` that does not divide ``dim``.
    """
    sizes = dict(image_size=image_size, in_channels=in_channels, num_classes=num_classes, dim=dim,
                 heads=heads, depth=depth, mlp_ratio=mlp_ratio)
    _check_positive("transformer", **sizes)
    if dim % heads:
        raise PruningError(f"transformer heads must divide dim={dim}, got heads={heads}")
    return RowTransformer(**sizes)
