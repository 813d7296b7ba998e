"""secateurs: prune PyTorch networks and show what happened.

Example:
    >>> import secateurs as sc, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> result = sc.prune(net, sparsity=0.75)
    >>> round(sc.sparsity(net), 2)
    0.75

The package is built in layers, each importing only from those below it; see
"Architecture and extending" in docs/guide.md.
"""

from .compat import prepare_torchvision

prepare_torchvision()  # PyPI's torchvision beside the CPU build of torch: see secateurs/compat.py

from . import _moved, criteria, llm  # noqa: E402
from .analysis import sparsity, summary  # noqa: E402
from .errors import PruningError  # noqa: E402
from .inference import AccelerateResult, accelerate  # noqa: E402
from .masking import finalize, masks, restore  # noqa: E402
from .hardware import LatencyResult, prune  # noqa: E402
from .pruning import PruneResult, score  # noqa: E402
from .reports import sensitivity  # noqa: E402
from .storage import export_hf, export_onnx, load, save  # noqa: E402
from .surgery.compact import compact  # noqa: E402
from .surgery.fold import FoldResult, fold  # noqa: E402
from .surgery.gates import RuntimeGate, average_flops, wrap_convs  # noqa: E402
from .surgery.merge import MergeResult, merge_neurons  # noqa: E402
from .training.learned import L0Gates, Movement  # noqa: E402
from .training.regularizers import penalty  # noqa: E402
from .training.schedules import SET, Cubic, Gradual, Iterative, RigL  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AccelerateResult", "accelerate", "L0Gates", "Movement", "RuntimeGate", "average_flops", "wrap_convs", "SET",
    "Cubic", "Gradual", "Iterative", "RigL", "MergeResult", "PruneResult", "PruningError", "compact", "criteria",
    "FoldResult", "LatencyResult", "export_hf", "export_onnx", "finalize", "fold", "llm", "load", "masks", "merge_neurons", "penalty",
    "prune", "restore", "save", "score",
    "sensitivity", "sparsity", "summary",
]

_moved.install()
