/**
 * Geometric median by Weiszfeld iterations, as the reference `geometric_median` (used to
 * initialise b_dec from the first normalised batch): start at the mean, reweight by 1/distance,
 * stop after `maxIter` iterations or when the update moves less than `tol`. Float64 arithmetic.
 * Deviation: a point coinciding with the current guess would give 1/0 (NaN in torch); its
 * distance is clamped to 1e-12 instead.
 */
import { check } from "../util/errors.ts";

export function geometricMedian(
  points: Float32Array | Float64Array,
  n: number,
  d: number,
  opts: { maxIter?: number; tol?: number } = {},
): Float64Array {
  const maxIter = opts.maxIter ?? 100, tol = opts.tol ?? 1e-5;
  check(
    n >= 1 && d >= 1 && points.length === n * d,
    `geometricMedian: ${points.length} values for [${n}, ${d}]`,
  );
  let guess = new Float64Array(d);
  for (let b = 0; b < n; b++) for (let i = 0; i < d; i++) guess[i] += points[b * d + i];
  for (let i = 0; i < d; i++) guess[i] /= n;
  const w = new Float64Array(n);
  for (let it = 0; it < maxIter; it++) {
    let wsum = 0;
    for (let b = 0; b < n; b++) {
      let s = 0;
      for (let i = 0; i < d; i++) {
        const r = points[b * d + i] - guess[i];
        s += r * r;
      }
      w[b] = 1 / Math.max(Math.sqrt(s), 1e-12);
      wsum += w[b];
    }
    const next = new Float64Array(d);
    for (let b = 0; b < n; b++) {
      const wb = w[b] / wsum;
      for (let i = 0; i < d; i++) next[i] += wb * points[b * d + i];
    }
    let move = 0;
    for (let i = 0; i < d; i++) move += (next[i] - guess[i]) ** 2;
    guess = next;
    if (Math.sqrt(move) < tol) break;
  }
  return guess;
}
