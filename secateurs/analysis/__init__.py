"""Metrics, FLOPs, tables and plots: what a person reads after pruning."""

from .summary import LayerStats, Summary, sparsity, summary

__all__ = ["LayerStats", "Summary", "sparsity", "summary"]
