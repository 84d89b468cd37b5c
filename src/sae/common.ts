/** Building blocks shared by the SAE variants (initialisation and activation helpers). */
import type { ActivationArgs, InferenceArgs, SaeConfig } from "./types.ts";
import type { Rng } from "../util/rng.ts";

/** torch.finfo(float32).eps, used by the reference `set_decoder_norm_to_unit_norm`. */
export const F32_EPS = 1.1920928955078125e-7;

/**
 * Scale every row of W [rows, d] to unit norm as the reference does (`W / (||W|| + eps)`),
 * computed in float64. Rows with zero norm stay zero.
 */
export function unitRows(W: Float32Array, rows: number, d: number, eps = F32_EPS): Float32Array {
  for (let j = 0; j < rows; j++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += W[j * d + i] * W[j * d + i];
    const nrm = Math.sqrt(s);
    if (nrm === 0) continue;
    for (let i = 0; i < d; i++) W[j * d + i] = W[j * d + i] / (nrm + eps);
  }
  return W;
}

/**
 * Decoder init of the reference BatchTopK/TopK SAEs: `nn.Linear(ω, d)` default init
 * (kaiming_uniform(a=√5) = U(−1/√ω, 1/√ω)), then unit-norm latent directions. Returns [ω, d].
 */
export function linearInitDecoder(cfg: SaeConfig, rng: Rng): Float32Array {
  const b = 1 / Math.sqrt(cfg.width);
  return unitRows(rng.uniforms(cfg.width * cfg.d, -b, b), cfg.width, cfg.d);
}

/**
 * Decoder init of the reference Matryoshka SAE: `kaiming_uniform_` on [ω, d] (fan_in = d,
 * gain √2: U(−√(6/d), √(6/d))), then unit rows. Returns [ω, d].
 */
export function kaimingInitDecoder(cfg: SaeConfig, rng: Rng): Float32Array {
  const b = Math.sqrt(6 / cfg.d);
  return unitRows(rng.uniforms(cfg.width * cfg.d, -b, b), cfg.width, cfg.d);
}

/**
 * BatchTopK: keep the k·rows largest positive values of the whole batch. Entries tied with the
 * (k·rows)-th value are all kept (up to the codes capacity, see {@link batchTopKCapacity});
 * torch's `topk` would keep an arbitrary subset of the ties.
 */
export function batchTopKActivation(a: ActivationArgs, k: number): void {
  a.backend.kthLargest(a.pre, k * a.rows, a.scratch, 0);
  a.backend.gather(a.pre, { kind: "scalar", t: a.scratch, slot: 0 }, null, false, a.out);
}

/** Capacity for {@link batchTopKActivation}: k·rows plus one spare entry per row for ties. */
export function batchTopKCapacity(k: number, rows: number, width: number): number {
  return Math.min(k * rows + rows, rows * width);
}

/** Per-sample TopK: keep the k largest positive values of every row (ties at the k-th kept). */
export function rowTopKActivation(a: ActivationArgs, k: number): void {
  a.backend.kthLargestRows(a.pre, k, null, a.scratch);
  a.backend.gather(a.pre, { kind: "rows", t: a.scratch }, null, false, a.out);
}

/** Reference inference encode: `f · (f > threshold)` on the post-ReLU values (strict). */
export function thresholdActivation(a: InferenceArgs): void {
  a.backend.gather(a.pre, { kind: "scalar", t: a.threshold, slot: 0 }, null, true, a.out);
}

/** Plain ReLU: every positive value. */
export function reluActivation(a: ActivationArgs): void {
  a.backend.fill(a.scratch, 0);
  a.backend.gather(a.pre, { kind: "scalar", t: a.scratch, slot: 0 }, null, true, a.out);
}
