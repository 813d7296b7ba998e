"""Storing models: sparse safetensors files (weights, masks, surgery), ONNX exports, Hugging Face folders."""

from .hf import export_hf
from .onnx import export_onnx, onnx_check
from .safetensors import load, plain_state, read, save

__all__ = ["export_hf", "export_onnx", "load", "onnx_check", "plain_state", "read", "save"]
