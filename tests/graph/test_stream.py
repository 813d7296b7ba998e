"""``sc.prune(..., hidden=True)``: the residual stream as one coupled group, compaction exact against the masked model."""

import copy
import warnings

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import graph
from secateurs.errors import PruningError
from secateurs.modules import norms
from tests.hidden_models import TinyConvNeXt, TinyViT

IMAGES = (torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)),)
MODELS = {"vit": (TinyViT, {"blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2", "norm"}),
          "convnext": (TinyConvNeXt, {"stage1.norm", "down_norm", "stage2.norm", "head_norm"})}


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[kind][0]().eval()


def _roots(g: graph.ChannelGraph, atoms: list[int]) -> list[int]:
    return [g.atoms.find(a) for a in atoms]


def test_the_vit_stream_couples_its_writers_readers_norms_and_embeddings():
    m = _model("vit")
    g = graph.analyse(m, IMAGES, hidden=True)
    stream = _roots(g, g.rows["patch_embed"])
    for writer in ("blocks.0.attn.proj", "blocks.1.mlp.fc2"):
        assert _roots(g, g.rows[writer]) == stream
    for reader in ("blocks.0.attn.qkv", "blocks.1.mlp.fc1", "head"):
        assert _roots(g, g.cols[reader]) == stream
    assert set(g.norms) == g.stats == MODELS["vit"][1]
    assert {k: (v[0], v[2]) for k, v in g.params.items()} == {"cls_token": (2, True), "pos_embed": (2, True)}
    assert g.stream == "" and not any(g.atoms.is_frozen(a) for a in g.rows["patch_embed"])
    plain = graph.analyse(m, IMAGES)  # the default: the stream is not a group
    assert "patch_embed" not in plain.rows and not plain.norms and not plain.params


def test_the_convnext_stream_follows_layer_norms_and_slices_the_layer_scale():
    m = _model("convnext")
    g = graph.analyse(m, IMAGES, hidden=True)
    assert set(g.norms) == MODELS["convnext"][1]
    assert _roots(g, g.rows["stage1.fc2"]) == _roots(g, g.rows["stem"]) == _roots(g, g.norms["down_norm"])
    assert g.params["stage1.gamma"] == (0, g.params["stage1.gamma"][1], False)
    assert not any(g.atoms.is_frozen(a) for a in g.rows["stem"] + g.rows["down"])
    plain = graph.analyse(m, IMAGES)  # the default keeps it
    assert all(plain.atoms.is_frozen(a) for a in plain.rows["stem"]) and not plain.norms


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_hidden_prunes_the_stream_and_compaction_is_exact(kind):
    m, plain = _model(kind), _model(kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=IMAGES, hidden=True)
    said = [str(w.message) for w in caught if "hidden=True removed channels" in str(w.message)]
    assert len(said) == 1 and all(n in said[0] for n in sorted(MODELS[kind][1])[:4])
    assert set(result.sliced_norms) == MODELS[kind][1] == set(norms.hooked(m))
    sc.prune(plain, 0.5, granularity="channel", scope="local", example_inputs=IMAGES)
    small, default = sc.compact(m, IMAGES), sc.compact(plain, IMAGES)
    with torch.no_grad():
        assert (small(*IMAGES) - m(*IMAGES)).abs().max() <= 1e-5
        unhooked = copy.deepcopy(m)
        for module in unhooked.modules():
            norms.drop_statistics(module)
        assert (unhooked(*IMAGES) - m(*IMAGES)).abs().max() > 1e-3  # the statistics did change: it says so
    assert _params(small) < 0.8 * _params(default)
    assert not norms.hooked(small)
    widths = {n: small.get_submodule(n).normalized_shape for n in MODELS[kind][1]}
    assert all(w[0] < m.get_submodule(n).normalized_shape[0] for n, w in widths.items())


def test_the_compacted_convnext_slices_its_layer_scale():
    m = _model("convnext")
    sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=IMAGES, hidden=True)
    small = sc.compact(m, IMAGES)
    assert small.stage1.gamma.shape == (small.stage1.norm.normalized_shape[0],) == (4,)


def test_the_default_leaves_the_stream_and_its_norms_alone():
    m = _model("vit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=IMAGES)
    assert result.sliced_norms == [] and not norms.hooked(m)
    assert not any("hidden" in str(w.message) for w in caught)
    masks = sc.masks(m)
    assert bool(masks["patch_embed.weight"].all()) and not any(k.startswith(("norm", "cls_token")) for k in masks)


def test_a_saved_masked_model_loads_with_its_norms_over_the_kept_channels(tmp_path):
    m = _model("vit")
    sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=IMAGES, hidden=True)
    sc.save(m, tmp_path / "masked.safetensors")
    back = sc.load(tmp_path / "masked.safetensors", TinyViT()).eval()
    assert set(norms.hooked(back)) == MODELS["vit"][1]
    small = sc.compact(m, IMAGES)
    sc.save(small, tmp_path / "small.safetensors")
    again = sc.load(tmp_path / "small.safetensors", TinyViT()).eval()
    with torch.no_grad():
        assert (back(*IMAGES) - m(*IMAGES)).abs().max() <= 1e-6
        assert torch.equal(again(*IMAGES), small(*IMAGES))
    assert again.cls_token.shape == small.cls_token.shape == (1, 1, 8)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"hidden": "yes", "granularity": "channel", "example_inputs": IMAGES}, "hidden must be True or False"),
    ({"hidden": True, "granularity": "channel"}, "without example_inputs"),
    ({"hidden": True, "example_inputs": IMAGES}, "granularity 'unstructured'"),
])
def test_hidden_without_what_it_needs_is_one_clear_error(kwargs, match):
    with pytest.raises(PruningError, match=match):
        sc.prune(_model("vit"), 0.5, **kwargs)


def test_what_hidden_cannot_follow_is_said_and_pruned_as_by_default():
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0).eval()
    x = (torch.randn(5, 2, 16),)
    with pytest.warns(UserWarning, match=r"hidden=True: the residual stream was not pruned \(torch's packed"):
        result = sc.prune(layer, 0.5, granularity="channel", scope="local", example_inputs=x, hidden=True)
    assert result.sliced_norms == []
    small = sc.compact(layer, x)
    with torch.no_grad():
        assert (small(*x) - layer(*x)).abs().max() <= 1e-5


def test_pruning_the_stream_again_compounds_and_stays_exact():
    m = _model("convnext")
    sc.prune(m, 0.25, granularity="channel", scope="local", example_inputs=IMAGES, hidden=True)
    first = {n: int((m.get_submodule(n).weight != 0).sum()) for n in MODELS["convnext"][1]}
    sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=IMAGES, hidden=True)
    second = {n: int((m.get_submodule(n).weight != 0).sum()) for n in MODELS["convnext"][1]}
    assert all(second[n] < first[n] for n in first) and second["down_norm"] == 4
    small = sc.compact(m, IMAGES)
    with torch.no_grad():
        assert (small(*IMAGES) - m(*IMAGES)).abs().max() <= 1e-5
