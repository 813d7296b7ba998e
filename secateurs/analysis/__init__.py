"""Metrics, FLOPs, tables and plots: what a person reads after pruning."""

from .summary import LayerStats, Summary, sparsity, summary
from .sensitivity import SensitivityResult, sensitivity

__all__ = ["LayerStats", "SensitivityResult", "Summary", "sensitivity", "sparsity", "summary"]
