/**
 * SAE building blocks for tape-based architectures ({@link SaeModelVariant}), written with the
 * tape only: centring, dense pre-activations for selections, differentiable pre-activations on a
 * pattern, the sparse decoder, the reconstruction loss, BatchTopK selection and AuxK.
 *
 * The pattern idiom: compute dense pre-activations without a gradient (one GEMM, the fused
 * `encode` where a ReLU is wanted), select the entries that matter, then recompute the
 * pre-activations of those entries with `sddmm` on the tape. Gradients then cost O(nnz·d), as on
 * the fused path, and are exact whenever the loss is constant in the entries left out.
 */
import type { Tensor } from "../backend/types.ts";
import { col, type Pattern, row, type Tape, type Var } from "../compute/tape.ts";

/** x − b_dec: [rows, d]. */
export function centered(t: Tape, x: Var, bdec: Var): Var {
  return t.map("x - b", { x, b: col(bdec) });
}

/** ReLU(W_enc(x − b_dec) + b_enc), dense [rows, ω], without a gradient (the fused encoder). */
export function reluPre(t: Tape, x: Var, Wenc: Var, benc: Var, bdec: Var): Var {
  const [rows] = x.shape, width = Wenc.shape[0];
  const out = t.alloc([rows, width]);
  t.be.encode(x.t, Wenc.t, benc.t, bdec.t, out);
  return t.input(out);
}

/** W_enc(x − b_dec) + b_enc, dense [rows, ω], without a gradient (no ReLU). */
export function densePre(t: Tape, xc: Var, Wenc: Var, benc: Var): Var {
  const z = t.matmul(t.detach(xc), t.detach(Wenc), { tb: true });
  return t.map("z + b", { z, b: col(t.detach(benc)) });
}

/** Pre-activations W_enc[j]·(x_b − b_dec) + b_enc[j] at the entries of p, on the tape. */
export function preOn(t: Tape, p: Pattern, xc: Var, Wenc: Var, benc: Var): Var {
  return t.map("s + b", { s: t.sddmm(p, xc, Wenc), b: col(benc) });
}

/** b_dec + Σ_e vals[e] W_dec[idx_e]: [rows, d]. */
export function decodeSparse(t: Tape, vals: Var, Wdec: Var, bdec: Var): Var {
  return t.map("s + b", { s: t.spmm(vals, Wdec), b: col(bdec) });
}

/** Reconstruction loss mean_b ||x̂_b − x_b||², [1]. */
export function mse(t: Tape, xhat: Var, x: Var): Var {
  return t.sum("sq(a - b) * s", { a: xhat, b: x, s: 1 / x.shape[0] });
}

/** BatchTopK: the k·rows largest positive values of pre [rows, ω] (ties at the threshold kept). */
export function selectBatchTopK(t: Tape, pre: Var, k: number): Pattern {
  const [rows, width] = pre.shape;
  const thr = t.kthLargest(pre, k * rows);
  return t.select(pre, thr, { cap: Math.min(k * rows + rows, rows * width) });
}

export interface AuxKArgs {
  /** Dense post-ReLU pre-activations [rows, ω] (no gradient). */
  pre: Var;
  x: Var;
  xc: Var;
  /** The main reconstruction (detached here). */
  xhat: Var;
  Wenc: Var;
  benc: Var;
  Wdec: Var;
  deadMask: Tensor;
  kAux: number;
  alpha: number;
}

/**
 * AuxK (docs/REFERENCE.md "AuxK"): the top-k_aux dead pre-activations of each sample reconstruct
 * the detached residual e = x − x̂ with W_dec only; α·Σ||e − ê||² / Σ||e − ē||² (0 when the
 * denominator is 0). Rows with fewer than k_aux dead latents use all of theirs.
 */
export function auxK(t: Tape, a: AuxKArgs): Var {
  const [rows, width] = a.pre.shape;
  const thr = t.kthLargestRows(a.pre, a.kAux, a.deadMask);
  const p = t.select(a.pre, row(thr), { cap: Math.min(rows * (a.kAux + 1), rows * width), mask: a.deadMask });
  const ehat = t.spmm(preOn(t, p, a.xc, a.Wenc, a.benc), a.Wdec);
  const e = t.map("x - xh", { x: a.x, xh: t.detach(a.xhat) });
  const num = t.sum("sq(e - eh)", { e, eh: ehat });
  const mean = t.sum("e * s", { e, s: 1 / rows }, "cols");
  const den = t.sum("sq(e - m)", { e, m: col(mean) });
  return t.map("select(den > 0, al * num / den, 0)", { num, den, al: a.alpha });
}
