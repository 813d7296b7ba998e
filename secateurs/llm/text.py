"""Calibration and evaluation text that ships with Python: the standard library's docstrings.

The text is real English written by people: every prose paragraph of the docstrings of
the modules in :data:`secateurs.zoo.text.SOURCE_MODULES`, of the functions and classes they
define and of those classes' methods (sentences of 6-40 words that are not code, as
:func:`secateurs.zoo.text.real_sentences` keeps them), deduplicated, in a fixed order.
Paragraphs alternate between the two parts: the even ones calibrate, the odd ones are held
out for perplexity, so both cover every module. It is tokenized with the model's own
tokenizer, read from the checkpoint folder.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..compat import prepare_torchvision
from ..errors import PruningError
from ..zoo.text import SOURCE_MODULES, _sentences

CALIBRATION, EVALUATION = "calibration", "evaluation"


def _docs(module: Any) -> list[str]:
    docs = [module.__doc__]
    for name in sorted(vars(module)):
        obj = vars(module)[name]
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            docs.append(obj.__doc__)
        if inspect.isclass(obj):
            docs.extend(m.__doc__ for k, m in sorted(vars(obj).items())
                        if not k.startswith("_") and inspect.isfunction(m))
    return [d for d in docs if isinstance(d, str)]


@lru_cache(maxsize=1)
def paragraphs() -> tuple[str, ...]:
    """Every prose paragraph, in a fixed order (module by module, members by name)."""
    out: list[str] = []
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in SOURCE_MODULES:
            try:
                module = importlib.import_module(module_name)
            except Exception:  # noqa: BLE001, S112 - a module this Python lacks is skipped
                continue
            for doc in _docs(module):
                for para in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
                    prose = " ".join(_sentences(" ".join(para.split())))
                    if prose and prose not in seen:
                        seen.add(prose)
                        out.append(prose)
    return tuple(out)


def bundled(part: str) -> str:
    """The calibration (even paragraphs) or evaluation (odd paragraphs) text, one paragraph a line."""
    if part not in (CALIBRATION, EVALUATION):
        raise PruningError(f"part {part!r} is not allowed; allowed: {CALIBRATION}, {EVALUATION}")
    return "\n".join(paragraphs()[0 if part == CALIBRATION else 1::2])


def tokenizer(checkpoint_dir: str | Path) -> Any:
    """The checkpoint's own tokenizer (``AutoTokenizer`` on the folder)."""
    prepare_torchvision()  # transformers' lazy classes import torchvision when it is installed
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(checkpoint_dir))
    except (OSError, ValueError, TypeError) as e:
        raise PruningError(f"checkpoint_dir {str(checkpoint_dir)!r} has no tokenizer the text can be "
                           f"tokenized with ({type(e).__name__}); pass token ids instead") from None


def token_ids(checkpoint_dir: str | Path, text: str | Path | Tensor | None, part: str) -> Tensor:
    """Flat token ids of ``text``: ids as given, a file's text, a string, or the bundled ``part``."""
    if isinstance(text, Tensor):
        return text.reshape(-1).long()
    if text is None:
        text = bundled(part)
    elif isinstance(text, Path) or (isinstance(text, str) and "\n" not in text and Path(text).is_file()):
        text = Path(text).read_text(encoding="utf-8")
    ids = tokenizer(checkpoint_dir)(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def windows(ids: Tensor, samples: int, seqlen: int, seed: int = 0) -> Tensor:
    """``samples`` windows of ``seqlen`` tokens at random offsets (fixed ``seed``): ``(samples, seqlen)``.

    Raises:
        PruningError: fewer tokens than ``seqlen``, or ``samples``/``seqlen`` not positive.
    """
    for value, name in ((samples, "samples"), (seqlen, "seqlen")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PruningError(f"{name} must be a positive int, got {value!r}")
    if ids.numel() < seqlen:
        raise PruningError(f"the calibration text has {ids.numel()} tokens, fewer than seqlen={seqlen}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seqlen + 1, (samples,), generator=g)
    return torch.stack([ids[s:s + seqlen] for s in starts.tolist()])


def chunks(ids: Tensor, seqlen: int) -> list[Tensor]:
    """Consecutive windows of ``seqlen`` tokens covering every token (the last may be shorter)."""
    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 2:
        raise PruningError(f"seqlen must be an int >= 2, got {seqlen!r}")
    if ids.numel() < 2:
        raise PruningError(f"the text has {ids.numel()} tokens; perplexity needs at least 2")
    out = list(ids.split(seqlen))
    if out[-1].numel() < 2:  # one token predicts nothing: give it to the previous window's end
        out = out[:-1]
    return [c.unsqueeze(0) for c in out]
