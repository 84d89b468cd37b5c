/**
 * Range kernels of the multi-threaded CPU backend (`mt.ts`): each computes one slice [lo, hi) of
 * an op (rows, latents or elements) on shared typed arrays, so the main thread and the workers
 * (`mt_worker.ts`) run the same code. Each slice does exactly what the single-threaded reference
 * (`cpu.ts`) does for those indices; results match it to rounding: reductions (loss, sum of
 * squares) add partial sums in slice order, and the sparse decoder loops are unrolled (two
 * entries per pass, or four partial sums), which reorders a few additions.
 */

import { kernels as wk, memU32 } from "./wasm/heap.ts";

type F32 = Float32Array;
type U32 = Uint32Array;

/** Map a float's bits to a u32 whose unsigned order equals the float order (as cpu.ts). */
function key(bits: number): number {
  return (bits & 0x80000000) ? (~bits) >>> 0 : (bits | 0x80000000) >>> 0;
}

export function keyToFloat(k: number): number {
  const bits = (k & 0x80000000) ? (k & 0x7fffffff) >>> 0 : (~k) >>> 0;
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}

export const TOP_SHIFT = 21;
export const TOP_BINS = 1 << 11;

/** Per-row exact k-th largest among eligible columns, by radix select (11 + 11 + 10 bits). */
function rowKth(
  bits: U32,
  off: number,
  n: number,
  k: number,
  elig: U32 | null,
  hist: U32,
  cand: U32[],
): number {
  hist.fill(0, 0, TOP_BINS);
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (elig && !elig[i]) continue;
    hist[key(bits[off + i]) >>> TOP_SHIFT]++;
    count++;
  }
  if (k < 1 || k > count) return -Infinity;
  let remaining = k, b = TOP_BINS - 1;
  for (; b > 0; b--) {
    if (hist[b] >= remaining) break;
    remaining -= hist[b];
  }
  if (cand[0].length < hist[b]) cand[0] = new Uint32Array(Math.max(hist[b], cand[0].length * 2));
  const c = cand[0];
  let m = 0;
  for (let i = 0; i < n; i++) {
    if (elig && !elig[i]) continue;
    const kk = key(bits[off + i]);
    if ((kk >>> TOP_SHIFT) === b) c[m++] = kk;
  }
  return keyToFloat(resolveLow(c, m, remaining, (b << TOP_SHIFT) >>> 0));
}

/** Resolve the low 21 bits of the k-th largest key among `m` candidates sharing the top digit. */
export function resolveLow(c: U32, m: number, remaining: number, prefix: number): number {
  const hist = new Uint32Array(2048);
  const digits: [number, number][] = [[10, 11], [0, 10]];
  for (let p = 0; p < digits.length; p++) {
    const [shift, width] = digits[p];
    const mask = (1 << width) - 1;
    hist.fill(0, 0, 1 << width);
    for (let i = 0; i < m; i++) hist[(c[i] >>> shift) & mask]++;
    let v = mask;
    for (; v > 0; v--) {
      if (hist[v] >= remaining) break;
      remaining -= hist[v];
    }
    prefix = (prefix | (v << shift)) >>> 0;
    if (p + 1 < digits.length) {
      let w = 0;
      for (let i = 0; i < m; i++) if (((c[i] >>> shift) & mask) === v) c[w++] = c[i];
      m = w;
    }
  }
  return prefix;
}

// deno-lint-ignore no-explicit-any
export type Args = Record<string, any>;
/**
 * A kernel computes slice [lo, hi) (slice number `slice` of the fork-join) and may return a
 * partial result (summed by the caller).
 */
export type Kernel = (a: Args, lo: number, hi: number, slice: number) => number;

const scratch = { hist: new Uint32Array(TOP_BINS), cand: [new Uint32Array(1024)] };

export const KERNELS: Record<string, Kernel> = {
  /** Run `a.kernel` with the slice's own arguments `a.per[slice]`. */
  perSlice(a, lo, hi, slice) {
    return KERNELS[a.kernel](a.per[slice], lo, hi, slice);
  },

  fill(a, lo, hi) {
    (a.t as F32 | U32).fill(a.value, lo, hi);
    return 0;
  },

  /** P rows [lo, hi) = benc (before a BLAS GEMM with beta = 1). */
  bcastRows(a, lo, hi) {
    const P = a.P as F32, be = a.be as F32, w = be.length;
    for (let b = lo; b < hi; b++) P.set(be, b * w);
    return 0;
  },

  relu(a, lo, hi) {
    const P = a.P as F32;
    for (let i = lo; i < hi; i++) if (!(P[i] > 0)) P[i] = 0;
    return 0;
  },

  /** xc rows [lo, hi) = x − bdec. */
  center(a, lo, hi) {
    const X = a.X as F32, bd = a.bd as F32, xc = a.xc as F32, d = bd.length;
    for (let b = lo; b < hi; b++) for (let i = 0; i < d; i++) xc[b * d + i] = X[b * d + i] - bd[i];
    return 0;
  },

  /** Plain TypeScript encoder rows [lo, hi) (no GEMM library): pre = ReLU(xc · Wᵀ + benc). */
  encodeRows(a, lo, hi) {
    const xc = a.xc as F32, W = a.W as F32, be = a.be as F32, P = a.P as F32;
    const d = a.d as number, w = be.length;
    let b = lo;
    for (; b + 2 <= hi; b += 2) {
      const o0 = b * d, o1 = o0 + d;
      let j = 0;
      for (; j + 4 <= w; j += 4) {
        const r0 = j * d, r1 = r0 + d, r2 = r1 + d, r3 = r2 + d;
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
        for (let i = 0; i < d; i++) {
          const a0 = xc[o0 + i], a1 = xc[o1 + i];
          const w0 = W[r0 + i], w1 = W[r1 + i], w2 = W[r2 + i], w3 = W[r3 + i];
          s00 += a0 * w0, s01 += a0 * w1, s02 += a0 * w2, s03 += a0 * w3;
          s10 += a1 * w0, s11 += a1 * w1, s12 += a1 * w2, s13 += a1 * w3;
        }
        const p0 = b * w + j, p1 = p0 + w;
        P[p0] = relu(s00 + be[j]), P[p0 + 1] = relu(s01 + be[j + 1]);
        P[p0 + 2] = relu(s02 + be[j + 2]), P[p0 + 3] = relu(s03 + be[j + 3]);
        P[p1] = relu(s10 + be[j]), P[p1 + 1] = relu(s11 + be[j + 1]);
        P[p1 + 2] = relu(s12 + be[j + 2]), P[p1 + 3] = relu(s13 + be[j + 3]);
      }
      for (; j < w; j++) {
        P[b * w + j] = relu(dot(xc, o0, W, j * d, d) + be[j]);
        P[(b + 1) * w + j] = relu(dot(xc, o1, W, j * d, d) + be[j]);
      }
    }
    for (; b < hi; b++) for (let j = 0; j < w; j++) P[b * w + j] = relu(dot(xc, b * d, W, j * d, d) + be[j]);
    return 0;
  },

  /** Histogram of the top 11 key bits of bits[lo, hi) into hist[slot·2048 …]. */
  hist(a, lo, hi) {
    const bits = a.bits as U32, H = (a.hist as U32).subarray(a.slot * TOP_BINS, (a.slot + 1) * TOP_BINS);
    for (let i = lo; i < hi; i++) H[key(bits[i]) >>> TOP_SHIFT]++;
    return 0;
  },

  /** Keys of bits[lo, hi) whose top digit is `bucket`, written from cand[at]. */
  collect(a, lo, hi) {
    const bits = a.bits as U32, c = a.cand as U32, bucket = a.bucket as number;
    let m = a.at as number;
    for (let i = lo; i < hi; i++) {
      const k = key(bits[i]);
      if ((k >>> TOP_SHIFT) === bucket) c[m++] = k;
    }
    return m - a.at;
  },

  /**
   * Bracketed selection pass over bits[lo, hi): counts keys > hiKey (returned) and copies keys in
   * [loKey, hiKey] to cand[base …] (at most `room`; cnt[slice] = how many, or room + 1 on overflow).
   */
  bracket(a, lo, hi, slice) {
    const bits = a.bits as U32, c = a.cand as U32, loKey = a.loKey as number, hiKey = a.hiKey as number;
    const base = slice * (a.room as number), end = base + (a.room as number);
    let above = 0, m = base;
    for (let i = lo; i < hi; i++) {
      const b = bits[i];
      const k = (b & 0x80000000) ? (~b) >>> 0 : (b | 0x80000000) >>> 0;
      if (k < loKey) continue;
      if (k > hiKey) above++;
      else if (m < end) c[m++] = k;
      else m = end + 1;
    }
    (a.cnt as U32)[slice] = m - base;
    return above;
  },

  /**
   * One-pass gather of rows [lo, hi) into this slice's region of idx/val (from slice·room): kept
   * entries as `gatherCount`; cnt[row] = entries of the row (the caller lays out the CSR).
   */
  gatherLocal(a, lo, hi, slice) {
    const v = a.v as F32, t = a.t as F32, cnt = a.cnt as U32, w = a.w as number;
    const m = (a.mask ?? null) as U32 | null, scalar = a.scalar as boolean, strict = a.strict as boolean;
    const idx = a.lidx as U32, val = a.lval as F32;
    // Past the region only entries beyond the output's capacity can occur: count, do not store.
    let e = slice * (a.room as number);
    const end = e + (a.room as number);
    for (let b = lo; b < hi; b++) {
      const tb = scalar ? t[a.slot] : t[b];
      const e0 = e;
      if (tb === tb) {
        const lo2 = tb > 0 ? tb : 0, strictLo = strict || !(tb > 0), off = b * w;
        for (let j = 0; j < w; j++) {
          const x = v[off + j];
          if (strictLo ? !(x > lo2) : !(x >= lo2)) continue;
          if (m && !m[j]) continue;
          if (e < end) {
            idx[e] = j;
            val[e] = x;
          }
          e++;
        }
      }
      cnt[b] = e - e0;
    }
    return 0;
  },

  kthRows(a, lo, hi) {
    const bits = a.bits as U32, o = a.out as F32, w = a.w as number, k = a.k as number;
    const mask = (a.mask ?? null) as U32 | null;
    for (let b = lo; b < hi; b++) o[b] = rowKth(bits, b * w, w, k, mask, scratch.hist, scratch.cand);
    return 0;
  },

  /** Entries each row of [lo, hi) keeps under `gather` semantics (see cpu.ts), into cnt[row]. */
  gatherCount(a, lo, hi) {
    const v = a.v as F32, t = a.t as F32, cnt = a.cnt as U32, w = a.w as number;
    const m = (a.mask ?? null) as U32 | null, scalar = a.scalar as boolean, strict = a.strict as boolean;
    for (let b = lo; b < hi; b++) {
      const tb = scalar ? t[a.slot] : t[b];
      let n = 0;
      if (tb === tb) {
        const lo2 = tb > 0 ? tb : 0, strictLo = strict || !(tb > 0), off = b * w;
        for (let j = 0; j < w; j++) {
          const x = v[off + j];
          if (strictLo ? !(x > lo2) : !(x >= lo2)) continue;
          if (m && !m[j]) continue;
          n++;
        }
      }
      cnt[b] = n;
    }
    return 0;
  },

  /** Write the kept entries of rows [lo, hi) from rowPtr[row], at most up to rowPtr[row + 1]. */
  gatherWrite(a, lo, hi) {
    const v = a.v as F32, t = a.t as F32, rp = a.rp as U32, idx = a.idx as U32, val = a.val as F32;
    const w = a.w as number, m = (a.mask ?? null) as U32 | null;
    const scalar = a.scalar as boolean, strict = a.strict as boolean;
    for (let b = lo; b < hi; b++) {
      let e = rp[b];
      const end = rp[b + 1];
      if (e === end) continue;
      const tb = scalar ? t[a.slot] : t[b];
      const lo2 = tb > 0 ? tb : 0, strictLo = strict || !(tb > 0), off = b * w;
      for (let j = 0; j < w && e < end; j++) {
        const x = v[off + j];
        if (strictLo ? !(x > lo2) : !(x >= lo2)) continue;
        if (m && !m[j]) continue;
        idx[e] = j;
        val[e] = x;
        e++;
      }
    }
    return 0;
  },

  /** Sparse decode of rows [lo, hi) (cpu.ts `decode`). */
  decode(a, lo, hi) {
    const rp = a.rp as U32, idx = a.idx as U32, val = a.val as F32, W = a.W as F32, o = a.o as F32;
    const bd = (a.bd ?? null) as F32 | null,
      groups = a.groups as number[],
      B = a.B as number,
      d = a.d as number;
    const G = groups.length, acc = new Float64Array(d);
    for (let b = lo; b < hi; b++) {
      if (bd) { for (let i = 0; i < d; i++) acc[i] = bd[i]; }
      else acc.fill(0);
      let e = rp[b];
      for (let g = 0; g < G; g++) {
        const end = rp[b + 1];
        // Two entries per pass over acc halve its loads and stores.
        for (; e + 1 < end && idx[e + 1] < groups[g]; e += 2) {
          const x0 = val[e], r0 = idx[e] * d, x1 = val[e + 1], r1 = idx[e + 1] * d;
          for (let i = 0; i < d; i++) acc[i] += x0 * W[r0 + i] + x1 * W[r1 + i];
        }
        for (; e < end && idx[e] < groups[g]; e++) {
          const x = val[e], r = idx[e] * d;
          for (let i = 0; i < d; i++) acc[i] += x * W[r + i];
        }
        const ob = (g * B + b) * d;
        for (let i = 0; i < d; i++) o[ob + i] = acc[i];
      }
    }
    return 0;
  },

  /** reconLossGrad over elements [lo, hi) of x; returns the partial weighted squared error. */
  recon(a, lo, hi) {
    const xh = a.xh as F32, X = a.X as F32, gS = a.gS as F32, weights = a.weights as number[];
    const G = weights.length, n = X.length, B = a.B as number;
    let loss = 0;
    for (let i = lo; i < hi; i++) {
      let acc = 0;
      for (let g = G - 1; g >= 0; g--) {
        const r = xh[g * n + i] - X[i];
        loss += weights[g] * r * r;
        acc += weights[g] * (2 / B) * r;
        gS[g * n + i] = acc;
      }
    }
    return loss;
  },

  /** decodeBackward of rows [lo, hi). */
  decodeBackward(a, lo, hi) {
    const rp = a.rp as U32, idx = a.idx as U32, gS = a.gS as F32, W = a.W as F32, gv = a.gv as F32;
    const groups = a.groups as number[], B = a.B as number, d = a.d as number, accumulate = a.accumulate;
    for (let b = lo; b < hi; b++) {
      let g = 0;
      for (let e = rp[b]; e < rp[b + 1]; e++) {
        const j = idx[e];
        while (j >= groups[g]) g++;
        const o = (g * B + b) * d, r = j * d;
        // Four partial sums: the dependency chain of one sum, not the loads, bounds this loop.
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
        for (; i + 4 <= d; i += 4) {
          s0 += gS[o + i] * W[r + i];
          s1 += gS[o + i + 1] * W[r + i + 1];
          s2 += gS[o + i + 2] * W[r + i + 2];
          s3 += gS[o + i + 3] * W[r + i + 3];
        }
        for (; i < d; i++) s0 += gS[o + i] * W[r + i];
        gv[e] = (accumulate ? gv[e] : 0) + ((s0 + s1) + (s2 + s3));
      }
    }
    return 0;
  },

  /** latentGrads of latents [lo, hi). */
  latentGrads(a, lo, hi) {
    const cp = a.cp as U32, row = a.row as U32, entry = a.entry as U32;
    const gv = a.gv as F32, val = a.val as F32, X = a.X as F32, bd = a.bd as F32, gS = a.gS as F32;
    const gWe = a.gWe as F32, gbe = a.gbe as F32, gWd = (a.gWd ?? null) as F32 | null;
    const groups = a.groups as number[], B = a.B as number, d = bd.length;
    let g = 0;
    while (lo >= groups[g]) g++;
    const aE = new Float64Array(d), aD = new Float64Array(d);
    for (let j = lo; j < hi; j++) {
      while (j >= groups[g]) g++;
      const s = cp[j], t = cp[j + 1];
      if (s === t) continue;
      aE.fill(0);
      aD.fill(0);
      let sb = 0;
      let p = s;
      for (; p + 1 < t; p += 2) {
        const b0 = row[p], e0 = entry[p], b1 = row[p + 1], e1 = entry[p + 1];
        const g0 = gv[e0], v0 = val[e0], g1 = gv[e1], v1 = val[e1];
        sb += g0;
        sb += g1;
        const x0 = b0 * d, o0 = (g * B + b0) * d, x1 = b1 * d, o1 = (g * B + b1) * d;
        for (let i = 0; i < d; i++) {
          const c = bd[i];
          aE[i] += g0 * (X[x0 + i] - c) + g1 * (X[x1 + i] - c);
          aD[i] += v0 * gS[o0 + i] + v1 * gS[o1 + i];
        }
      }
      for (; p < t; p++) {
        const b = row[p], e = entry[p];
        const gve = gv[e], v = val[e];
        sb += gve;
        const xo = b * d, go = (g * B + b) * d;
        for (let i = 0; i < d; i++) {
          aE[i] += gve * (X[xo + i] - bd[i]);
          aD[i] += v * gS[go + i];
        }
      }
      gbe[j] += sb;
      for (let i = 0; i < d; i++) gWe[j * d + i] += aE[i];
      if (gWd) { for (let i = 0; i < d; i++) gWd[j * d + i] += aD[i]; }
    }
    return 0;
  },

  /** bdecGrad for columns [lo, hi) of b_dec, given per-latent sums (used[j] = 1 if present). */
  bdecCols(a, lo, hi) {
    const gS = a.gS as F32, W = a.W as F32, gb = a.gb as F32, sums = a.sums as Float64Array;
    const used = a.used as Uint8Array, B = a.B as number, d = gb.length, cols = a.cols as number;
    const withDecodePath = a.withDecodePath as boolean, accumulate = a.accumulate as boolean;
    const acc = new Float64Array(hi - lo);
    if (withDecodePath) {
      for (let b = 0; b < B; b++) for (let i = lo; i < hi; i++) acc[i - lo] += gS[b * d + i];
    }
    for (let j = 0; j < cols; j++) {
      if (!used[j]) continue;
      const s = sums[j], r = j * d;
      for (let i = lo; i < hi; i++) acc[i - lo] -= s * W[r + i];
    }
    for (let i = lo; i < hi; i++) gb[i] = (accumulate ? gb[i] : 0) + acc[i - lo];
    return 0;
  },

  sumSq(a, lo, hi) {
    const t = a.t as F32;
    let s = 0;
    for (let i = lo; i < hi; i++) s += t[i] * t[i];
    return s;
  },

  project(a, lo, hi) {
    const W = a.W as F32, G = a.G as F32, d = a.d as number;
    for (let j = lo; j < hi; j++) {
      const r = j * d;
      let nn = 0, dp = 0;
      for (let i = 0; i < d; i++) {
        nn += W[r + i] * W[r + i];
        dp += W[r + i] * G[r + i];
      }
      if (nn === 0) continue;
      const c = dp / nn;
      for (let i = 0; i < d; i++) G[r + i] -= c * W[r + i];
    }
    return 0;
  },

  adam(a, lo, hi) {
    const p = a.p as F32, g = a.g as F32, M = a.M as F32, V = a.V as F32;
    const scale = a.scale as number, beta1 = a.beta1 as number, beta2 = a.beta2 as number;
    const stepSize = a.stepSize as number, sq2 = a.sq2 as number, eps = a.eps as number;
    for (let i = lo; i < hi; i++) {
      const gi = g[i] * scale;
      M[i] = beta1 * M[i] + (1 - beta1) * gi;
      V[i] = beta2 * V[i] + (1 - beta2) * gi * gi;
      p[i] -= stepSize * M[i] / (Math.sqrt(V[i]) / sq2 + eps);
    }
    return 0;
  },

  renorm(a, lo, hi) {
    const W = a.W as F32, d = a.d as number;
    for (let j = lo; j < hi; j++) {
      let nn = 0;
      for (let i = 0; i < d; i++) nn += W[j * d + i] * W[j * d + i];
      if (nn === 0) continue;
      const s = 1 / Math.sqrt(nn);
      for (let i = 0; i < d; i++) W[j * d + i] *= s;
    }
    return 0;
  },
};

/**
 * Kernels on the WebAssembly memory (`wasm/heap.ts`): the arguments are byte offsets, and each
 * calls this thread's instance of the SIMD kernels (native/wasm/kernels.c) on its slice.
 */
export const WASM_KERNELS: Record<string, Kernel> = {
  wRelu: (a, lo, hi) => (wk().relu(a.P, lo, hi), 0),
  wCenter: (a, lo, hi) => (wk().center(a.X, a.bd, a.xc, a.d, lo, hi), 0),
  wBcast: (a, lo, hi) => (wk().bcast_rows(a.P, a.be, a.w, lo, hi), 0),
  wSumSq: (a, lo, hi) => wk().sumsq(a.t, lo, hi),
  wAdam: (a, lo, hi) => (
    wk().adam(a.p, a.g, a.M, a.V, lo, hi, a.scale, a.beta1, a.beta2, a.stepSize, a.sq2, a.eps), 0
  ),
  wProject: (a, lo, hi) => wk().project(a.W, a.G, a.d, lo, hi),
  wRenorm: (a, lo, hi) => (wk().renorm(a.W, a.d, lo, hi), 0),
  /** Selection pass; chunk c writes its candidates from c·room and its count to cnt[c]. */
  wCollect: (a, lo, hi, c) => (
    wk().collect_above(
      a.bits,
      lo,
      hi,
      a.loKey,
      a.pos + 4 * c * a.room,
      a.keys + 4 * c * a.room,
      a.room,
      a.cnt + 4 * c,
    ), 0
  ),
  /** One-pass gather into chunk c's own region (from c·room), or (room < 0) into the CSR from rp[lo]. */
  wGather(a, lo, hi, c) {
    const local = a.room >= 0;
    const rp = local ? null : memU32(a.rp, hi + 1);
    const e0 = rp ? rp[lo] : c * a.room, end = rp ? rp[hi] : e0 + a.room;
    return wk().gather_rows(
      a.v,
      a.w,
      lo,
      hi,
      a.t,
      a.slot,
      a.scalar,
      a.strict,
      a.mask,
      a.idx,
      a.val,
      e0,
      end,
      a.cnt,
    ) >>> 0;
  },
  wDecode: (a, lo, hi) => (
    wk().decode(a.rp, a.idx, a.val, a.W, a.o, a.bd, a.accumulate, a.groups, a.G, a.B, a.d, a.cap, lo, hi), 0
  ),
  wDecodeBackward: (a, lo, hi) => (
    wk().decode_backward(a.rp, a.idx, a.gS, a.W, a.out, a.accumulate, a.groups, a.B, a.d, a.cap, lo, hi), 0
  ),
  wLatentGrads: (a, lo, hi) => (
    wk().latent_grads(
      a.cp,
      a.row,
      a.entry,
      a.gv,
      a.val,
      a.X,
      a.bd,
      a.gS,
      a.gWe,
      a.gbe,
      a.gWd,
      a.groups,
      a.B,
      a.d,
      a.cap,
      a.overwrite,
      lo,
      hi,
    ), 0
  ),
  wBdecCols: (a, lo, hi) => (
    wk().bdec_cols(a.gS, a.W, a.gb, a.uj, a.us, a.nu, a.B, a.d, a.withDecodePath, a.accumulate, lo, hi), 0
  ),
  wRecon: (a, lo, hi) => wk().recon(a.xh, a.X, a.gS, a.w, a.c, a.G, a.n, lo, hi),
  wFill: (a, lo, hi) => (wk().fill_f32(a.t, a.value, lo, hi), 0),
  /** Per-row k-th largest; chunk c uses scratch from c·per bytes. */
  wRowKth: (
    a,
    lo,
    hi,
    c,
  ) => (wk().row_kth(a.bits, a.w, a.k, a.cols, a.nc, a.out, a.scratch + c * a.per, lo, hi), 0),
  wPack: (a, lo, hi) => (wk().pack8(a.B, a.ldb, a.N, a.K, a.trans, a.P, lo, hi), 0),
  wGemm: (a, lo, hi) => (
    wk().gemm(a.A, a.sa, a.sk, a.P, a.C, a.ldc, a.N, a.K, a.alpha, a.beta, a.bias, a.relu, lo, hi), 0
  ),
};
Object.assign(KERNELS, WASM_KERNELS);

/** The numeric arguments of each WebAssembly kernel, in board order (see pool.ts). */
export const WASM_ARGS: Record<string, readonly string[]> = {
  wRelu: ["P"],
  wCenter: ["X", "bd", "xc", "d"],
  wBcast: ["P", "be", "w"],
  wSumSq: ["t"],
  wAdam: ["p", "g", "M", "V", "scale", "beta1", "beta2", "stepSize", "sq2", "eps"],
  wProject: ["W", "G", "d"],
  wRenorm: ["W", "d"],
  wCollect: ["bits", "loKey", "pos", "keys", "room", "cnt"],
  wGather: ["v", "w", "t", "slot", "scalar", "strict", "mask", "idx", "val", "room", "cnt", "rp"],
  wDecode: ["rp", "idx", "val", "W", "o", "bd", "accumulate", "groups", "G", "B", "d", "cap"],
  wDecodeBackward: ["rp", "idx", "gS", "W", "out", "accumulate", "groups", "B", "d", "cap"],
  wLatentGrads: [
    "cp",
    "row",
    "entry",
    "gv",
    "val",
    "X",
    "bd",
    "gS",
    "gWe",
    "gbe",
    "gWd",
    "groups",
    "B",
    "d",
    "cap",
    "overwrite",
  ],
  wBdecCols: ["gS", "W", "gb", "uj", "us", "nu", "B", "d", "withDecodePath", "accumulate"],
  wRecon: ["xh", "X", "gS", "w", "c", "G", "n"],
  wFill: ["t", "value"],
  wRowKth: ["bits", "w", "k", "cols", "nc", "out", "scratch", "per"],
  wPack: ["B", "ldb", "N", "K", "trans", "P"],
  wGemm: ["A", "sa", "sk", "P", "C", "ldc", "N", "K", "alpha", "beta", "bias", "relu"],
};
export const WASM_KERNEL_NAMES: readonly string[] = Object.keys(WASM_ARGS);
for (const k of WASM_KERNEL_NAMES) if (!WASM_KERNELS[k]) throw new Error(`no WebAssembly kernel ${k}`);
for (const k of Object.keys(WASM_KERNELS)) if (!WASM_ARGS[k]) throw new Error(`no argument list for ${k}`);

function relu(v: number): number {
  return v > 0 ? v : 0;
}

function dot(a: F32, ao: number, b: F32, bo: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[ao + i] * b[bo + i];
  return s;
}
