"""The compiled sparse CPU kernels (``csrc/sparse_cpu.cpp``): built on first use, cached, or absent.

The kernels are a torch C++ extension (``torch.utils.cpp_extension``, compiled with the
system's C++ compiler and ``ninja``). The first call compiles them in a child process with a
time limit (:data:`COMPILE_SECONDS`, 25-60 s on 2 cores), into torch's extension cache
(``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) under a name that
includes a hash of the source and the torch version; later processes load the cached
library in well under a second. Where the build fails (no compiler, no ``ninja``, time
out) or ``SECATEURS_KERNELS=off`` is set, :func:`extension` warns once and returns
``None``: the layers built on the kernels are then not offered, and the torch paths serve.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch.utils import cpp_extension

SOURCE = Path(__file__).parent / "csrc" / "sparse_cpu.cpp"
COMPILE_SECONDS = 600
"""Most seconds the first compile may take before the kernels are given up for this process."""
FLAGS = ["-O3", "-fno-math-errno", "-fopenmp"]
"""``-fopenmp``: ``at::parallel_for`` is inline in torch's headers and runs on one thread unless the extension is
compiled with OpenMP; the library then links ``libgomp.so.1``, the same runtime torch has already loaded."""

_state: dict[str, ModuleType | None] = {}


def _name(source: Path) -> str:
    digest = hashlib.sha256(source.read_bytes() + torch.__version__.encode() + str(FLAGS).encode()).hexdigest()
    return f"secateurs_sparse_{digest[:12]}"


def _path_with_ninja() -> str:
    """``$PATH`` with the interpreter's ``bin`` first: pip's ``ninja`` lives there when the venv is not activated."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _load(source: Path, name: str) -> ModuleType:
    """Compile (or find in the cache) and import the extension; torch runs ``ninja`` from ``$PATH``."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = _path_with_ninja()
    try:
        return cpp_extension.load(name, [str(source)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"], verbose=False)
    finally:
        os.environ["PATH"] = before


def clear_stale_lock(folder: Path, older_than: float = COMPILE_SECONDS + 60.0) -> bool:
    """Remove torch's build ``lock`` in ``folder`` when it is older than ``older_than`` seconds.

    torch waits, with no time limit, for that file to go before it loads or builds an extension; a compile
    killed at :data:`COMPILE_SECONDS` (or any interrupted one) leaves it behind, and every later process
    then hangs. No compile of ours lives longer than :data:`COMPILE_SECONDS`, so an older lock is stale.

    Returns:
        Whether a stale lock was removed.
    """
    lock = folder / "lock"
    try:
        if time.time() - lock.stat().st_mtime < older_than:
            return False
        lock.unlink()
    except FileNotFoundError:  # no lock, or another process removed it first
        return False
    return True


def _compile(source: Path) -> ModuleType:
    """Compile in a child process (bounded in time), then load the cached library here."""
    if os.environ.get("SECATEURS_KERNELS", "").lower() in ("off", "0", "no"):
        raise RuntimeError("disabled by SECATEURS_KERNELS=off")
    if not source.is_file():
        raise RuntimeError(f"kernel source {source} is missing")
    name = _name(source)
    folder = Path(cpp_extension._get_build_directory(name, verbose=False))
    clear_stale_lock(folder)
    built = folder / f"{name}.so"
    if built.is_file():  # compiled before: loading it costs no compile (ninja finds nothing to do)
        return _load(source, name)
    code = ("import sys; from secateurs.inference.build import _load; from pathlib import Path; "
            "_load(Path(sys.argv[1]), sys.argv[2])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    try:
        done = subprocess.run([sys.executable, "-c", code, str(source), name], capture_output=True, text=True,
                              timeout=COMPILE_SECONDS, env=env, check=False)
    except subprocess.TimeoutExpired:
        clear_stale_lock(folder, older_than=0.0)  # the killed child's lock would make every later load wait
        raise RuntimeError(f"compiling took more than {COMPILE_SECONDS} s") from None
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"compiling failed: {last}")
    return _load(source, name)


def extension(source: Path | None = None) -> ModuleType | None:
    """The compiled kernels, or ``None`` (with one warning per process) where they cannot be built.

    Args:
        source: the C++ file (tests point it elsewhere to force a failure); default :data:`SOURCE`.
    """
    key = str(source or SOURCE)
    if key not in _state:
        try:
            _state[key] = _compile(source or SOURCE)
        except Exception as exc:  # any build or load failure: the torch paths serve instead
            warnings.warn(f"secateurs: the sparse CPU kernels are not available ({exc}); sc.accelerate will not "
                          "offer the 'bitmask', 'index16' and 'n:m' paths", RuntimeWarning, stacklevel=2)
            _state[key] = None
    return _state[key]


def available() -> bool:
    """Whether the compiled kernels load on this machine (compiles them on the first call)."""
    return extension() is not None


def set_isa(level: int) -> int:
    """Cap the instruction set the kernels use: 0 portable C++, 1 AVX2+FMA, 2 AVX-512; returns the level in force.

    The kernels pick the best the CPU has at run time (``__builtin_cpu_supports``): AVX-512 F/BW/VL/VBMI2
    (expanding loads), else AVX2+FMA, else portable C++; tests lower it to check each.
    """
    ext = extension()
    return 0 if ext is None else int(ext.set_isa(level))


__all__ = ["COMPILE_SECONDS", "SOURCE", "available", "extension", "set_isa"]
