"""The convolutional and transformer zoo models: shapes, fx tracing, training, saving, pruning."""

from __future__ import annotations

import operator
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

import secateurs as sc
from secateurs import zoo
from secateurs.errors import PruningError

NAMES = ["vgg", "resnet-20", "mobilenet-v2", "transformer"]

# (name, kwargs, input shape, number of classes): defaults, then other sizes.
CASES = [
    ("vgg", {}, (2, 3, 32, 32), 10),
    ("vgg", {"in_channels": 1, "image_size": 28, "widths": (8, 16), "num_classes": 7}, (2, 1, 28, 28), 7),
    ("resnet-20", {}, (2, 3, 32, 32), 10),
    ("resnet-20", {"in_channels": 1, "image_size": 28, "width": 8}, (2, 1, 28, 28), 10),
    ("mobilenet-v2", {}, (2, 3, 32, 32), 10),
    ("mobilenet-v2", {"in_channels": 1, "image_size": 28, "width": 8, "num_classes": 5}, (2, 1, 28, 28), 5),
    ("transformer", {}, (2, 1, 28, 28), 10),
    ("transformer", {"image_size": 32, "in_channels": 3, "dim": 32, "heads": 2, "depth": 3, "mlp_ratio": 2},
     (2, 3, 32, 32), 10),
]
IDS = [f"{name}-{'default' if not kw else 'custom'}" for name, kw, _, _ in CASES]


def _build(name: str, kwargs: dict) -> nn.Module:
    torch.manual_seed(0)
    return zoo.model(name, **kwargs)


def _batch(shape: tuple[int, ...]) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _count(net: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


# ---------------------------------------------------------------- building and running


def test_models_are_listed() -> None:
    assert set(NAMES) <= set(zoo.models())


@pytest.mark.parametrize(("name", "kwargs", "shape", "classes"), CASES, ids=IDS)
def test_models_give_logits_and_their_example_input_fits(name: str, kwargs: dict, shape: tuple,
                                                         classes: int) -> None:
    net = _build(name, kwargs)
    out = net(_batch(shape))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    (example,) = zoo.example_inputs(net)
    assert tuple(example.shape) == (1, *shape[1:])
    assert net(example).shape == (1, classes)


@pytest.mark.parametrize(("name", "kwargs", "shape", "classes"), CASES, ids=IDS)
def test_models_trace_with_fx_and_the_trace_computes_the_same(name: str, kwargs: dict, shape: tuple,
                                                             classes: int) -> None:
    net = _build(name, kwargs).eval()
    traced = fx.symbolic_trace(net)
    x = _batch(shape)
    with torch.no_grad():
        assert torch.equal(traced(x), net(x))


@pytest.mark.parametrize("name", NAMES)
def test_one_sgd_step_changes_the_loss(name: str) -> None:
    net = _build(name, {})
    x, y = _batch((4, *zoo.example_inputs(net)[0].shape[1:])), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    before = F.cross_entropy(net(x), y)
    opt.zero_grad()
    before.backward()
    assert all(p.grad is not None for p in net.parameters())
    opt.step()
    after = F.cross_entropy(net(x), y)
    assert after.item() != pytest.approx(before.item(), abs=1e-6)


# ---------------------------------------------------------------- structure


def test_vgg_structure() -> None:
    net = _build("vgg", {"widths": (8, 16)})
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 8), (8, 16), (16, 16)]
    assert _count(net, nn.BatchNorm2d) == 4 and _count(net, nn.MaxPool2d) == 2
    assert tuple(net.get_submodule("features.0").weight.shape) == (8, 3, 3, 3)
    assert net.get_submodule("classifier.0").in_features == 16 * 8 * 8  # 32 -> 16 -> 8
    assert net.get_submodule("classifier.2").out_features == 10


def test_resnet_20_structure() -> None:
    net = _build("resnet-20", {})
    convs = {n: m for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(convs) == 1 + 18 + 2  # stem, two per block, two projection shortcuts
    assert _count(net, nn.Linear) == 1 and _count(net, nn.BatchNorm2d) == 21
    shortcuts = {n: (c.kernel_size, c.stride, c.in_channels, c.out_channels)
                 for n, c in convs.items() if "shortcut" in n}
    assert shortcuts == {"layer2.0.shortcut.conv": ((1, 1), (2, 2), 16, 32),
                         "layer3.0.shortcut.conv": ((1, 1), (2, 2), 32, 64)}
    assert [len(net.get_submodule(f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert net.get_submodule("layer3.2.conv2").out_channels == 64 and net.fc.in_features == 64
    adds = [n for n in fx.symbolic_trace(net).graph.nodes if n.target in (torch.add, operator.add)]
    assert len(adds) == 9  # one residual add per block, none in place


def test_mobilenet_v2_has_depthwise_convolutions_and_residual_adds() -> None:
    net = _build("mobilenet-v2", {})
    depthwise = [n for n, m in net.named_modules()
                 if isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels > 1]
    assert depthwise == [f"blocks.{i}.depthwise" for i in range(5)]
    assert [net.get_submodule(f"blocks.{i}.project").out_channels for i in range(5)] == [16, 24, 24, 32, 32]
    assert net.get_submodule("head.conv").out_channels == 128 and net.fc.in_features == 128
    assert _count(net, nn.ReLU6) == 1 + 2 * 5 + 1
    adds = [n for n in fx.symbolic_trace(net).graph.nodes if n.target is operator.add]
    assert len(adds) == 3  # blocks 0, 2, 4 keep their shape


@pytest.mark.parametrize("depth", [1, 3])
def test_transformer_structure(depth: int) -> None:
    net = _build("transformer", {"depth": depth, "dim": 32, "heads": 4})
    attns = [m for m in net.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attns) == depth
    assert all(a.batch_first and a.num_heads == 4 and a.embed_dim == 32 for a in attns)
    assert tuple(net.get_submodule("embed").weight.shape) == (32, 28)
    assert tuple(net.pos_embed.shape) == (1, 28, 32)
    assert tuple(net.get_submodule("blocks.0.mlp.fc1").weight.shape) == (128, 32)
    graph_modules = {n.target for n in fx.symbolic_trace(net).graph.nodes if n.op == "call_module"}
    assert {f"blocks.{i}.attn" for i in range(depth)} <= graph_modules  # attention is an fx leaf


def test_transformer_tokens_are_image_rows() -> None:
    """Changing one row of the image changes only that token's embedding."""
    net = _build("transformer", {"in_channels": 2, "image_size": 6, "dim": 8, "heads": 2})
    x = _batch((1, 2, 6, 6))
    y = x.clone()
    y[0, 1, 4] += 1.0  # channel 1, row 4
    embedded = [net.embed(t.permute(0, 2, 1, 3).flatten(2)) for t in (x, y)]
    changed = (embedded[0] != embedded[1]).any(dim=-1)[0]
    assert changed.tolist() == [False, False, False, False, True, False]


@pytest.mark.parametrize(
    ("name", "kwargs", "word"),
    [
        ("vgg", {"image_size": 4}, "image_size"),
        ("vgg", {"widths": ()}, "widths"),
        ("vgg", {"widths": (8, 0)}, "widths"),
        ("resnet-20", {"width": 0}, "width"),
        ("mobilenet-v2", {"in_channels": -1}, "in_channels"),
        ("transformer", {"dim": 30, "heads": 4}, "heads"),
        ("transformer", {"depth": 0}, "depth"),
    ],
)
def test_bad_arguments_raise_pruning_error(name: str, kwargs: dict, word: str) -> None:
    with pytest.raises(PruningError, match=word):
        zoo.model(name, **kwargs)


# ---------------------------------------------------------------- saving and pruning


@pytest.mark.parametrize(("name", "kwargs", "shape", "classes"), [CASES[i] for i in (0, 3, 4, 7)],
                         ids=[IDS[i] for i in (0, 3, 4, 7)])
def test_save_and_load_rebuilds_from_the_file(tmp_path: Path, name: str, kwargs: dict, shape: tuple,
                                              classes: int) -> None:
    net = _build(name, kwargs)
    net(_batch(shape))  # move the batch-norm statistics away from their initial values
    net.eval()
    sc.prune(net, 0.5, min_density=0.05)
    path = tmp_path / f"{name}.safetensors"
    sc.save(net, path)
    torch.manual_seed(123)  # the rebuilt model starts from other random weights
    loaded = sc.load(path).eval()
    assert type(loaded) is type(net)
    x = _batch(shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert sc.sparsity(loaded) == pytest.approx(sc.sparsity(net))
    assert set(sc.masks(loaded)) == set(sc.masks(net))


@pytest.mark.parametrize("name", NAMES)
def test_prune_half_of_each_model(name: str) -> None:
    net = _build(name, {})
    x = zoo.example_inputs(net)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sc.prune(net, 0.5)
    assert result is not None
    collapsed = [str(w.message) for w in caught if "layer collapse" in str(w.message)]
    # He-initialised 1x1 convolutions outweigh the classifier, so one global threshold
    # removes all of MobileNetV2's fc; the other models keep every layer.
    assert bool(collapsed) == (name == "mobilenet-v2"), collapsed
    assert sc.sparsity(net) == pytest.approx(0.5, abs=1e-3)
    expected = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    expected |= {f"{n}.in_proj_weight" for n, m in net.named_modules() if isinstance(m, nn.MultiheadAttention)}
    assert set(sc.masks(net)) == expected
    out = net(x)
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    net.eval()
    with torch.no_grad():
        assert torch.equal(fx.symbolic_trace(net)(x), net(x))  # masked layers still trace


def test_min_density_keeps_every_mobilenet_v2_layer_alive() -> None:
    net = _build("mobilenet-v2", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc.prune(net, 0.5, min_density=0.05)
    densities = {k: m.float().mean().item() for k, m in sc.masks(net).items()}
    assert min(densities.values()) >= 0.05 - 1e-6, densities
    assert sc.sparsity(net) == pytest.approx(0.5, abs=1e-3)
