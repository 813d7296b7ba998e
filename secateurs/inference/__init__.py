"""Inference: measured choice of the fastest execution per layer, and the sparse kernels it chooses from."""

from .accelerate import PATHS, AccelerateResult, LayerChoice, accelerate

__all__ = ["PATHS", "AccelerateResult", "LayerChoice", "accelerate"]
