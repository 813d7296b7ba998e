"""The models people bring: a compatibility matrix over real architectures, secateurs beside Torch-Pruning (issue 14).

Every model is built from a random initialisation (timm with ``pretrained=False``, Hugging Face from small
random configs: 2 layers, hidden 64, 4 heads, 128 MLP neurons; nothing is downloaded), with small inputs
(timm CNNs 2x3x64x64, timm transformers at the smallest image size they take, token ids 2x8), in eval mode.
Each model, in its own forked process with a time limit (``--timeout``), goes through four cells:

- ``unstructured``: ``sc.prune(model, 0.5)`` (global magnitude); the sparsity reached.
- ``2:4``: ``sc.prune(model, 0.5, granularity="2:4")``; the sparsity reached over all prunable weights.
- ``structured``: ``sc.prune(model, 0.5, granularity="channel", scope="local", example_inputs=x)`` then
  ``small = sc.compact(model, x)``: parameters and FLOPs of ``small`` over the dense model's
  (``torch.utils.flop_counter``, one forward pass on ``x``), and the largest difference between the outputs of
  ``small`` and of the masked model. The units found are the removable coupled units of the channel graph
  (``secateurs.graph.analyse``): heads (a unit with several rows of one layer), and neurons (Linear rows) or
  channels (conv filters).
- ``round trip``: Hugging Face: ``sc.export_hf(small, dir)`` then ``AutoModel[ForCausalLM].from_pretrained(dir)``
  with transformers alone; timm and torch: ``sc.save(small, f)`` then ``sc.load(f, fresh model)``. The largest
  output difference between what was loaded and ``small``. Where ``export_hf`` refuses because the config
  cannot hold the pruned heads (BERT-style configs derive the head size from the hidden size), the round trip
  is done again with the MLP neurons alone pruned, and the cell says so.

- ``hidden``: the same as ``structured`` with ``hidden=True`` (the residual stream, or hidden width, pruned too:
  its writers, readers and the LayerNorms / RMSNorms over it form one coupled group; those norms then normalise
  over the kept channels, so the outputs change, and compaction stays exact against the masked model): params /
  FLOPs / max difference between ``small`` and the masked model (for a model that returns its hidden states, a
  Hugging Face base model, the masked model's kept channels) / the round trip as above. On models without a
  norm over channels it equals ``structured``.

A cell that raises says so (``fails: <type>: <first line>``). Every warning a cell raises is counted (``w``)
and the first is kept in the notes below the table: doing less than asked must warn. A structured cell that
leaves more than 90% of the parameters without a warning is marked ``SILENT``.

Torch-Pruning (``torch-pruning``, the ``bench`` extra; 1.6.1 pinned in constraints.txt), on the same dense
model, inputs and ratio with its defaults: ``tp.pruner.MetaPruner(model, x,
importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5, ignored_layers=[the classifier / pooler
/ lm_head])``, then ``step()``; its own recipes where it has them: timm ViT/DeiT attention (``num_heads`` of
each ``qkv``, ``prune_num_heads=True, head_pruning_ratio=0.5``, then ``num_heads``/``head_dim`` updated, as its
``examples/timm_models``), and Hugging Face BERT-style attention (``num_heads`` of ``query/key/value``, the same
head pruning, then the head counts and sizes updated, as its ``examples/transformers``; Hugging Face models
with a language-model head are traced back from their logits alone, ``output_transform``, not from the
key/value cache beside them). The cell is its
parameters and FLOPs ratios, or why it failed (an exception, or the pruned model no longer running on ``x``).
``params <= TP`` compares the parameters secateurs' compacted model keeps with Torch-Pruning's, where both ran:
with ``hidden=True`` where that cell succeeded (marked ``(hidden)``; Torch-Pruning prunes the hidden width too),
else with the exact default.

Run:  .venv/bin/python benchmarks/models.py [--models resnet18,bert] [--quick] [--timeout 300] [--out FILE]
      (--quick: the first model of each family and the torch layer). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import multiprocessing
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import secateurs as sc
from secateurs.graph import analyse
from secateurs.graph.patterns import attention_blocks
from secateurs.inputs import first_tensor

RATIO = 0.5
Built = tuple[nn.Module, tuple[Any, ...]]

# name -> (family, timm model name or config builder key, keyword arguments)
TIMM = {
    "resnet18": {}, "resnet50": {}, "resnext26ts": {}, "densenet121": {}, "mobilenetv2_100": {},
    "mobilenetv3_small_100": {}, "efficientnet_b0": {}, "regnety_002": {}, "ghostnet_100": {}, "convnext_atto": {},
    "vit_tiny_patch16_224": {"img_size": 32}, "deit_tiny_patch16_224": {"img_size": 32},
    "swin_tiny_patch4_window7_224": {"img_size": 64, "window_size": 4}, "mixer_s16_224": {"img_size": 32},
    "levit_128s": {"img_size": 64},
}
HF = ("bert", "distilbert", "roberta", "gpt2", "llama", "mistral", "qwen2", "vit")
TORCH = ("TransformerEncoderLayer",)
QUICK = ("resnet18", "vit_tiny_patch16_224", "bert", "llama", "TransformerEncoderLayer")


def _timm(name: str) -> Built:
    import timm

    kw = TIMM[name]
    model = timm.create_model(name, pretrained=False, num_classes=10, **kw)
    size = kw.get("img_size", 64)
    return model.eval(), (torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)),)


def _hf_config(name: str) -> tuple[Any, Any]:
    import transformers as tf

    size = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "num_hidden_layers": 2,
            "vocab_size": 100}
    llm = {"num_key_value_heads": 2, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    return {
        "bert": (tf.BertModel, tf.BertConfig(**size)),
        "roberta": (tf.RobertaModel, tf.RobertaConfig(**size)),
        "distilbert": (tf.DistilBertModel, tf.DistilBertConfig(vocab_size=100, n_layers=2, dim=64, n_heads=4,
                                                               hidden_dim=128)),
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(vocab_size=100, n_layer=2, n_embd=64, n_head=4, n_inner=128,
                                                   n_positions=16, bos_token_id=0, eos_token_id=0)),
        "llama": (tf.LlamaForCausalLM, tf.LlamaConfig(**size, **llm)),
        "mistral": (tf.MistralForCausalLM, tf.MistralConfig(**size, **llm)),
        "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config(**size, **llm)),
        "vit": (tf.ViTModel, tf.ViTConfig(image_size=32, patch_size=8, **{k: v for k, v in size.items()
                                                                          if k != "vocab_size"})),
    }[name]


def _hf(name: str) -> Built:
    cls, config = _hf_config(name)
    model = cls(config).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=gen) if name == "vit" else torch.randint(1, 100, (2, 8), generator=gen)
    return model, (x,)


def _torch(name: str) -> Built:
    model = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0).eval()
    return model, (torch.randn(8, 2, 64, generator=torch.Generator().manual_seed(0)),)


def family(name: str) -> str:
    return "timm" if name in TIMM else "hf" if name in HF else "torch"


def build(name: str) -> Built:
    torch.manual_seed(0)
    return {"timm": _timm, "hf": _hf, "torch": _torch}[family(name)](name)


# ---------------------------------------------------------------- measures


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, x: tuple[Any, ...]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*x)
    return counter.get_total_flops()


def output(model: nn.Module, x: tuple[Any, ...]) -> torch.Tensor:
    with torch.no_grad():
        out = model(*x)
    return first_tensor(out.logits if hasattr(out, "logits") else out)


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float("inf") if a.shape != b.shape else float((a.float() - b.float()).abs().max())


def units(model: nn.Module, x: tuple[Any, ...]) -> str:
    """``"8h 256n"``: the removable units of the channel graph. A unit with several rows of one layer is an
    attention head (h) in a Linear layer, a group of channels (g) in a conv; one row per layer is a neuron (n)
    of Linear layers (and ``transformers``' Conv1D) or a channel (c) of conv layers."""
    g = analyse(model, x)
    counts = {"h": 0, "g": 0, "n": 0, "c": 0}
    for members in g.units().values():
        names = [n for n, _ in members]
        module = model.get_submodule(names[0]) if names[0] else model
        linear = not isinstance(module, nn.modules.conv._ConvNd)
        several = len(names) != len(set(names))
        counts[("h" if linear else "g") if several else ("n" if linear else "c")] += 1
    return " ".join(f"{v}{k}" for k, v in counts.items() if v) or "none"


def failed(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"fails: {type(exc).__name__}: {first[:150]}"


def cell(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()`` with its warnings counted (``warnings``) and the first kept (``warning``); an exception
    becomes ``{"error": ...}``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except Exception as exc:  # every failure is a result of the matrix
            out = {"error": failed(exc)}
    mine = [w for w in caught if not issubclass(w.category, (DeprecationWarning, FutureWarning))]
    out["warnings"] = len(mine)
    if mine:
        out["warning"] = str(mine[0].message).splitlines()[0][:300]
    return out


# ---------------------------------------------------------------- secateurs


def unstructured(name: str) -> dict[str, Any]:
    model, _ = build(name)
    sc.prune(model, RATIO)
    return {"sparsity": sc.sparsity(model)}


def nm(name: str) -> dict[str, Any]:
    model, _ = build(name)
    sc.prune(model, RATIO, granularity="2:4")
    return {"sparsity": sc.sparsity(model)}


def structured(name: str, folder: Path, hidden: bool = False) -> dict[str, Any]:
    """Prune channels (and the hidden width with ``hidden``), compact, measure; then the round trip of the
    compacted model (its own cell)."""
    model, x = build(name)
    dense_params, dense_flops = params(model), flops(model, x)
    found = units(model, x)
    sc.prune(model, RATIO, granularity="channel", scope="local", example_inputs=x, hidden=hidden)
    small = sc.compact(model, x).eval()
    out = {"units": found, "params": params(small) / dense_params, "flops": flops(small, x) / dense_flops,
           "diff": diff(output(small, x), kept_channels(output(model, x), output(small, x))),
           "params_left": params(small)}
    out["round_trip"] = cell(lambda: round_trip(name, small, x, folder))
    if "cannot express the compacted sizes" in out["round_trip"].get("error", "") and not hidden:
        out["round_trip"] = cell(lambda: mlp_only(name, folder))
    return out


def kept_channels(masked: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """The masked model's outputs as a compacted model that returns its pruned hidden states gives them: the
    channels (last axis) that are not all zero, when the shapes differ there."""
    if masked.shape == small.shape or masked.shape[:-1] != small.shape[:-1]:
        return masked
    return masked[..., masked.flatten(0, -2).abs().sum(dim=0) != 0]


def mlp_only(name: str, folder: Path) -> dict[str, Any]:
    """The round trip of a model whose config cannot hold pruned heads (its head size is derived from the
    hidden size): prune the MLP neurons alone (attention layers excluded), compact, export, load."""
    model, x = build(name)
    skip = {n: None for a in attention_blocks(model) for n in (a.q, a.k, a.v, a.out) if n}
    sc.prune(model, RATIO, granularity="channel", scope="local", example_inputs=x, layers=skip)
    small = sc.compact(model, x).eval()
    out = round_trip(name, small, x, folder)
    return {**out, "note": "MLP only: the config cannot hold pruned heads"}


def round_trip(name: str, small: nn.Module, x: tuple[Any, ...], folder: Path) -> dict[str, Any]:
    if family(name) == "hf":
        import transformers as tf

        tf.utils.logging.disable_progress_bar()
        auto = tf.AutoModelForCausalLM if hasattr(small, "lm_head") else tf.AutoModel
        back = auto.from_pretrained(sc.export_hf(small, folder / "hf")).eval()
        how = "export_hf + from_pretrained"
    else:
        sc.save(small, folder / "model.safetensors")
        back = sc.load(folder / "model.safetensors", build(name)[0]).eval()
        how = "sc.save + sc.load"
    return {"diff": diff(output(back, x), output(small, x)), "how": how}


def secateurs_cells(name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        s = cell(lambda: structured(name, Path(tmp)))
    with tempfile.TemporaryDirectory() as tmp:
        h = cell(lambda: structured(name, Path(tmp), hidden=True))
    h["round_trip"] = h.get("round_trip", {"error": "skipped: pruning failed"})
    return {"unstructured": cell(lambda: unstructured(name)), "2:4": cell(lambda: nm(name)), "structured": s,
            "round_trip": s.pop("round_trip", {"error": "skipped: structured pruning failed"}), "hidden": h}


# ---------------------------------------------------------------- Torch-Pruning


def classifier(model: nn.Module) -> list[nn.Module]:
    """What Torch-Pruning is told to leave whole: the classifier head, the pooler, the language-model head."""
    out = []
    for attr in ("head", "fc", "classifier", "lm_head", "pooler"):
        m = getattr(model, attr, None)
        if isinstance(m, nn.Module) and any(True for _ in m.parameters()):
            out.append(m)
    heads = getattr(model, "head", None)
    if heads is not None and hasattr(heads, "fc"):  # timm's ClassifierHead / NormMlpClassifierHead
        out.append(heads.fc)
    return out


QKV = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"))
HEAD_COUNT = ("num_attention_heads", "n_heads", "num_heads")


def attention_recipe(model: nn.Module) -> dict[nn.Module, int]:
    """Torch-Pruning's ``num_heads``: timm's fused ``qkv`` and Hugging Face's separate query/key/value."""
    heads: dict[nn.Module, int] = {}
    for m in model.modules():
        count = next((getattr(m, a) for a in HEAD_COUNT if isinstance(getattr(m, a, None), int)), None)
        if count is None:
            continue
        if isinstance(getattr(m, "qkv", None), nn.Linear) and family_of(model) == "timm":
            heads[m.qkv] = count
        for names in QKV:
            if all(isinstance(getattr(m, n, None), nn.Linear) for n in names):
                heads.update({getattr(m, n): count for n in names})
    return heads


def family_of(model: nn.Module) -> str:
    return "timm" if type(model).__module__.startswith("timm") else "other"


def update_heads(model: nn.Module, pruner: Any) -> None:
    """After pruning heads, the attention modules' head counts and sizes (as Torch-Pruning's examples do)."""
    for m in model.modules():
        proj = getattr(m, "qkv", None) if isinstance(getattr(m, "qkv", None), nn.Linear) else next(
            (getattr(m, names[0]) for names in QKV if isinstance(getattr(m, names[0], None), nn.Linear)), None)
        if proj is None or proj not in pruner.num_heads:
            continue
        n = pruner.num_heads[proj]
        width = proj.out_features // (3 if proj is getattr(m, "qkv", None) else 1)
        for attr in HEAD_COUNT:
            if hasattr(m, attr):
                setattr(m, attr, n)
        for attr in ("head_dim", "attention_head_size"):
            if hasattr(m, attr):
                setattr(m, attr, width // n)
        for attr in ("all_head_size", "attn_dim", "dim"):
            if isinstance(getattr(m, attr, None), int):
                setattr(m, attr, width)


def torch_pruning_cell(name: str) -> dict[str, Any]:
    import torch_pruning as tp

    model, x = build(name)
    dense_params, dense_flops = params(model), flops(model, x)
    heads = attention_recipe(model)
    recipe = {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False,
              "head_pruning_ratio": RATIO} if heads else {}
    if hasattr(model, "lm_head"):  # trace back from the logits alone, not the key/value cache beside them
        recipe["output_transform"] = lambda out: out.logits
    pruner = tp.pruner.MetaPruner(model, x[0], importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=RATIO, ignored_layers=classifier(model), **recipe)
    pruner.step()
    if heads:
        update_heads(model, pruner)
    try:
        output(model, x)
    except Exception as exc:
        return {"error": f"pruned model fails on the inputs: {failed(exc).removeprefix('fails: ')}"}
    return {"params": params(model) / dense_params, "flops": flops(model, x) / dense_flops,
            "params_left": params(model), "recipe": "heads" if heads else "defaults"}


# ---------------------------------------------------------------- running and the table


def _child(fn: Callable[[str], dict[str, Any]], name: str, conn: Any) -> None:
    torch.set_num_threads(1)
    try:
        conn.send(fn(name))
    except BaseException as exc:  # noqa: BLE001 - reported, not raised
        conn.send({"error": failed(exc), "trace": traceback.format_exc(limit=3)})
    conn.close()


def isolated(fn: Callable[[str], dict[str, Any]], name: str, timeout: float) -> tuple[dict[str, Any], float]:
    """``fn(name)`` in a forked process, killed after ``timeout`` seconds; its result and the seconds taken."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, name, child))
    start = time.perf_counter()
    proc.start()
    child.close()
    result = parent.recv() if parent.poll(timeout) else {"error": f"fails: did not finish in {timeout:.0f} s"}
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return result, time.perf_counter() - start


def fmt_sparsity(c: dict[str, Any]) -> str:
    return c["error"] if "error" in c else f"ok {c['sparsity']:.2f}" + (f" ({c['warnings']}w)" if c["warnings"] else "")


def fmt_structured(c: dict[str, Any]) -> str:
    if "error" in c:
        return c["error"]
    silent = " SILENT" if c["params"] > 0.9 and not c["warnings"] else ""
    w = f" ({c['warnings']}w)" if c["warnings"] else ""
    return f"{c['params']:.2f} / {c['flops']:.2f} / {c['diff']:.1e}{w}{silent}"


def fmt_hidden(c: dict[str, Any]) -> str:
    if "error" in c:
        return c["error"]
    trip = c["round_trip"]
    return fmt_structured(c) + (f"; trip {trip['diff']:.1e}" if "error" not in trip else f"; trip {trip['error']}")


def fmt_trip(c: dict[str, Any]) -> str:
    return c["error"] if "error" in c else f"ok {c['diff']:.1e}" + (f" ({c['note']})" if c.get("note") else "")


def fmt_tp(c: dict[str, Any]) -> str:
    return c["error"] if "error" in c else f"{c['params']:.2f} / {c['flops']:.2f}" + (
        " (heads)" if c.get("recipe") == "heads" else "")


def best(s: dict[str, Any]) -> dict[str, Any]:
    """The cell ``params <= TP`` compares: ``hidden=True`` where it succeeded (marked), else the default."""
    h = s.get("hidden", {"error": "not run"})
    return {**h, "mode": " (hidden)"} if "error" not in h else s.get("structured", {"error": s.get("error", "fails")})


def compare(s: dict[str, Any], t: dict[str, Any]) -> str:
    mode = s.get("mode", "")
    if "error" in s or "error" in t:
        return "secateurs only" if "error" in t and "error" not in s else "TP only" if "error" in s and \
            "error" not in t else "neither"
    return ("yes" if s["params_left"] <= t["params_left"] else f"no (+{s['params_left'] - t['params_left']:,})") + mode


HEADER = ("| model | units | unstructured 50% | 2:4 | structured 50%: params / FLOPs / max diff | round trip "
          "| hidden=True: params / FLOPs / max diff; round trip | Torch-Pruning: params / FLOPs | params <= TP "
          "| s (sc / TP) |\n|---|---|---|---|---|---|---|---|---|---|")


def row(name: str, s: dict[str, Any], t: dict[str, Any], secs: tuple[float, float]) -> str:
    st = s.get("structured", {"error": s.get("error", "fails")})
    cells = [name, st.get("units", "-"), fmt_sparsity(s.get("unstructured", s)), fmt_sparsity(s.get("2:4", s)),
             fmt_structured(st), fmt_trip(s.get("round_trip", s)), fmt_hidden(s.get("hidden", s)), fmt_tp(t),
             compare(best(s), t),
             f"{secs[0]:.0f} / {secs[1]:.0f}"]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def notes(results: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """The first warning of each secateurs cell that warned: what it did less than asked, and why."""
    out = []
    for name, (s, _) in results.items():
        for key in ("unstructured", "2:4", "structured", "hidden"):
            c = s.get(key, {})
            if c.get("warning"):
                out.append(f"- {name}, {key}: {c['warning']}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated names (default: all)")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per model and library (default 120)")
    p.add_argument("--no-tp", action="store_true", help="leave Torch-Pruning out")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    a = p.parse_args()
    names = [*TIMM, *HF, *TORCH]
    chosen = a.models.split(",") if a.models else list(QUICK) if a.quick else names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(names)}")
    try:
        tp_version = "" if a.no_tp else importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        tp_version = ""
    warnings.simplefilter("ignore")
    results, lines = {}, [HEADER]
    print(f"secateurs {sc.__version__ if hasattr(sc, '__version__') else ''}, torch {torch.__version__}, "
          f"Torch-Pruning {tp_version or 'not run'}; ratio {RATIO}, timeout {a.timeout:.0f} s", flush=True)
    print(HEADER, flush=True)
    for name in chosen:
        s, s_secs = isolated(secateurs_cells, name, a.timeout)
        t, t_secs = isolated(torch_pruning_cell, name, a.timeout) if tp_version else ({"error": "not run"}, 0.0)
        results[name] = (s, t)
        lines.append(row(name, s, t, (s_secs, t_secs)))
        print(lines[-1], flush=True)
    summary = scoreboard(results)
    text = "\n".join([*lines, "", *summary, "", "Warnings (first of each cell):", *notes(results)])
    print("\n".join(["", *summary, "", "Warnings (first of each cell):", *notes(results)]))
    if a.out:
        Path(a.out).write_text(text + "\n")


def scoreboard(results: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    ok = lambda c: "error" not in c  # noqa: E731
    st = {n: s.get("structured", s) for n, (s, _) in results.items()}
    chosen = {n: best(s) for n, (s, _) in results.items()}
    both = [n for n, (_, t) in results.items() if ok(chosen[n]) and ok(t)]
    better = [n for n in both if chosen[n]["params_left"] <= results[n][1]["params_left"]]
    exact = [n for n, (_, t) in results.items() if ok(st[n]) and ok(t) and st[n]["params_left"] <= t["params_left"]]
    cells = sum(1 for s, _ in results.values() for k in ("unstructured", "2:4", "structured", "round_trip")
                if ok(s.get(k, s)))
    silent = [n for n in st if ok(st[n]) and st[n]["params"] > 0.9 and not st[n]["warnings"]]
    return [f"secateurs cells that succeed: {cells} of {4 * len(results)}; structured + compact on "
            f"{sum(ok(c) for c in st.values())} of {len(results)} models; Torch-Pruning on "
            f"{sum(ok(t) for _, t in results.values())}.",
            f"Parameters left <= Torch-Pruning's on {len(better)} of the {len(both)} models both handle, with "
            f"hidden=True where it ran"
            + (f" (not on: {', '.join(n for n in both if n not in better)})" if len(better) < len(both) else "")
            + f"; with the exact default (residual stream kept) on {len(exact)}.",
            f"Silent no-ops (structured, > 90% of parameters left, no warning): {', '.join(silent) or 'none'}."]


if __name__ == "__main__":
    main()
