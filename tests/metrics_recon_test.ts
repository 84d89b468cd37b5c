import assertLib from "node:assert/strict";
import type { ActMatrix } from "../src/types.ts";
import { Rng } from "../src/util/rng.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { ReconAccumulator, reconMetrics } from "../src/metrics/recon.ts";

function assert(cond: unknown, msg?: string): asserts cond {
  assertLib.ok(cond, msg ?? "assertion failed");
}
function close(a: number, b: number, tol: number, what: string): void {
  assert(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: got ${a}, expected ${b}`);
}
function assertThrowsMb(fn: () => unknown, part: string): void {
  try {
    fn();
  } catch (e) {
    assert(e instanceof MonobenchError, `expected MonobenchError, got ${e}`);
    assert(e.message.includes(part), `message ${JSON.stringify(e.message)} lacks "${part}"`);
    return;
  }
  assertLib.fail("expected an exception");
}

interface Problem {
  n: number;
  d: number;
  w: number;
  x: Float32Array;
  codes: Extract<ActMatrix, { kind: "csr" }>;
  Wdec: Float32Array;
  bdec: Float32Array;
}

/** Random SAE-like problem: k active latents per row (some rows fewer), latents ≥ dead never used. */
function problem(seed: number, n: number, d: number, w: number, k: number, dead: number): Problem {
  const rng = new Rng(seed);
  const Wdec = rng.normals(w * d, 0.5);
  const bdec = rng.normals(d, 2);
  const rowPtr = new Uint32Array(n + 1);
  const idx: number[] = [];
  const val: number[] = [];
  for (let r = 0; r < n; r++) {
    const kk = r % 5 === 0 ? rng.int(k + 1) : k;
    const set = new Set<number>();
    while (set.size < kk) set.add(rng.int(w - dead));
    for (const j of [...set].sort((a, b) => a - b)) {
      idx.push(j);
      val.push(r % 7 === 0 && set.size > 1 && j === Math.min(...set) ? 0 : rng.next() * 3);
    }
    rowPtr[r + 1] = idx.length;
  }
  const codes = {
    kind: "csr" as const,
    n,
    cols: w,
    rowPtr,
    idx: Uint32Array.from(idx),
    val: Float32Array.from(val),
  };
  // x = reconstruction + noise + a large per-dimension offset (ViT-like massive dims)
  const x = new Float32Array(n * d);
  const xh = naiveDecode(codes, Wdec, bdec, d);
  for (let i = 0; i < x.length; i++) x[i] = xh[i] + rng.normal() * 0.7 + (i % d === 1 ? 300 : 0);
  return { n, d, w, x, codes, Wdec, bdec };
}

function naiveDecode(
  codes: Extract<ActMatrix, { kind: "csr" }>,
  Wdec: Float32Array,
  bdec: Float32Array,
  d: number,
) {
  const out = new Float64Array(codes.n * d);
  for (let r = 0; r < codes.n; r++) {
    for (let t = 0; t < d; t++) {
      let s = bdec[t];
      for (let p = codes.rowPtr[r]; p < codes.rowPtr[r + 1]; p++) {
        s += codes.val[p] * Wdec[codes.idx[p] * d + t];
      }
      out[r * d + t] = s;
    }
  }
  return out;
}

/** torch.var(·, dim=0) (unbiased, two-pass) summed over dims, for rows [r0, r1) of v [·, d]. */
function sumVar(v: ArrayLike<number>, r0: number, r1: number, d: number): number {
  const m = r1 - r0;
  let tot = 0;
  for (let t = 0; t < d; t++) {
    let mean = 0;
    for (let r = r0; r < r1; r++) mean += v[r * d + t];
    mean /= m;
    let ss = 0;
    for (let r = r0; r < r1; r++) ss += (v[r * d + t] - mean) ** 2;
    tot += ss / (m - 1);
  }
  return tot;
}

Deno.test("reconMetrics matches a direct computation (batches, global R², L0, dead)", () => {
  const p = problem(11, 103, 9, 40, 6, 5);
  const B = 16; // 6 full batches + one of 7
  const xh = naiveDecode(p.codes, p.Wdec, p.bdec, p.d);
  const e = new Float64Array(p.n * p.d);
  for (let i = 0; i < e.length; i++) e[i] = p.x[i] - xh[i];
  const fves: number[] = [];
  for (let r0 = 0; r0 < p.n; r0 += B) {
    const r1 = Math.min(p.n, r0 + B);
    fves.push(1 - sumVar(e, r0, r1, p.d) / sumVar(p.x, r0, r1, p.d));
  }
  const fveBatch = fves.reduce((a, b) => a + b, 0) / fves.length;
  let se = 0, sx = 0;
  for (let i = 0; i < e.length; i++) {
    se += e[i] ** 2;
    sx += p.x[i] ** 2;
  }
  const ssTot = sumVar(p.x, 0, p.n, p.d) * (p.n - 1);
  let nz = 0;
  const used = new Set<number>();
  for (let i = 0; i < p.codes.rowPtr[p.n]; i++) {
    if (p.codes.val[i] !== 0) {
      nz++;
      used.add(p.codes.idx[i]);
    }
  }
  assert(nz < p.codes.rowPtr[p.n], "problem has explicit zeros");
  const m = reconMetrics(p.x, p.n, p.d, p.codes, p.Wdec, p.bdec, { batchSize: B });
  assertLib.equal(m.batchFve.length, 7);
  for (let i = 0; i < fves.length; i++) close(m.batchFve[i], fves[i], 1e-10, `batch ${i}`);
  close(m.fve.fve_batchmean, fveBatch, 1e-10, "fve_batchmean");
  close(m.r2, 100 * fveBatch, 1e-9, "r2");
  close(m.fve.r2_global, 1 - se / ssTot, 1e-10, "r2_global");
  close(m.fve.fve_uncentered, 1 - se / sx, 1e-10, "fve_uncentered");
  close(m.mse, se / p.n, 1e-10, "mse");
  close(m.l0, nz / p.n, 1e-15, "l0");
  assertLib.equal(m.deadCount, p.w - used.size);
  assert(m.deadCount >= 5);
  close(m.deadFraction, m.deadCount / p.w, 1e-15, "deadFraction");
  assertLib.equal(m.n, p.n);
  // sanity: a real but imperfect reconstruction
  assert(m.fve.fve_batchmean > 0 && m.fve.fve_batchmean < 1);

  // default batch (4096 > n): one batch = the whole set
  const one = reconMetrics(p.x, p.n, p.d, p.codes, p.Wdec, p.bdec);
  close(one.fve.fve_batchmean, 1 - sumVar(e, 0, p.n, p.d) / sumVar(p.x, 0, p.n, p.d), 1e-10, "one batch");
});

Deno.test("ReconAccumulator: result independent of chunking; dense codes = CSR codes", () => {
  const p = problem(12, 77, 6, 20, 4, 0);
  const ref = reconMetrics(p.x, p.n, p.d, p.codes, p.Wdec, p.bdec, { batchSize: 10 });
  const acc = new ReconAccumulator(p.d, p.Wdec, p.bdec, { batchSize: 10 });
  let r0 = 0;
  for (const len of [3, 0, 17, 10, 1, 30, 16]) {
    const r1 = r0 + len;
    const rowPtr = new Uint32Array(len + 1);
    for (let i = 0; i <= len; i++) rowPtr[i] = p.codes.rowPtr[r0 + i] - p.codes.rowPtr[r0];
    const s = p.codes.rowPtr[r0], e = p.codes.rowPtr[r1];
    acc.add(p.x.subarray(r0 * p.d, r1 * p.d), {
      kind: "csr",
      n: len,
      cols: p.w,
      rowPtr,
      idx: p.codes.idx.slice(s, e),
      val: p.codes.val.slice(s, e),
    });
    r0 = r1;
  }
  assertLib.equal(r0, p.n);
  const got = acc.result();
  assertLib.equal(acc.count, p.n);
  for (const key of Object.keys(ref.fve)) close(got.fve[key], ref.fve[key], 1e-12, key);
  assertLib.equal(got.l0, ref.l0);
  assertLib.equal(got.deadCount, ref.deadCount);
  assertLib.equal(acc.result().fve.fve_batchmean, got.fve.fve_batchmean); // result() is repeatable

  const dense = new Float32Array(p.n * p.w);
  for (let r = 0; r < p.n; r++) {
    for (let q = p.codes.rowPtr[r]; q < p.codes.rowPtr[r + 1]; q++) {
      dense[r * p.w + p.codes.idx[q]] = p.codes.val[q];
    }
  }
  const gd = reconMetrics(p.x, p.n, p.d, { kind: "dense", n: p.n, cols: p.w, data: dense }, p.Wdec, p.bdec, {
    batchSize: 10,
  });
  for (const key of Object.keys(ref.fve)) close(gd.fve[key], ref.fve[key], 1e-12, key);
  assertLib.equal(gd.l0, ref.l0);
});

Deno.test("reconMetrics: perfect reconstruction → 1; constant x̂ = mean → r2_global 0, batch FVE 0", () => {
  // Small integers: x = bdec + codes·Wdec exactly in float32.
  const rng = new Rng(13);
  const n = 50, d = 5, w = 8;
  const Wdec = Float32Array.from({ length: w * d }, () => rng.int(7) - 3);
  const bdec = Float32Array.from({ length: d }, () => rng.int(11) - 5);
  const rowPtr = new Uint32Array(n + 1);
  const idx: number[] = [], val: number[] = [];
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < w; j++) {
      if (rng.next() < 0.3) {
        idx.push(j);
        val.push(1 + rng.int(4));
      }
    }
    rowPtr[r + 1] = idx.length;
  }
  const codes: ActMatrix = {
    kind: "csr",
    n,
    cols: w,
    rowPtr,
    idx: Uint32Array.from(idx),
    val: Float32Array.from(val),
  };
  const x = Float32Array.from(naiveDecode(codes, Wdec, bdec, d));
  const m = reconMetrics(x, n, d, codes, Wdec, bdec, { batchSize: 16 });
  assertLib.deepEqual(m.fve, { fve_batchmean: 1, r2_global: 1, fve_uncentered: 1 });
  assertLib.equal(m.r2, 100);
  assertLib.equal(m.mse, 0);

  // No active latents, bdec = per-dimension mean of x: x̂ = x̄.
  const x2 = rng.normals(n * d, 3);
  const mean = new Float64Array(d);
  for (let i = 0; i < x2.length; i++) mean[i % d] += x2[i] / n;
  const empty: ActMatrix = {
    kind: "csr",
    n,
    cols: w,
    rowPtr: new Uint32Array(n + 1),
    idx: new Uint32Array(0),
    val: new Float32Array(0),
  };
  const m2 = reconMetrics(x2, n, d, empty, Wdec, Float32Array.from(mean), { batchSize: 16 });
  assert(Math.abs(m2.fve.r2_global) < 1e-12, `r2_global ${m2.fve.r2_global}`);
  // batch FVE is shift invariant (variances): any constant reconstruction scores 0 there
  for (const f of m2.batchFve) assert(Math.abs(f) < 1e-12, `batch fve ${f}`);
  assertLib.equal(m2.l0, 0);
  assertLib.equal(m2.deadCount, w);
  assertLib.equal(m2.deadFraction, 1);
  assert(m2.fve.fve_uncentered > 0 && m2.fve.fve_uncentered < 1);
});

Deno.test("reconMetrics: a trailing 1-row batch gives NaN, as torch's unbiased var", () => {
  const p = problem(14, 17, 4, 10, 3, 0);
  const m = reconMetrics(p.x, p.n, p.d, p.codes, p.Wdec, p.bdec, { batchSize: 8 });
  assertLib.equal(m.batchFve.length, 3);
  assert(Number.isNaN(m.batchFve[2]) && Number.isNaN(m.fve.fve_batchmean));
  assert(Number.isFinite(m.fve.r2_global));
});

Deno.test("reconMetrics: bad input throws MonobenchError", () => {
  const p = problem(15, 12, 4, 10, 3, 0);
  const { x, n, d, codes, Wdec, bdec } = p;
  reconMetrics(x, n, d, codes, Wdec, bdec);
  assertThrowsMb(() => reconMetrics(x, n, d, codes, Wdec.subarray(1), bdec), "Wdec");
  assertThrowsMb(() => reconMetrics(x, n, d, codes, Wdec.subarray(d), bdec), "ω");
  assertThrowsMb(() => reconMetrics(x, n, d, codes, Wdec, bdec.subarray(1)), "bdec");
  assertThrowsMb(() => reconMetrics(x.subarray(d), n, d, codes, Wdec, bdec), "x has");
  assertThrowsMb(() => reconMetrics(x, n + 1, d, codes, Wdec, bdec), "rows");
  assertThrowsMb(() => reconMetrics(x, 0, d, codes, Wdec, bdec), "positive integer");
  assertThrowsMb(() => reconMetrics(x, n, d, codes, Wdec, bdec, { batchSize: 0 }), "batchSize");
  const xn = x.slice();
  xn[5] = NaN;
  assertThrowsMb(() => reconMetrics(xn, n, d, codes, Wdec, bdec), "non-finite");
  const wn = Wdec.slice();
  wn[3] = Infinity;
  assertThrowsMb(() => reconMetrics(x, n, d, codes, wn, bdec), "non-finite");
  const badIdx = codes.idx.slice();
  badIdx[0] = 99;
  assertThrowsMb(() => reconMetrics(x, n, d, { ...codes, idx: badIdx }, Wdec, bdec), "out of range");
  assertThrowsMb(() => new ReconAccumulator(d, Wdec, bdec).result(), "empty");
});
