#!/usr/bin/env python3
"""PyTorch reference for the speed comparison in bench/torch_vs_monobench_bench.ts.

Trains a BatchTopK SAE the way the reference code does (dense PyTorch ops, as in
dictionary_learning's BatchTopKTrainer: dense encoder, batch-top-K by torch.topk over the
flattened batch, dense decoder, AuxK, decoder-gradient projection, grad-norm clipping 1.0,
Adam, decoder renormalisation, threshold EMA) for a fixed number of steps on the float32 data
file given on the command line, and prints one JSON line with timings.

Written for this project from the algorithm description in the paper notes; no code copied.
Usage: torch_ref.py DATA.f32 N D --expansion E --k K --batch B --steps S [--warmup W]
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("n", type=int)
    ap.add_argument("d", type=int)
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--auxk-alpha", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    raw = np.fromfile(args.data, dtype="<f4")
    if raw.size != args.n * args.d:
        sys.exit(f"torch_ref: {args.data} holds {raw.size} floats, expected {args.n}x{args.d}")
    x_all = torch.from_numpy(raw.reshape(args.n, args.d).copy())
    d, omega, k, B = args.d, args.d * args.expansion, args.k, args.batch

    enc = torch.nn.Linear(d, omega)
    dec = torch.nn.Linear(omega, d, bias=False)
    with torch.no_grad():
        w = dec.weight / dec.weight.norm(dim=0, keepdim=True)
        dec.weight.copy_(w)
        enc.weight.copy_(w.T)
        enc.bias.zero_()
    b_dec = torch.nn.Parameter(torch.zeros(d))
    params = list(enc.parameters()) + list(dec.parameters()) + [b_dec]
    lr = 2e-4 / math.sqrt(omega / 2**14)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(omega)
    threshold = torch.tensor(-1.0)
    top_k_aux = d // 2

    def step(x: torch.Tensor) -> float:
        nonlocal threshold
        pre = torch.relu(enc(x - b_dec))
        flat = pre.flatten()
        vals, idx = flat.topk(k * x.shape[0], sorted=False)
        f = torch.zeros_like(flat).scatter_(-1, idx, vals).reshape(pre.shape)
        xhat = dec(f) + b_dec
        e = x - xhat
        l2 = e.pow(2).sum(-1).mean()
        fired = (f != 0).any(0)
        since_fired.add_(x.shape[0])
        since_fired[fired] = 0
        dead = since_fired >= 10_000_000
        aux = torch.tensor(0.0)
        if int(dead.sum()) > 0:
            k_aux = min(top_k_aux, int(dead.sum()))
            masked = torch.where(dead[None], pre, torch.tensor(-float("inf")))
            av, ai = masked.topk(k_aux, sorted=False)
            fa = torch.zeros_like(pre).scatter_(-1, ai, av)
            res = e.detach()
            ea = dec(fa)
            num = (res - ea).pow(2).sum(-1).mean()
            den = (res - res.mean(0, keepdim=True)).pow(2).sum(-1).mean()
            aux = (num / den).nan_to_num(0.0)
        loss = l2 + args.auxk_alpha * aux
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            wn = dec.weight / dec.weight.norm(dim=0, keepdim=True)
            par = (dec.weight.grad * wn).sum(0, keepdim=True)
            dec.weight.grad -= par * wn
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            dec.weight /= dec.weight.norm(dim=0, keepdim=True)
            active = vals[vals > 0]
            m = active.min() if active.numel() else torch.tensor(0.0)
            threshold = m if threshold < 0 else 0.999 * threshold + 0.001 * m
        return float(loss)

    order = torch.randperm(args.n)
    nb = max(1, args.n // B)

    def batch(i: int) -> torch.Tensor:
        j = i % nb
        return x_all[order[j * B:(j + 1) * B]]

    for i in range(args.warmup):
        step(batch(i))
    t0 = time.perf_counter()
    last = 0.0
    for i in range(args.steps):
        last = step(batch(args.warmup + i))
    dt = time.perf_counter() - t0
    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "sec_per_step": dt / args.steps,
        "final_loss": last,
        "d": d,
        "omega": omega,
        "batch": B,
        "k": k,
    }))


if __name__ == "__main__":
    main()
