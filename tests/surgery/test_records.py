"""Surgery records: the ``slices`` entries ``hidden=True`` compaction writes are checked before anything changes."""

import pytest
import torch

from secateurs.errors import PruningError
from secateurs.surgery.records import apply
from tests.hidden_models import TinyViT


def test_slices_cut_a_parameter_and_an_embedding_width():
    m = TinyViT()
    apply(m, {"": {"slices": {"cls_token": [2, [0, 3]]}}, "norm": {"norm": [1, 2]}})
    emb = torch.nn.Embedding(5, 4)
    apply(emb, {"": {"slices": {"weight": [1, [1, 2]]}}})
    assert m.cls_token.shape == (1, 1, 2) and m.norm.normalized_shape == (2,) and m.norm.weight.shape == (2,)
    assert emb.embedding_dim == 2 and emb(torch.tensor([1])).shape == (1, 2)


@pytest.mark.parametrize(("slices", "match"), [
    ({"forward": [0, [0]]}, "must name a parameter of TinyViT"),
    ({"cls_token": [3, [0]]}, "axis 3 of cls_token outside"),
    ({"cls_token": [2, [0, 99]]}, r"slices cls_token: expected distinct indices in \[0, 16\)"),
    ([], "slices must map parameter names"),
])
def test_a_bad_slices_entry_is_refused_and_nothing_changes(slices, match):
    m = TinyViT()
    with pytest.raises(PruningError, match=match):
        apply(m, {"": {"slices": slices}})
    assert m.cls_token.shape == (1, 1, 16)
