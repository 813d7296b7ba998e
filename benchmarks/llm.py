"""sc.llm on a small trained causal LM (quality) and on a >= 1B random bf16 checkpoint (scale).

quality: a Llama-architecture model is trained here on the bundled real text (the standard library's
docstrings, `sc.llm.bundled("calibration")`) with a byte-level BPE tokenizer trained offline on the same
text, cached in benchmarks/.cache/llm-small/ (saved in shards). It is pruned at 50% (per row) and 2:4 by
magnitude, Wanda, SparseGPT and SparseGPT + OWL (50% only: OWL needs unstructured sparsity), streaming from
its shards, and the perplexity of each result on the held-out text (`sc.llm.bundled("evaluation")`) is
printed beside the dense one.

scale: a random-init Llama checkpoint of ~1.1B parameters (TinyLlama's shape) is written shard by shard in
bf16 (one layer in memory at a time) under --scale-dir, the shards are read once alone (read bandwidth),
then Wanda prunes it at 50% in a fresh process, whose peak resident memory, and time split into read,
compute and write, are printed against the checkpoint's size.

Usage: python benchmarks/llm.py [quality|scale|all] [--steps 300] [--scale-dir /tmp/secateurs-llm-1b]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _load import busy_seconds  # benchmarks/ is the script's directory
from safetensors import safe_open
from safetensors.torch import save_file

import secateurs as sc

CACHE = Path(__file__).resolve().parent / ".cache"
SMALL = {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 256, "tie_word_embeddings": False}
BIG = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048, "tie_word_embeddings": False}
SEQLEN = 64


def _tokenizer(text: str) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=SMALL["vocab_size"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def train_small(steps: int) -> Path:
    """Train (or reuse) the small model; returns its folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = CACHE / f"llm-small-{steps}"
    if (out / "model.safetensors.index.json").is_file():
        return out
    torch.manual_seed(0)
    text = sc.llm.bundled("calibration")
    tok = _tokenizer(text)
    ids = torch.tensor(tok(text)["input_ids"])
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    params = sum(p.numel() for p in model.parameters())
    print(f"training: {params / 1e6:.1f}M parameters, {ids.numel()} tokens, {steps} steps of 16 x {SEQLEN}")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(steps):
        starts = torch.randint(0, ids.numel() - SEQLEN, (16,), generator=g)
        batch = torch.stack([ids[s:s + SEQLEN] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    model.save_pretrained(out, max_shard_size="4MB")
    tok.save_pretrained(out)
    return out


def quality(steps: int) -> None:
    folder = train_small(steps)
    ppl = lambda d: sc.llm.perplexity(d, None, seqlen=SEQLEN, show_progress=False)
    print(f"\ndense perplexity on held-out text: {ppl(folder):.2f}")
    print(f"{'sparsity':<9} {'method':<15} {'perplexity':>10} {'x dense':>8} {'prune s':>8}")
    dense = ppl(folder)
    for sparsity in (0.5, "2:4"):
        runs = [("magnitude", "uniform"), ("wanda", "uniform"), ("sparsegpt", "uniform")]
        runs += [("sparsegpt", "owl"), ("wanda", "owl")] if sparsity == 0.5 else []
        for method, allocation in runs:
            out = CACHE / f"pruned-{steps}-{method}-{allocation}-{str(sparsity).replace(':', 'of')}"
            t0 = time.perf_counter()
            sc.llm.prune(folder, out, sparsity, method, None, allocation, samples=32, seqlen=SEQLEN,
                         show_progress=False)
            secs = time.perf_counter() - t0
            p = ppl(out)
            name = method + (" + OWL" if allocation == "owl" else "")
            print(f"{sparsity!s:<9} {name:<15} {p:>10.2f} {p / dense:>8.2f} {secs:>8.1f}", flush=True)


def write_big(folder: Path) -> int:
    """Write a random bf16 Llama of BIG's shape shard by shard; returns its size in bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return json.loads(index.read_text())["metadata"]["total_size"]
    folder.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(**BIG, dtype="bfloat16")
    cfg.save_pretrained(folder)
    with torch.device("meta"):  # the skeleton gives the shapes, no memory
        shapes = {n: tuple(p.shape) for n, p in LlamaForCausalLM(cfg).state_dict().items()}
    groups: dict[str, list[str]] = {}
    for name in shapes:
        key = ".".join(name.split(".")[:3]) if name.startswith("model.layers.") else "rest"
        groups.setdefault(key, []).append(name)
    weight_map, total, g = {}, 0, torch.Generator().manual_seed(0)
    for i, (key, names) in enumerate(groups.items()):
        tensors = {n: (torch.ones(shapes[n]) if n.endswith("norm.weight") else
                       torch.randn(shapes[n], generator=g) * 0.02).to(torch.bfloat16) for n in names}
        file = f"model-{i:05d}.safetensors"
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update(dict.fromkeys(names, file))
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def read_all(folder: Path) -> tuple[float, int]:
    """Seconds to read every tensor once (safe_open, one at a time), and the bytes read."""
    t0, n = time.perf_counter(), 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, framework="pt") as s:
            for k in s.keys():  # noqa: SIM118
                n += s.get_tensor(k).clone().numel() * 2  # clone: the bytes are really read
    return time.perf_counter() - t0, n


def scale(folder: Path) -> None:
    t0 = time.perf_counter()
    size = write_big(folder)
    print(f"checkpoint: {size / 1e9:.2f} GB bf16 ({size / 2 / 1e9:.2f}B parameters), written (or found in "
          f"--scale-dir) in {time.perf_counter() - t0:.0f}s")
    secs, n = read_all(folder)
    print(f"read alone: {n / 1e9:.2f} GB in {secs:.1f}s = {n / secs / 1e9:.2f} GB/s (page cache as it was)")
    # random token ids as calibration: the random checkpoint has no tokenizer (and no language)
    code = ("import json,sys,torch,secateurs as sc; ids=torch.randint(0, 32000, (4, 128)); "
            "r=sc.llm.prune(sys.argv[1], sys.argv[2], 0.5, 'wanda', ids, show_progress=False); print(json.dumps({'layers': r.layers, "
            "'peak': r.peak_rss_bytes}))")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(folder) + "-wanda50"], check=True,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r = json.loads(done.stdout.strip().splitlines()[-1])
    parts = {k: sum(e[k] for e in r["layers"]) for k in ("read_s", "compute_s", "write_s")}
    print(f"wanda 50%: {wall:.0f}s wall in a fresh process; layers: read {parts['read_s']:.1f}s, compute "
          f"{parts['compute_s']:.1f}s, write {parts['write_s']:.1f}s")
    print(f"peak resident memory {r['peak'] / 1e9:.2f} GB = {r['peak'] / size:.3f} x the checkpoint's size")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", nargs="?", default="all", choices=["quality", "scale", "all"])
    p.add_argument("--steps", type=int, default=300, help="training steps of the small model")
    p.add_argument("--scale-dir", type=Path, default=Path("/tmp/secateurs-llm-1b"))
    a = p.parse_args()
    torch.set_num_threads(1)  # the machine is shared: one thread stalls less under contention
    start = busy_seconds()
    if a.part in ("quality", "all"):
        quality(a.steps)
    if a.part in ("scale", "all"):
        scale(a.scale_dir)
    end = busy_seconds()
    if start and end:
        others = (end[0] - start[0]) - (end[1] - start[1])
        print(f"\nother processes used {others:.0f} CPU seconds meanwhile (2 cores shared): timings are indicative")


if __name__ == "__main__":
    main()
