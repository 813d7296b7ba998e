"""Make torchvision's Python parts importable beside a CPU build of torch (what timm needs).

PyPI's torchvision wheels are built against torch's CUDA build: their compiled operators (``_C.so``:
``nms``, ``roi_align``, ``deform_conv2d`` ...) link ``libtorch_cuda.so`` and do not load beside the CPU
build of torch. torchvision guards most of its operator registrations with "were the operators loaded?",
but registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, so
``import torchvision`` fails with ``operator torchvision::nms does not exist``; timm (``FrozenBatchNorm2d``,
transforms) and transformers' image classes import torchvision and fail with it.

:func:`prepare_torchvision` declares those two operator schemas when, and only when, torchvision's compiled
operators cannot be loaded. torchvision's Python parts (models, transforms, ``ops.misc``) then import and
work; calling one of its compiled detection operators raises torch's own "no kernel" error, as it would.
``import secateurs`` calls it (a file lookup when torchvision is installed, nothing otherwise), so that
transformers and timm import after secateurs; a script that imports timm or transformers first calls it itself.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY: list[torch.library.Library] = []  # kept alive: dropping a Library object removes its definitions
TORCHVISION_OPS_MISSING: list[str] = []
"""Why torchvision's compiled operators did not load, when :func:`prepare_torchvision` declared them (else empty).
No warning is printed at ``import secateurs``: nothing secateurs does needs those operators."""


def _compiled_ops(spec_origin: str) -> Path | None:
    """The path of torchvision's compiled operator library beside its ``__init__.py``, if there is one."""
    found = sorted(Path(spec_origin).parent.glob("_C*.so")) + sorted(Path(spec_origin).parent.glob("_C*.pyd"))
    return found[0] if found else None


def prepare_torchvision() -> bool:
    """Declare torchvision's two unguarded operator schemas when its compiled operators cannot load.

    Returns:
        True when the schemas were declared (torchvision's compiled operators are unavailable; the reason is
        in :data:`TORCHVISION_OPS_MISSING`), False when nothing was needed: torchvision is absent, already
        imported, or its operators load.
    """
    if "torchvision" in sys.modules or _LIBRARY:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    compiled = _compiled_ops(spec.origin)
    if compiled is not None:
        try:
            torch.ops.load_library(str(compiled))
            return False
        except (OSError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0]
    else:
        reason = "no compiled operator library in the torchvision package"
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _LIBRARY.append(library)
    TORCHVISION_OPS_MISSING.append(
        f"torchvision's compiled operators do not load beside torch {torch.__version__}: {reason}")
    return True
