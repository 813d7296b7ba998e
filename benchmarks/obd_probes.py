"""OBD's Hutchinson estimate of the Hessian diagonal against the exact one, by number of probes (issue 15).

LeNet-300-100 trained one epoch on the bundled MNIST; one batch of 256; the exact diagonal of ``fc3.weight``
(1,000 entries, one Hessian row each), then Rademacher probes over all the weights as ``sc.criteria`` OBD draws
them. Prints, per probe count, the correlation of the estimate (and of the scores ``w² H_jj``) with the exact
values, the share of negative estimates (the exact diagonal has none) and the time per probe; and the share of
the CPU other processes used (the timings are only indicative on a busy machine; the correlations are not
timings).

Usage: ``python benchmarks/obd_probes.py``
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from _load import busy_seconds  # benchmarks/ is the script's directory

from secateurs import zoo
from secateurs.training.loop import train


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = zoo.dataset("mnist")
    model = zoo.model("lenet-300-100")
    train(model, ds.train, epochs=1, lr=1e-3, batch_size=128, seed=0, desc="train", progress=False)
    x, y = ds.train.tensors[0][:256], ds.train.tensors[1][:256]
    w = model.fc3.weight
    g = torch.autograd.grad(F.cross_entropy(model(x), y), w, create_graph=True)[0].reshape(-1)
    exact = torch.stack([torch.autograd.grad(g[j], w, retain_graph=True)[0].reshape(-1)[j] for j in range(g.numel())])
    params = [p for n, p in model.named_parameters() if n.endswith("weight")]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
    gen, total = torch.Generator().manual_seed(0), torch.zeros_like(exact)
    before, t0 = busy_seconds(), time.perf_counter()
    print("probes  corr(diag)  corr(score)  negative  ms/probe")
    for s in range(1, 257):
        z = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).float() for p in params]
        hz = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, z)), params, retain_graph=True)
        total += (z[-1] * hz[-1]).reshape(-1)
        if s in (4, 16, 32, 64, 128, 256):
            est, w2 = total / s, w.detach().reshape(-1) ** 2
            c = float(torch.corrcoef(torch.stack([est, exact]))[0, 1])
            cs = float(torch.corrcoef(torch.stack([est * w2, exact * w2]))[0, 1])
            print(f"{s:>6}  {c:>10.3f}  {cs:>11.3f}  {float((est < 0).float().mean()):>8.0%}  "
                  f"{(time.perf_counter() - t0) / s * 1000:>8.1f}")
    after = busy_seconds()
    if before and after:
        wall = time.perf_counter() - t0
        others = (after[0] - before[0]) - (after[1] - before[1])
        print(f"other processes used {others / wall:.2f} CPUs while this ran")


if __name__ == "__main__":
    main()
