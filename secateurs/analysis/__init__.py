"""Measuring a model: per-layer sparsity table, FLOPs and latency (what reports and results show)."""

from .summary import LayerStats, Summary, sparsity, summary

__all__ = ["LayerStats", "Summary", "sparsity", "summary"]
