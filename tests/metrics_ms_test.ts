import assertLib from "node:assert/strict";
import type { ActMatrix } from "../src/types.ts";
import { Rng } from "../src/util/rng.ts";
import { MonobenchError } from "../src/util/errors.ts";
import {
  CURVE_POINTS,
  fracAbove,
  msBrute,
  msScores,
  oneHotEmbeddings,
  summarizeMs,
} from "../src/metrics/ms.ts";

const TOL = 1e-9;

function assert(cond: unknown, msg?: string): asserts cond {
  assertLib.ok(cond, msg ?? "assertion failed");
}
function assertEquals(actual: unknown, expected: unknown): void {
  assertLib.deepStrictEqual(actual, expected);
}
/** Expect `fn` to throw a MonobenchError whose message contains `part` (if given). */
function assertThrows(fn: () => unknown, cls: typeof MonobenchError, part?: string): void {
  try {
    fn();
  } catch (e) {
    assert(e instanceof cls, `expected ${cls.name}, got ${e}`);
    if (part !== undefined) {
      assert(e.message.includes(part), `message ${JSON.stringify(e.message)} lacks "${part}"`);
    }
    return;
  }
  assertLib.fail("expected an exception");
}

function dense(n: number, cols: number, data: ArrayLike<number>): ActMatrix {
  return { kind: "dense", n, cols, data: Float32Array.from(data) };
}

/** CSR from a dense row-major array (zeros implicit unless `keepZero(r, c)`). */
function toCsr(
  n: number,
  cols: number,
  data: ArrayLike<number>,
  keepZero: (r: number, c: number) => boolean = () => false,
): ActMatrix {
  const rowPtr = new Uint32Array(n + 1);
  const idx: number[] = [];
  const val: number[] = [];
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < cols; c++) {
      const v = data[r * cols + c];
      if (v !== 0 || keepZero(r, c)) {
        idx.push(c);
        val.push(v);
      }
    }
    rowPtr[r + 1] = idx.length;
  }
  return { kind: "csr", n, cols, rowPtr, idx: Uint32Array.from(idx), val: Float32Array.from(val) };
}

function assertScoresClose(actual: Float64Array, expected: Float64Array, tol = TOL, what = "") {
  assertEquals(actual.length, expected.length);
  for (let k = 0; k < expected.length; k++) {
    const a = actual[k], e = expected[k];
    if (Number.isNaN(e) || Number.isNaN(a)) {
      assert(Number.isNaN(a) && Number.isNaN(e), `${what} neuron ${k}: got ${a}, expected ${e}`);
      continue;
    }
    assert(Math.abs(a - e) <= tol * Math.max(1, Math.abs(e)), `${what} neuron ${k}: got ${a}, expected ${e}`);
  }
}

function randomEmb(rng: Rng, n: number, D: number, offset = 0): Float32Array {
  const e = rng.normals(n * D);
  for (let i = 0; i < e.length; i++) e[i] += offset;
  // varied row norms: cosine must ignore them
  for (let r = 0; r < n; r++) {
    const s = 0.1 + 5 * rng.next();
    for (let j = 0; j < D; j++) e[r * D + j] *= s;
  }
  return e;
}

Deno.test("msScores: hand-computed 3- and 4-sample examples (non-unit embeddings)", () => {
  // 3 samples, embeddings (1,0), (0,2), (3,3): s12 = 0, s13 = 1/√2, s23 = 1/√2.
  const emb3 = Float32Array.from([1, 0, 0, 2, 3, 3]);
  // neurons: [1,3,2] → ã = [0,1,.5], only pair (2,3) has weight → s23
  //          [2,2,1] → ã = [1,1,0], only pair (1,2) → s12 = 0
  //          [5,5,5] constant → NaN;  [0,0,7] single sample above min → NaN (0/0)
  //          [-1,-3,-1] → ã = [1,0,1] → pair (1,3) → s13
  const acts3 = dense(3, 5, [1, 2, 5, 0, -1, 3, 2, 5, 0, -3, 2, 1, 5, 7, -1]);
  const want3 = Float64Array.from([Math.SQRT1_2, 0, NaN, NaN, Math.SQRT1_2]);
  assertScoresClose(msScores(acts3, emb3, 2), want3, 1e-12, "dense");
  assertScoresClose(msBrute(acts3, emb3, 2), want3, 1e-12, "brute");
  assertScoresClose(
    msScores(toCsr(3, 5, acts3.kind === "dense" ? acts3.data : []), emb3, 2),
    want3,
    1e-12,
    "csr",
  );

  // 4 samples, e = (1,0), (0,2), (3,3), (2,0); a = [0,4,2,4] → ã = [0,1,.5,1].
  // Weighted pairs: (2,3) w=.5 s=1/√2, (2,4) w=1 s=0, (3,4) w=.5 s=1/√2 → MS = (1/√2)/2.
  const emb4 = Float32Array.from([1, 0, 0, 2, 3, 3, 2, 0]);
  const want4 = Float64Array.from([Math.SQRT1_2 / 2]);
  const a4 = [0, 4, 2, 4];
  assertScoresClose(msScores(dense(4, 1, a4), emb4, 2), want4, 1e-12);
  assertScoresClose(msScores(toCsr(4, 1, a4), emb4, 2), want4, 1e-12);
  assertScoresClose(msBrute(dense(4, 1, a4), emb4, 2), want4, 1e-12);
});

Deno.test("msScores (dense) matches msBrute on random data incl. negatives, ties, blocks", () => {
  const rng = new Rng(1);
  // n crosses the 256-sample block, cols crosses the 64-neuron block, D % 4 = 1.
  const n = 300, cols = 70, D = 13;
  const a = new Float32Array(n * cols);
  for (let r = 0; r < n; r++) {
    for (let k = 0; k < cols; k++) {
      let v: number;
      if (k % 7 === 0) v = rng.int(3); // heavy ties (integer levels)
      else if (k % 7 === 1) v = Math.max(0, rng.normal() - 1.5); // sparse ReLU-like
      else if (k % 7 === 2) v = 100 + rng.normal() * 0.01; // large offset, tiny range
      else v = rng.normal() * (1 + k) - 3; // negatives
      a[r * cols + k] = v;
    }
  }
  for (let r = 0; r < n; r++) {
    a[r * cols + 5] = -2.5; // constant → NaN
    a[r * cols + 6] = r === 17 ? 3 : 0; // single sample above min → NaN
    a[r * cols + 12] = r === 17 || r === 250 ? 1 : -1; // two samples above min, across blocks
  }
  const acts = dense(n, cols, a);
  const emb = randomEmb(rng, n, D, 0.3);
  const brute = msBrute(acts, emb, D);
  assert(Number.isNaN(brute[5]) && Number.isNaN(brute[6]) && !Number.isNaN(brute[12]));
  let progressCalls = 0;
  const fast = msScores(acts, emb, D, {
    onProgress: (done, total) => (progressCalls++, assert(done <= total)),
  });
  assertScoresClose(fast, brute, TOL, "dense");
  assertEquals(progressCalls, 2);
  // the two-sample neuron equals the cosine between samples 17 and 250
  let dot = 0, n1 = 0, n2 = 0;
  for (let j = 0; j < D; j++) {
    dot += emb[17 * D + j] * emb[250 * D + j];
    n1 += emb[17 * D + j] ** 2;
    n2 += emb[250 * D + j] ** 2;
  }
  assert(Math.abs(fast[12] - dot / Math.sqrt(n1 * n2)) < 1e-12);
});

Deno.test("msScores (dense) matches msBrute for D multiple of 4 and tiny shapes", () => {
  const rng = new Rng(2);
  for (const [n, cols, D] of [[2, 1, 1], [5, 3, 4], [40, 9, 8], [33, 4, 3]]) {
    const acts = dense(n, cols, rng.normals(n * cols));
    const emb = randomEmb(rng, n, D);
    assertScoresClose(msScores(acts, emb, D), msBrute(acts, emb, D), TOL, `${n}x${cols}x${D}`);
  }
});

Deno.test("msScores (CSR) matches msBrute and the dense path across sparsity patterns", () => {
  const rng = new Rng(3);
  const n = 260, cols = 48, D = 10;
  const a = new Float32Array(n * cols);
  const explicitZero = new Set<number>();
  for (let k = 0; k < cols; k++) {
    const kind = k % 8;
    const density = [0, 0.004, 0.02, 0.1, 0.5, 1, 0.3, 0.9][kind];
    for (let r = 0; r < n; r++) {
      if (rng.next() >= density) continue;
      let v = rng.next() * 3 + 0.01; // positive
      if (kind === 6) v = rng.normal(); // mixed signs with implicit zeros (negative min)
      if (kind === 7 && k % 16 === 7) v = -v; // mostly-populated negative column
      a[r * cols + k] = v;
    }
  }
  // special columns
  for (let r = 0; r < n; r++) {
    a[r * cols + 0] = r === 3 ? 2 : 0; // single active → NaN
    a[r * cols + 8] = 1.5 + (r % 4); // fully populated positive (min > 0), ties
    a[r * cols + 16] = -(1 + (r % 3)); // fully populated negative
    a[r * cols + 24] = r === 5 ? -1 : 0; // single negative entry: weight on all other samples
    a[r * cols + 32] = 0; // empty column → constant → NaN
    a[r * cols + 40] = r < 2 ? 4 : 0; // exactly two active samples
    if (r % 10 === 0 && a[r * cols + 41] === 0) explicitZero.add(r * cols + 41);
  }
  const csr = toCsr(n, cols, a, (r, c) => explicitZero.has(r * cols + c));
  const emb = randomEmb(rng, n, D, -0.2);
  const brute = msBrute(csr, emb, D);
  assert(Number.isNaN(brute[0]) && Number.isNaN(brute[32]) && !Number.isNaN(brute[24]));
  assertScoresClose(msScores(csr, emb, D), brute, TOL, "csr");
  assertScoresClose(msScores(dense(n, cols, a), emb, D), brute, TOL, "dense view");
});

Deno.test("msScores: per-neuron scale/shift invariance and embedding scale invariance", () => {
  const rng = new Rng(4);
  const n = 120, cols = 11, D = 7;
  const a = rng.normals(n * cols);
  const emb = randomEmb(rng, n, D);
  const base = msScores(dense(n, cols, a), emb, D);
  const b = new Float32Array(a.length);
  const scale = Array.from({ length: cols }, () => 0.01 + 50 * rng.next());
  const shift = Array.from({ length: cols }, () => rng.normal() * 10);
  for (let r = 0; r < n; r++) {
    for (let k = 0; k < cols; k++) b[r * cols + k] = a[r * cols + k] * scale[k] + shift[k];
  }
  // float32 rounding of the transformed activations perturbs scores at the ~1e-6 level
  assertScoresClose(msScores(dense(n, cols, b), emb, D), base, 1e-5, "affine");
  const emb2 = emb.slice();
  for (let r = 0; r < n; r++) {
    const s = 2 ** (rng.int(20) - 10); // power of two: exact in float32
    for (let j = 0; j < D; j++) emb2[r * D + j] *= s;
  }
  assertScoresClose(msScores(dense(n, cols, a), emb2, D), base, 1e-12, "embedding scale");
});

Deno.test("oneHotEmbeddings: label similarity, MS = weighted same-label pair fraction", () => {
  const labels = Uint8Array.from([0, 1, 1, 2, 0, 2, 2, 1]);
  const emb = oneHotEmbeddings(labels);
  assertEquals(emb.length, labels.length * 3);
  assertEquals(Array.from(emb.subarray(3, 6)), [0, 1, 0]);
  assertEquals(oneHotEmbeddings([1], 4).length, 4);
  // neuron 0: active (equal values) only on the three label-2 samples → MS 1
  // neuron 1: active on samples 0 (label 0) and 1, 2 (label 1) with weights 1, 1, 1 →
  //   pairs (0,1) s=0, (0,2) s=0, (1,2) s=1 → 1/3
  const n = labels.length;
  const a = new Float32Array(n * 2);
  for (const r of [3, 5, 6]) a[r * 2] = 2;
  for (const r of [0, 1, 2]) a[r * 2 + 1] = 1;
  const want = Float64Array.from([1, 1 / 3]);
  assertScoresClose(msScores(toCsr(n, 2, a), emb, 3), want, 1e-12);
  assertScoresClose(msBrute(toCsr(n, 2, a), emb, 3), want, 1e-12);
  // random labels vs brute
  const rng = new Rng(5);
  const lab = Array.from({ length: 90 }, () => rng.int(10));
  const e10 = oneHotEmbeddings(lab, 10);
  const acts = dense(90, 6, rng.normals(90 * 6));
  assertScoresClose(msScores(acts, e10, 10), msBrute(acts, e10, 10), TOL);
  assertThrows(() => oneHotEmbeddings([0, 1.5]), MonobenchError);
  assertThrows(() => oneHotEmbeddings([0, -1]), MonobenchError);
  assertThrows(() => oneHotEmbeddings([0, 3], 3), MonobenchError);
});

Deno.test("msScores / msBrute: bad input throws MonobenchError", () => {
  const emb = Float32Array.from([1, 0, 0, 1, 1, 1]);
  const ok = dense(3, 2, [1, 2, 3, 4, 5, 6]);
  msScores(ok, emb, 2);
  for (const f of [msScores, msBrute]) {
    assertThrows(() => f(ok, emb, 3), MonobenchError, "embeddings");
    assertThrows(() => f(ok, emb.subarray(0, 4), 2), MonobenchError, "embeddings");
    assertThrows(() => f(ok, Float32Array.from([1, 0, 0, 0, 1, 1]), 2), MonobenchError, "zero norm");
    assertThrows(() => f(ok, Float32Array.from([1, 0, NaN, 1, 1, 1]), 2), MonobenchError, "non-finite");
    assertThrows(() => f(dense(3, 2, [1, 2, 3, NaN, 5, 6]), emb, 2), MonobenchError, "non-finite");
    assertThrows(() => f(dense(3, 2, [1, 2, 3]), emb, 2), MonobenchError, "dense data");
    assertThrows(() => f(dense(1, 2, [1, 2]), emb.subarray(0, 2), 2), MonobenchError, "at least 2");
    assertThrows(() => f(ok, emb, 0), MonobenchError, "positive integer");
  }
  const csr = (rowPtr: number[], idx: number[], val: number[]): ActMatrix => ({
    kind: "csr",
    n: 3,
    cols: 2,
    rowPtr: Uint32Array.from(rowPtr),
    idx: Uint32Array.from(idx),
    val: Float32Array.from(val),
  });
  msScores(csr([0, 1, 3, 3], [1, 0, 1], [1, 2, 3]), emb, 2);
  assertThrows(() => msScores(csr([0, 1, 3, 3], [1, 1, 0], [1, 2, 3]), emb, 2), MonobenchError, "ascending");
  assertThrows(
    () => msScores(csr([0, 1, 3, 3], [1, 0, 2], [1, 2, 3]), emb, 2),
    MonobenchError,
    "out of range",
  );
  assertThrows(() => msScores(csr([0, 2, 1, 3], [1, 0, 1], [1, 2, 3]), emb, 2), MonobenchError, "decreases");
  assertThrows(() => msScores(csr([0, 1, 3, 4], [1, 0, 1], [1, 2, 3]), emb, 2), MonobenchError, "exceeds");
  assertThrows(() => msScores(csr([0, 1, 3], [1, 0, 1], [1, 2, 3]), emb, 2), MonobenchError, "rowPtr");
  assertThrows(() => msScores(csr([0, 1, 3, 3], [1, 0, 1], [1, Infinity, 3]), emb, 2), MonobenchError);
});

Deno.test("summarizeMs: sample std over non-NaN scores, NaN count, curve; fracAbove", () => {
  const s = Float64Array.from([0.5, NaN, 0.1, 0.3, NaN, -0.1]);
  const sum = summarizeMs(s, "labels");
  assertEquals(sum.encoder, "labels");
  assertEquals(sum.count, 6);
  assertEquals(sum.nanCount, 2);
  assert(Math.abs(sum.mean - 0.2) < 1e-15);
  // unbiased (torch .std()): sqrt(((.3)² + (.1)² + (.1)² + (.3)²) / 3)
  assert(Math.abs(sum.std - Math.sqrt(0.2 / 3)) < 1e-15);
  assertEquals(sum.min, -0.1);
  assertEquals(sum.max, 0.5);
  assertEquals(sum.curve, [0.5, 0.3, 0.1, -0.1]);

  const one = summarizeMs(Float64Array.from([NaN, 0.25]), "x");
  assertEquals([one.mean, one.min, one.max, one.nanCount], [0.25, 0.25, 0.25, 1]);
  assert(Number.isNaN(one.std));
  const none = summarizeMs(Float64Array.from([NaN]), "x");
  assert(Number.isNaN(none.mean) && Number.isNaN(none.max));
  assertEquals(none.curve, []);

  const rng = new Rng(6);
  const big = new Float64Array(1001);
  for (let i = 0; i < big.length; i++) big[i] = rng.next();
  const bs = summarizeMs(big, "y");
  assertEquals(bs.curve.length, CURVE_POINTS);
  assertEquals(bs.curve[0], bs.max);
  assertEquals(bs.curve[CURVE_POINTS - 1], bs.min);
  for (let i = 1; i < bs.curve.length; i++) assert(bs.curve[i] <= bs.curve[i - 1]);

  assertEquals(fracAbove(s, 0.1), 2 / 4);
  assertEquals(fracAbove(s, -1), 1);
  assert(Number.isNaN(fracAbove([NaN], 0)));
});

/** cos(E_i, E_j) in float64. */
function cosine(emb: Float32Array, D: number, i: number, j: number): number {
  let dot = 0, ni = 0, nj = 0;
  for (let t = 0; t < D; t++) {
    dot += emb[i * D + t] * emb[j * D + t];
    ni += emb[i * D + t] ** 2;
    nj += emb[j * D + t] ** 2;
  }
  return dot / Math.sqrt(ni * nj);
}

Deno.test("msScores: one dominant image (weights 1 vs 1e-25 / 1e-10) matches the pair definition", () => {
  const rng = new Rng(7);
  const n = 40, D = 6;
  const emb = randomEmb(rng, n, D, 0.4);
  const cols = 7;
  const a = new Float32Array(n * cols);
  const set = (r: number, k: number, v: number) => (a[r * cols + k] = v);
  // 0: one image at 1, five at 1e-25 (½((Σz)² − Σz²) is exactly 0 here: NaN before)
  set(3, 0, 1);
  for (const r of [5, 9, 20, 30, 39]) set(r, 0, 1e-25);
  // 1: one image at 1, twenty at 1e-10
  set(0, 1, 1);
  for (let r = 10; r < 30; r++) set(r, 1, 1e-10);
  // 2: two samples, 1 and 1e-30: MS = their cosine
  set(7, 2, 1);
  set(8, 2, 1e-30);
  // 3: the same skew on a negative offset: −1 everywhere, the top at 0, others 2⁻²⁴ above −1
  for (let r = 0; r < n; r++) set(r, 3, r === 12 ? 0 : r % 3 === 0 ? -1 + 2 ** -24 : -1);
  // 4: every sample active, one at 1, the others in [1e-12, 2e-12)
  for (let r = 0; r < n; r++) set(r, 4, r === 25 ? 1 : 1e-12 * (1 + rng.next()));
  // 5: one at 1, one slightly negative (the minimum) → implicit zeros weigh 1e-20 in CSR
  set(2, 5, 1);
  set(4, 5, -1e-20);
  // 6: the top weight on the one implicit zero: all other rows stored near −1 (CSR)
  for (let r = 0; r < n; r++) if (r !== 17) set(r, 6, r === 1 ? -1 : -1 + 2 ** -24);
  const csr = toCsr(n, cols, a);
  const brute = msBrute(csr, emb, D);
  // hand values: with one dominant image the score is the weighted mean of its cosines with the
  // others; equal small weights make it the plain mean (pairs among the small ones weigh ~1e-25×)
  const meanCos = (top: number, rows: number[]) =>
    rows.reduce((s, r) => s + cosine(emb, D, top, r), 0) / rows.length;
  const hand0 = meanCos(3, [5, 9, 20, 30, 39]);
  assert(Math.abs(brute[0] - hand0) < 1e-15, `brute ${brute[0]} vs hand ${hand0}`);
  assert(Math.abs(brute[1] - meanCos(0, Array.from({ length: 20 }, (_, i) => 10 + i))) < 1e-9);
  assert(Math.abs(brute[2] - cosine(emb, D, 7, 8)) < 1e-15);
  const others = Array.from({ length: n }, (_, i) => i).filter((i) => i !== 2 && i !== 4); // row 4 is the minimum
  assert(Math.abs(brute[5] - meanCos(2, others)) < 1e-15);
  for (const k of [0, 1, 2, 3, 4, 5, 6]) assert(Number.isFinite(brute[k]), `brute ${k}`);
  assertScoresClose(msScores(dense(n, cols, a), emb, D), brute, 1e-13, "dense");
  assertScoresClose(msScores(csr, emb, D), brute, 1e-13, "csr");
  // an explicit zero stored in column 6 takes the other branch of the top-sample choice
  assertScoresClose(msScores(toCsr(n, cols, a, (r, c) => c === 6 && r === 17), emb, D), brute, 1e-13, "csr0");
});

Deno.test("msScores: random skewed neurons (one image dominating by 1e5–1e30) match msBrute", () => {
  const rng = new Rng(8);
  const n = 300, cols = 66, D = 9; // crosses the dense sample and neuron blocks
  const emb = randomEmb(rng, n, D, 0.2);
  const a = new Float32Array(n * cols);
  for (let k = 0; k < cols; k++) {
    const top = rng.int(n);
    const scale = 10 ** -(5 + rng.int(26));
    const count = 1 + rng.int(40);
    for (let i = 0; i < count; i++) a[rng.int(n) * cols + k] = scale * (0.5 + rng.next());
    a[top * cols + k] = 1 + rng.next();
    if (k % 3 === 0) { for (let r = 0; r < n; r++) a[r * cols + k] -= 2; // dense negative offset
     }
  }
  const acts = dense(n, cols, a);
  const brute = msBrute(acts, emb, D);
  assertScoresClose(msScores(acts, emb, D), brute, 1e-12, "dense");
  assertScoresClose(msScores(toCsr(n, cols, a), emb, D), brute, 1e-12, "csr");
});
