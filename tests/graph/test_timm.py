"""timm CNNs at 50% of their channels: every prunable channel space loses half, compaction keeps the outputs.

Random init, 4 classes, 32x32 inputs. Skipped where timm does not import (it is in the ``dev`` extra; the
suite's conftest imports secateurs first, which calls ``secateurs.compat.prepare_torchvision()``; see
docs/guide.md "timm").
"""

import warnings

import pytest
import torch

import secateurs as sc
from secateurs import graph
from secateurs.surgery.compact import dead_roots

try:
    import timm
except (ImportError, RuntimeError) as exc:  # RuntimeError: a torchvision built for another torch
    pytest.skip(f"timm does not import here: {str(exc).splitlines()[0]}", allow_module_level=True)

CNNS = {  # name: the most parameters left (Torch-Pruning 1.6 at 50%, same models, 64x64: 0.25-0.26, convnext 0.26)
    "resnet18": 0.26, "resnet50": 0.26, "resnext26ts": 0.26, "densenet121": 0.26, "mobilenetv2_100": 0.27,
    "mobilenetv3_small_100": 0.27, "efficientnet_b0": 0.27, "regnety_002": 0.26, "ghostnet_100": 0.26,
    "convnext_atto": 0.56,  # its residual stream is kept: LayerNorm over channels (see the test)
}


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _round_trip(small, path, make, x):
    """sc.save the compacted model, sc.load it onto a fresh ``timm.create_model``: the same outputs."""
    sc.save(small, path)
    back = sc.load(path, make()).eval()
    with torch.no_grad():
        assert torch.equal(back(x), small(x))


@pytest.mark.parametrize("name", sorted(CNNS))
def test_timm_cnn_loses_half_of_its_prunable_channels(name, tmp_path):
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False, num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    g = graph.analyse(m, (x,))
    removed = len(dead_roots(m, g)) / len(g.units())
    assert abs(removed - 0.5) <= 0.02
    kept = {n.split(":")[0] for n in result.notes}
    assert len([w for w in caught if "less than asked" in str(w.message)]) == 1  # the kept ones, said once
    if name == "convnext_atto":  # the residual stream: every stage's stem / downsample and dw convs say so
        assert {"stem.0", "stages.3.blocks.1.conv_dw"} <= kept and not any("mlp.fc1" in k for k in kept)
    else:  # only the classifier's outputs
        assert kept == {m.default_cfg["classifier"]}
    small = sc.compact(m, (x,))
    with torch.no_grad():
        assert (small(x) - m(x)).abs().max() <= 1e-4
    assert _params(small) / _params(m) <= CNNS[name]
    _round_trip(small, tmp_path / "m.safetensors", lambda: timm.create_model(name, num_classes=4), x)


def _vit(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=4, img_size=32, **kw).eval()


TRANSFORMERS = {  # tiny configurations of the real classes
    "vit_tiny": lambda: _vit("vit_tiny_patch16_224", patch_size=8, depth=2),
    "deit_tiny": lambda: _vit("deit_tiny_patch16_224", patch_size=8, depth=2),
    "swin_tiny": lambda: _vit("swin_tiny_patch4_window7_224", patch_size=4, window_size=4, depths=(2, 2),
                              num_heads=(3, 6), embed_dim=48),
}


def _attentions(m):
    return {n: a for n, a in m.named_modules() if hasattr(a, "qkv") and hasattr(a, "num_heads")}


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_fused_qkv_heads_are_units_and_compact_to_fewer_heads(name, tmp_path):
    m, x = TRANSFORMERS[name](), torch.randn(2, 3, 32, 32)
    g = graph.analyse(m, (x,))
    first, attn = next(iter(_attentions(m).items()))
    width = attn.proj.in_features
    size = width // attn.num_heads
    root = g.atoms.find
    for h in range(attn.num_heads):  # one unit: the head's q, k and v rows and its proj columns
        unit = {root(g.rows[f"{first}.qkv"][part * width + h * size + i]) for part in range(3) for i in range(size)}
        assert unit == {root(a) for a in g.cols[f"{first}.proj"][h * size : (h + 1) * size]}
        assert len(unit) == 1 and not g.atoms.is_frozen(unit.pop())
    heads = {n: a.num_heads for n, a in _attentions(m).items()}
    with pytest.warns(UserWarning, match=r"patch_embed.proj: \d+ of \d+ channels kept \(not attention heads"):
        sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    small = sc.compact(m, (x,))
    with torch.no_grad():
        assert (small(x) - m(x)).abs().max() <= 1e-4
    for n, a in _attentions(small).items():  # the widths the forward reads, written in the modules
        assert a.num_heads == round(heads[n] / 2) or a.num_heads == heads[n] // 2
        assert a.qkv.out_features == 3 * a.proj.in_features == 3 * a.num_heads * size
        assert getattr(a, "attn_dim", a.proj.in_features) == a.proj.in_features
        if hasattr(a, "relative_position_bias_table"):  # Swin: one bias column per head
            assert a.relative_position_bias_table.shape[1] == a.num_heads
        assert small.get_submodule(n.rpartition(".")[0]).mlp.fc1.out_features == 4 * size * heads[n] // 2
    _round_trip(small, tmp_path / "m.safetensors", TRANSFORMERS[name], x)


def test_mixer_and_levit_say_which_units_they_find_and_which_they_keep():
    from timm.models.levit import Levit
    from timm.models.mlp_mixer import MlpMixer

    torch.manual_seed(0)
    mixer, x = MlpMixer(num_classes=4, img_size=32, patch_size=8, num_blocks=2, embed_dim=64).eval(), torch.randn(2, 3, 32, 32)
    units = {n for members in graph.analyse(mixer, (x,)).units().values() for n, _ in members}
    assert units == {f"blocks.{b}.mlp_{k}.fc1" for b in (0, 1) for k in ("tokens", "channels")}  # MLP neurons only
    with pytest.warns(UserWarning, match=r"stem.proj: 64 of 64 channels kept \(.*LayerNorm"):
        sc.prune(mixer, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    levit = Levit(img_size=64, num_classes=4, embed_dim=(32, 48), key_dim=8, depth=(1, 1), num_heads=(2, 3)).eval()
    x = torch.randn(2, 3, 64, 64)
    with pytest.warns(UserWarning, match=r"attn.qkv.linear: 64 of 64 channels kept \(a .view\(\) that splits"):
        result = sc.prune(levit, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    kept = {n.split(":")[0] for n in result.notes}
    assert "stages.0.blocks.0.mlp.ln1.linear" not in kept and "stem.conv4.linear" not in kept  # neurons, residual
    for model, inputs in ((mixer, torch.randn(2, 3, 32, 32)), (levit, x)):
        small = sc.compact(model, (inputs,))
        with torch.no_grad():
            assert (small(inputs) - model(inputs)).abs().max() <= 1e-4
        assert sum(p.numel() for p in small.parameters()) < 0.6 * sum(p.numel() for p in model.parameters())


def test_two_four_skips_every_layer_that_cannot_take_it_in_one_warning():
    m = timm.create_model("mobilenetv2_100", num_classes=4)
    cannot = {f"{n}.weight" for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d) and c.in_channels // c.groups % 4}
    assert len(cannot) == 18  # the stem (3 inputs) and 17 depthwise convs (1 input each)
    with pytest.raises(sc.PruningError) as err:
        sc.prune(m, 0.5, granularity="2:4", strict=True)
    assert all(name in str(err.value) for name in cannot)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sc.prune(m, 0.5, granularity="2:4")
    said = [str(w.message) for w in caught if "2:4" in str(w.message)]
    assert len(said) == 1 and all(f"skipped {name} " in said[0] for name in cannot)
    masks = sc.masks(m)
    assert all(bool(masks.get(name, torch.ones(1, dtype=torch.bool)).all()) for name in cannot)  # left dense
    assert masks["conv_head.weight"].float().mean() == 0.5


def test_a_norm_between_the_units_and_the_output_keeps_them_and_says_so():
    m, x = _vit("vit_tiny_patch16_224", patch_size=8, depth=1, scale_attn_norm=True, scale_mlp_norm=True), torch.randn(1, 3, 32, 32)
    with pytest.warns(UserWarning, match=r"blocks.0.attn.qkv: 576 of 576 channels kept \(LayerNorm 'blocks.0.attn.norm'"):
        result = sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,))
    assert any(n.startswith("blocks.0.mlp.fc1: 768 of 768") and "mlp.norm" in n for n in result.notes)
    assert sc.compact(m, (x,)).blocks[0].attn.num_heads == 3


HIDDEN = {  # name: (builder, input size, the most parameters left: Torch-Pruning 1.6 at 50% in BENCHMARKS.md)
    "convnext_atto": (lambda: timm.create_model("convnext_atto", num_classes=4).eval(), 32, 0.40),
    "vit_tiny": (TRANSFORMERS["vit_tiny"], 32, 0.27),
}


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_hidden_true_prunes_the_residual_stream_and_compacts_exactly(name, tmp_path):
    make, size, most = HIDDEN[name]
    torch.manual_seed(0)
    m, x = make(), torch.randn(2, 3, size, size)
    with pytest.warns(UserWarning, match="hidden=True removed channels of the residual stream"):
        result = sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,), hidden=True)
    assert result.sliced_norms and not any("channels kept (module" in n for n in result.notes)
    small = sc.compact(m, (x,))
    with torch.no_grad():
        assert (small(x) - m(x)).abs().max() <= 1e-4
    assert _params(small) / _params(m) <= most
    _round_trip(small, tmp_path / "m.safetensors", make, x)


def test_hidden_true_leaves_a_norm_over_the_heads_to_the_block():
    m, x = _vit("vit_tiny_patch16_224", patch_size=8, depth=1, scale_attn_norm=True), torch.randn(1, 3, 32, 32)
    g = graph.analyse(m, (x,), hidden=True)
    assert "blocks.0.attn.norm" not in g.norms and "blocks.0.norm1" in g.norms
    sc.prune(m, 0.5, granularity="channel", scope="local", example_inputs=(x,), hidden=True)
    small = sc.compact(m, (x,))
    with torch.no_grad():
        assert (small(x) - m(x)).abs().max() <= 1e-4
    assert small.blocks[0].attn.num_heads == 3 and small.blocks[0].attn.norm.normalized_shape == (192,)
