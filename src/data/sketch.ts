/**
 * Row sketches of activation stores: tell "the same data computed on another CPU" from "other
 * data" when content hashes differ.
 *
 * The embedded default's activations come from onnxruntime, whose kernels depend on the CPU's
 * instruction set: the same images give other low bits on another machine (seen for
 * InceptionV3 between two x86 CPUs), so the content hash changes while every value agrees to a
 * few float32 ulps. A sketch is [n, d, then for SKETCH_ROWS rows spread evenly over the store:
 * Σx, Σ|x|, Σx² of the row], in float64. Two stores agree when n and d are equal and every
 * sketched row agrees to a relative tolerance (default 1e-3, far above float32 rounding and far
 * below the difference between two images).
 */
import type { ActivationStore } from "./store.ts";

/** Rows sketched per store. */
export const SKETCH_ROWS = 16;

/** Default relative tolerance of {@link compareSketches}. */
export const SKETCH_TOLERANCE = 1e-3;

/** The sketch of a store (reads SKETCH_ROWS rows). */
export function storeSketch(store: Pick<ActivationStore, "n" | "d" | "rows">): number[] {
  const { n, d } = store;
  const out = [n, d];
  const rows = Math.min(SKETCH_ROWS, n);
  for (let j = 0; j < rows; j++) {
    const r = Math.floor(((j + 0.5) * n) / rows);
    const x = store.rows(r, 1);
    let s = 0, a = 0, q = 0;
    for (let i = 0; i < d; i++) {
      const v = x[i];
      s += v;
      a += Math.abs(v);
      q += v * v;
    }
    out.push(s, a, q);
  }
  return out;
}

export interface SketchComparison {
  /** Whether the two sketches describe the same data up to the tolerance. */
  same: boolean;
  /** Largest relative deviation over the sketched rows (Infinity for another shape or format). */
  deviation: number;
}

/** Compare two sketches (see the module comment). */
export function compareSketches(
  a: readonly number[],
  b: readonly number[],
  tolerance = SKETCH_TOLERANCE,
): SketchComparison {
  const ok = (s: readonly number[]) =>
    s.length >= 2 && (s.length - 2) % 3 === 0 && s.every((v) => typeof v === "number" && Number.isFinite(v));
  if (!ok(a) || !ok(b) || a.length !== b.length || a[0] !== b[0] || a[1] !== b[1]) {
    return { same: false, deviation: Infinity };
  }
  const rel = (x: number, y: number, scale: number) =>
    x === y ? 0 : scale > 0 ? Math.abs(x - y) / scale : Infinity;
  let dev = 0;
  for (let i = 2; i < a.length; i += 3) {
    // Scales: Σ|x| bounds how much Σx and Σ|x| can move; Σx² its own. A row of zeros has none.
    const abs = Math.max(a[i + 1], b[i + 1]), sq = Math.max(a[i + 2], b[i + 2]);
    dev = Math.max(dev, rel(a[i], b[i], abs), rel(a[i + 1], b[i + 1], abs), rel(a[i + 2], b[i + 2], sq));
  }
  return { same: dev <= tolerance, deviation: dev };
}
