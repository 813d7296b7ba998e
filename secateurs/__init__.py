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

from . import _moved, criteria, llm
from .analysis import sparsity, summary
from .errors import PruningError
from .inference import AccelerateResult, accelerate
from .masking import finalize, masks, restore
from .hardware import LatencyResult, prune
from .pruning import PruneResult, score
from .reports import sensitivity
from .storage import export_hf, export_onnx, load, save
from .surgery.compact import compact
from .surgery.fold import FoldResult, fold
from .surgery.gates import RuntimeGate, average_flops, wrap_convs
from .surgery.merge import MergeResult, merge_neurons
from .training.learned import L0Gates, Movement
from .training.regularizers import penalty
from .training.schedules import SET, Cubic, Gradual, Iterative, RigL

__version__ = "0.1.0"

__all__ = [
    "AccelerateResult", "accelerate", "L0Gates", "Movement", "RuntimeGate", "average_flops", "wrap_convs", "SET",
    "Cubic", "Gradual", "Iterative", "RigL", "MergeResult", "PruneResult", "PruningError", "compact", "criteria",
    "FoldResult", "LatencyResult", "export_hf", "export_onnx", "finalize", "fold", "llm", "load", "masks", "merge_neurons", "penalty",
    "prune", "restore", "save", "score",
    "sensitivity", "sparsity", "summary",
]

_moved.install()
