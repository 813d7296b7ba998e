"""Shared test settings: small, deterministic, CPU only."""

import os
import tempfile

import torch
from hypothesis import settings

import secateurs  # noqa: F401  # first: it makes PyPI's torchvision (timm, transformers) import beside CPU torch

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("SECATEURS_CACHE", tempfile.mkdtemp(prefix="secateurs-test-cache-"))  # latency tables
torch.set_num_threads(1)  # the suite runs on two processes (pytest -n 2)
settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: starts several processes (torch.distributed, gloo on loopback)")
