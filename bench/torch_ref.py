#!/usr/bin/env python3
"""PyTorch reference for the speed comparison in bench/torch_vs_monobench_bench.ts.

Trains a BatchTopK SAE the way the paper's training code does (dense PyTorch ops
as in dictionary_learning's BatchTopKTrainer) for a fixed number of steps on a raw float32 file
and prints one JSON line with the timings. One update is:

  - input normalisation: every batch is divided by norm_factor = sqrt(mean over batches of
    mean_b ||x_b||^2), computed once before training (reference get_norm_factor);
  - step 0 only: b_dec = geometric median of the first batch (Weiszfeld, 100 iterations);
  - pre = ReLU(W_enc (x - b_dec) + b_enc); f = the K*B largest values of the flattened batch
    (torch.topk(sorted=False) + scatter into a dense zero matrix);
  - when step > threshold_start: threshold EMA (beta 0.999) of min(f[f > 0]) over the dense f;
  - x_hat = W_dec f + b_dec (dense matmul); L = mean_b ||x - x_hat||^2;
  - dead-latent counters (fired = column sum of f > 0); AuxK on the top-k_aux dead
    pre-activations per sample, k_aux = min(d // 2, #dead), only when some latent is dead;
  - backward; remove the W_dec gradient component parallel to each decoder direction;
    clip_grad_norm_(1.0); Adam(0.9, 0.999); LambdaLR linear warmup; decoder columns back to
    unit norm (W / (||W|| + float32 eps)).

Every step ends with loss.item() (the reference's update() returns it), so the timing of a step
includes all of its work. Step 0 (geometric median, first allocations) should be a warm-up
step: only the steps after --warmup are timed.

Written for this project from the algorithm description (the reference trainer); no
code copied from the reference implementation.

Usage: torch_ref.py DATA.f32 N D [--expansion E] [--k K] [--batch B] [--steps S] [--warmup W]
         [--threshold-start T] [--dead-after TOKENS] [--lr-warmup STEPS] [--threads N] [--seed S]
"""
import argparse
import ctypes
import ctypes.util
import json
import math
import os
import sys
import time

import numpy as np
import torch

F32_EPS = float(torch.finfo(torch.float32).eps)


def openblas_info() -> dict:
    """OpenBLAS core and thread count as the library loaded in this process reports them."""
    info = {"openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE")}
    for name in ("libopenblas.so.0", ctypes.util.find_library("openblas")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            info["openblas_core"] = lib.openblas_get_corename().decode()
            info["openblas_threads"] = int(lib.openblas_get_num_threads())
            break
        except (OSError, AttributeError):
            continue
    return info


def unit_columns(w: torch.Tensor) -> torch.Tensor:
    """Scale every column (one latent's decoder direction; nn.Linear stores W_dec as [d, ω])."""
    return w / (w.norm(dim=0, keepdim=True) + F32_EPS)


def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """Weiszfeld iterations starting from the mean; stop when the update moves less than tol."""
    g = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - g).norm(dim=1)
        w = w / w.sum()
        nxt = (w[:, None] * x).sum(0)
        moved = float((nxt - g).norm())
        g = nxt
        if moved < tol:
            break
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="raw little-endian float32 file, N rows of D values")
    ap.add_argument("n", type=int)
    ap.add_argument("d", type=int)
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones (>= 1)")
    ap.add_argument("--auxk-alpha", type=float, default=0.03)
    ap.add_argument("--threshold-start", type=int, default=1000, help="threshold EMA when step > this")
    ap.add_argument("--dead-after", type=int, default=10_000_000, help="samples without firing = dead")
    ap.add_argument("--lr-warmup", type=int, default=0, help="linear lr warmup steps (reference: 1000)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: keep default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.k < 1 or args.expansion < 1:
        sys.exit("torch_ref: steps, batch, k and expansion must be >= 1 and warmup >= 0")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    raw = np.fromfile(args.data, dtype="<f4")
    if raw.size != args.n * args.d:
        sys.exit(f"torch_ref: {args.data} holds {raw.size} floats, expected {args.n}x{args.d}")
    x_all = torch.from_numpy(raw.reshape(args.n, args.d).copy())
    d, omega, k = args.d, args.d * args.expansion, args.k
    B = min(args.batch, args.n)

    # Batches as cycle(DataLoader(shuffle=True)): one permutation, last partial batch kept.
    order = torch.randperm(args.n)
    nb = math.ceil(args.n / B)

    def raw_batch(i: int) -> torch.Tensor:
        j = i % nb
        return x_all[order[j * B:(j + 1) * B]]

    # Norm factor over (up to) 100 batches of its own shuffle.
    norm_order = torch.randperm(args.n)
    sq = [x_all[norm_order[j * B:(j + 1) * B]].pow(2).sum(-1).mean() for j in range(min(100, nb))]
    norm_factor = float(torch.stack(sq).mean().sqrt())

    # Model: nn.Linear encoder (with b_enc), bias-free nn.Linear decoder, separate b_dec.
    enc = torch.nn.Linear(d, omega)
    dec = torch.nn.Linear(omega, d, bias=False)
    with torch.no_grad():
        dec.weight.copy_(unit_columns(dec.weight))
        enc.weight.copy_(dec.weight.T)
        enc.bias.zero_()
    b_dec = torch.nn.Parameter(torch.zeros(d))
    params = [enc.weight, enc.bias, dec.weight, b_dec]
    lr = 2e-4 / math.sqrt(omega / 2**14)  # what the public scripts produce (no --lr passed)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    warm = args.lr_warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / warm) if warm > 0 else 1.0)

    since_fired = torch.zeros(omega, dtype=torch.long)
    threshold = torch.tensor(-1.0)
    top_k_aux = d // 2
    neg_inf = torch.tensor(-math.inf)

    def aux_loss(residual: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        dead = since_fired >= args.dead_after
        n_dead = int(dead.sum())
        if n_dead == 0:
            return torch.tensor(0.0)
        av, ai = torch.where(dead[None], pre, neg_inf).topk(min(top_k_aux, n_dead), sorted=False)
        ea = dec(torch.zeros_like(pre).scatter_(-1, ai, av))  # decoder without b_dec
        num = (residual - ea).pow(2).sum(-1).mean()
        den = (residual - residual.mean(0, keepdim=True)).pow(2).sum(-1).mean()
        return (num / den).nan_to_num(0.0)

    def step(i: int) -> float:
        nonlocal threshold
        x = raw_batch(i) / norm_factor
        if i == 0:
            with torch.no_grad():
                b_dec.copy_(geometric_median(x))
        pre = torch.relu(enc(x - b_dec))
        flat = pre.flatten()
        top = flat.topk(k * x.shape[0], sorted=False)
        f = torch.zeros_like(flat).scatter_(-1, top.indices, top.values).reshape(pre.shape)
        if i > args.threshold_start:
            with torch.no_grad():
                active = f[f > 0]
                m = active.min() if active.numel() else torch.tensor(0.0)
                threshold = m if threshold < 0 else 0.999 * threshold + 0.001 * m
        e = x - (dec(f) + b_dec)
        with torch.no_grad():
            fired = f.sum(0) > 0
            since_fired.add_(x.shape[0])
            since_fired[fired] = 0
        l2 = e.pow(2).sum(-1).mean()
        loss = l2 + args.auxk_alpha * aux_loss(e.detach(), pre)
        loss.backward()
        with torch.no_grad():
            g, wn = dec.weight.grad, dec.weight / (dec.weight.norm(dim=0, keepdim=True) + 1e-6)
            g -= (g * wn).sum(0, keepdim=True) * wn
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        sched.step()
        with torch.no_grad():
            dec.weight.copy_(unit_columns(dec.weight))
        recon.append(float(l2))
        return loss.item()

    recon: list = []
    t_start = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    warm_s = time.perf_counter() - t_start
    times, losses = [], []
    for i in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step(args.warmup + i))
        times.append(time.perf_counter() - t0)
    times_sorted = sorted(times)
    mid = len(times) // 2
    median = times_sorted[mid] if len(times) % 2 else 0.5 * (times_sorted[mid - 1] + times_sorted[mid])
    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        **openblas_info(),
        "n": args.n,
        "d": d,
        "omega": omega,
        "batch": B,
        "k": k,
        "warmup": args.warmup,
        "warmup_seconds": warm_s,
        "steps": args.steps,
        "step_seconds": times,
        "sec_per_step": sum(times) / len(times),
        "median_sec_per_step": median,
        "norm_factor": norm_factor,
        "losses": losses,
        "recon_losses": recon[args.warmup:],
        "dead": int((since_fired >= args.dead_after).sum()),
    }))


if __name__ == "__main__":
    main()
