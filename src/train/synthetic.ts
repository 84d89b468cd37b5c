/**
 * Synthetic activations with planted sparse structure, for tests and smoke runs: m random unit
 * directions ("atoms"); each sample is the sum of `s` atoms (with replacement) with coefficients
 * in [0.5, 1.5), plus a constant offset and small Gaussian noise.
 */
import { Rng } from "../util/rng.ts";

export interface PlantedData {
  /** [n, d] samples. */
  x: Float32Array;
  /** [m, d] unit atoms. */
  atoms: Float32Array;
  n: number;
  d: number;
  m: number;
}

export function plantedSparseData(
  n: number,
  d: number,
  m: number,
  s: number,
  seed: number,
  opts: { noise?: number; offset?: number } = {},
): PlantedData {
  const rng = new Rng(seed);
  const noise = opts.noise ?? 0.01, offset = opts.offset ?? 0.3;
  const atoms = rng.normals(m * d);
  for (let j = 0; j < m; j++) {
    let nn = 0;
    for (let i = 0; i < d; i++) nn += atoms[j * d + i] ** 2;
    const inv = 1 / Math.sqrt(nn);
    for (let i = 0; i < d; i++) atoms[j * d + i] *= inv;
  }
  const x = new Float32Array(n * d);
  for (let b = 0; b < n; b++) {
    for (let t = 0; t < s; t++) {
      const j = rng.int(m), c = 0.5 + rng.next();
      for (let i = 0; i < d; i++) x[b * d + i] += c * atoms[j * d + i];
    }
    for (let i = 0; i < d; i++) x[b * d + i] += noise * rng.normal() + offset;
  }
  return { x, atoms, n, d, m };
}

/**
 * Fraction of atoms whose best-matching decoder row (Wdec [ω, d]) has cosine > `minCos`
 * (decoder rows are unit norm).
 */
export function recoveredFraction(
  atoms: Float32Array,
  m: number,
  Wdec: Float32Array,
  width: number,
  d: number,
  minCos = 0.9,
): number {
  let rec = 0;
  for (let j = 0; j < m; j++) {
    let best = -Infinity;
    for (let l = 0; l < width; l++) {
      let c = 0, nn = 0;
      for (let i = 0; i < d; i++) {
        c += atoms[j * d + i] * Wdec[l * d + i];
        nn += Wdec[l * d + i] ** 2;
      }
      best = Math.max(best, c / Math.sqrt(nn || 1));
    }
    if (best > minCos) rec++;
  }
  return rec / m;
}
