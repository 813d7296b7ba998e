"""Shared test settings: small, deterministic, CPU only."""

import os
import tempfile

import torch
from hypothesis import settings

from secateurs.compat import prepare_torchvision

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("SECATEURS_CACHE", tempfile.mkdtemp(prefix="secateurs-test-cache-"))  # latency tables
torch.set_num_threads(1)  # the suite runs on two processes (pytest -n 2)
settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")
prepare_torchvision()  # PyPI's torchvision (which timm imports) beside the CPU build of torch: see secateurs/compat.py


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: starts several processes (torch.distributed, gloo on loopback)")
