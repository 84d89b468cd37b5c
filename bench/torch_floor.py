#!/usr/bin/env python3
"""PyTorch side of bench/floor_bench.ts: a dense and a sparse-decoder BatchTopK SAE step.

Reads commands from stdin, one per line, and answers each with one JSON line:
  info                  torch version, threads, OpenBLAS core/threads
  gemm                  one encoder GEMM [B, d] x [d, w] (torch.mm), seconds
  dense | sparse        one training step, seconds (ends with loss.item())
  quit

Both steps follow the reference BatchTopK trainer (dense encoder ReLU(W_enc (x - b_dec) + b_enc),
top K*B of the flattened batch, L = mean_b ||x - x_hat||^2, decoder-gradient projection,
clip_grad_norm_(1.0), Adam, unit decoder columns); the threshold EMA is updated every step.
They differ in the decoder:
  dense   scatter f into a dense [B, w] matrix and decode with a dense matmul (the reference and
          bench/torch_ref.py): six GEMMs per step counting backward.
  sparse  decode only the active latents with F.embedding_bag over (latent, value) pairs, as
          SAELens / sparsify do on CPU; its backward is an index-add into the W_dec gradient.
          The encoder and its backward stay dense (three GEMMs).

Usage: torch_floor.py DATA.f32 N D --expansion E [--k K] [--batch B] [--threads T] [--seed S]
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
import torch.nn.functional as F

F32_EPS = float(torch.finfo(torch.float32).eps)


def openblas_info() -> dict:
    info = {}
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


class Sae:
    def __init__(self, d: int, omega: int, k: int, batch: int, sparse: bool):
        self.d, self.omega, self.k, self.sparse = d, omega, k, sparse
        self.W_enc = torch.nn.Parameter(torch.empty(omega, d))
        self.b_enc = torch.nn.Parameter(torch.zeros(omega))
        self.W_dec = torch.nn.Parameter(torch.randn(omega, d))  # one row per latent
        self.b_dec = torch.nn.Parameter(torch.zeros(d))
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True) + F32_EPS
            self.W_enc.copy_(self.W_dec)
        self.params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        lr = 2e-4 / math.sqrt(omega / 2**14)
        self.opt = torch.optim.Adam(self.params, lr=lr, betas=(0.9, 0.999))
        self.threshold = torch.tensor(-1.0)
        self.batch = batch

    def step(self, x: torch.Tensor) -> float:
        pre = torch.relu(F.linear(x - self.b_dec, self.W_enc, self.b_enc))
        flat = pre.flatten()
        top = flat.topk(self.k * x.shape[0], sorted=False)
        if self.sparse:
            rows = torch.div(top.indices, self.omega, rounding_mode="floor")
            order = torch.argsort(rows)
            cols = (top.indices % self.omega)[order]
            vals = top.values[order]
            offsets = torch.zeros(x.shape[0], dtype=torch.long)
            offsets[1:] = torch.bincount(rows, minlength=x.shape[0]).cumsum(0)[:-1]
            xhat = F.embedding_bag(cols, self.W_dec, offsets, mode="sum", per_sample_weights=vals) + self.b_dec
            active = vals.detach()
        else:
            f = torch.zeros_like(flat).scatter_(-1, top.indices, top.values).reshape(pre.shape)
            xhat = f @ self.W_dec + self.b_dec
            active = f.detach()[f.detach() > 0]
        with torch.no_grad():
            m = active[active > 0].min() if active.numel() else torch.tensor(0.0)
            self.threshold = m if self.threshold < 0 else 0.999 * self.threshold + 0.001 * m
        loss = (x - xhat).pow(2).sum(-1).mean()
        loss.backward()
        with torch.no_grad():
            g, wn = self.W_dec.grad, self.W_dec / (self.W_dec.norm(dim=1, keepdim=True) + 1e-6)
            g -= (g * wn).sum(1, keepdim=True) * wn
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad()
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True) + F32_EPS
        return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("n", type=int)
    ap.add_argument("d", type=int)
    ap.add_argument("--expansion", type=int, required=True)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    raw = np.fromfile(args.data, dtype="<f4")
    if raw.size != args.n * args.d:
        sys.exit(f"torch_floor: {args.data} holds {raw.size} floats, expected {args.n}x{args.d}")
    x_all = torch.from_numpy(raw.reshape(args.n, args.d).copy())
    omega, B = args.d * args.expansion, min(args.batch, args.n)
    nb = max(1, args.n // B)
    models = {s: Sae(args.d, omega, args.k, B, s == "sparse") for s in ("dense", "sparse")}
    counters = {"dense": 0, "sparse": 0}
    W = torch.randn(omega, args.d)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "info":
            out = {"torch": torch.__version__, "threads": torch.get_num_threads(), **openblas_info(),
                   "omp_env": os.environ.get("OMP_NUM_THREADS"), "openblas_env": os.environ.get("OPENBLAS_NUM_THREADS")}
        elif cmd == "gemm":
            x = x_all[:B]
            t0 = time.perf_counter()
            y = x @ W.T
            float(y[0, 0])
            out = {"seconds": time.perf_counter() - t0}
        elif cmd in models:
            i = counters[cmd]
            counters[cmd] += 1
            x = x_all[(i % nb) * B:(i % nb + 1) * B]
            t0 = time.perf_counter()
            loss = models[cmd].step(x)
            out = {"seconds": time.perf_counter() - t0, "loss": loss}
        else:
            out = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
