"""secateurs: prune PyTorch networks and show what happened.

Example:
    >>> import secateurs as sc, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> result = sc.prune(net, sparsity=0.75)
    >>> round(sc.sparsity(net), 2)
    0.75
"""

from . import criteria
from .accelerate import AccelerateResult, accelerate
from .analysis import sensitivity, sparsity, summary
from .errors import PruningError
from .export import export_onnx, load, save
from .masking import finalize, masks, restore
from .pruning import PruneResult, prune, score
from .learned import L0Gates, Movement
from .regularizers import penalty
from .runtime import RuntimeGate, average_flops, wrap_convs
from .schedules import SET, Cubic, Gradual, Iterative, RigL
from .surgery.compact import compact
from .surgery.merge import MergeResult, merge_neurons

__version__ = "0.1.0"

__all__ = [
    "AccelerateResult", "accelerate", "L0Gates", "Movement", "RuntimeGate", "average_flops", "wrap_convs", "SET", "Cubic", "Gradual", "Iterative", "RigL", "MergeResult", "PruneResult", "PruningError", "compact", "criteria", "export_onnx", "finalize", "load", "masks", "merge_neurons", "penalty", "prune",
    "restore", "save", "score", "sensitivity", "sparsity", "summary",
]
