"""PrunedMultiheadAttention: the heads compaction keeps, computing what nn.MultiheadAttention computes."""

import torch
from torch import nn

from secateurs.modules.attention import PrunedMultiheadAttention


def test_pruned_attention_matches_torch_for_all_heads():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
        ours = PrunedMultiheadAttention.from_mha(mha, [0, 1, 2, 3]).eval()
        x = torch.randn(2, 5, 16)  # (batch, sequence, features)
        x = x if batch_first else x.transpose(0, 1)
        mask = torch.zeros(2, 5, dtype=torch.bool)
        mask[0, -2:] = True
        with torch.no_grad():
            a, wa = mha(x, x, x, key_padding_mask=mask)
            b, wb = ours(x, x, x, key_padding_mask=mask)
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(wa, wb, atol=1e-6)
