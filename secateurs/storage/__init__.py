"""Storing models: sparse safetensors files (weights, masks, surgery) and ONNX exports."""

from .onnx import export_onnx, onnx_check
from .safetensors import load, plain_state, read, save

__all__ = ["export_onnx", "load", "onnx_check", "plain_state", "read", "save"]
