/**
 * Monosemanticity Score (MS), paper §3.2 Eq. 5–9 and the reference `metric.py`
 * (ExplainableML/sae-for-vlm).
 *
 * For neuron k with activations a_1..a_N over the evaluation set and embeddings E(x_n):
 *   ã_n   = (a_n − min_n′ a_n′) / (max − min)              min-max per neuron over the set
 *   r_nm  = ã_n ã_m,   s_nm = cos(E(x_n), E(x_m))
 *   MS_k  = Σ_{n<m} r_nm s_nm / Σ_{n<m} r_nm               weighted mean over distinct pairs
 *
 * NaN scores, as in the reference (`torch.where(weight_sum != 0, wsum / weight_sum, nan)`):
 * - a constant neuron (max == min): its min-max normalisation is 0/0, so NaN;
 * - a neuron whose weight sits on a single sample (every other sample is at the minimum), so
 *   that Σ_{n<m} r_nm = 0: NaN. With 2+ samples above the minimum the score is finite.
 *
 * {@link msScores} uses an exact closed form with unit-normalised embeddings ê_n (s_nn = 1) and
 * unnormalised weights z_n = a_n − min ≥ 0 (the 1/(max−min)² factor cancels in the ratio). The
 * textbook form ½((Σz)² − Σz²) of the pair-weight sum cancels to nothing when one sample holds
 * nearly all of a neuron's weight (one image at 1, five at 1e-25: 0/0), so both sums are taken
 * without that cancellation. With m = the sample of largest weight, h = Σ_{n≠m} z_n ê_n and
 * Σ′ = sums over n ≠ m:
 *   Σ_{n<m} z_n z_m      = Σ_j z_j · Σ_{i<j} z_i             (non-negative terms only)
 *   Σ_{n<m} z_n z_m s_nm = z_m (ê_m · h) + ½(‖h‖² − Σ′ z_n²)
 * The second bracket still cancels, but its error is O(ε·Σ′z²) ≤ O(ε · pair-weight sum), so the
 * score is accurate to O(ε) absolutely however skewed the weights are.
 * All accumulation is float64. {@link msBrute} is the O(N²·cols) pair loop of `metric.py`,
 * used as the test oracle. Both take embeddings as given: s_nm is the cosine of the raw rows.
 */
import type { ActMatrix, MsSummary } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { checkActMatrix, csrToCsc } from "./actmatrix.ts";

export interface MsOptions {
  /** Called after each block of neurons with (neurons done, total neurons). */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Validate the embeddings [n, D] (Float32Array, finite, no zero rows) and return the inverse
 * row norms 1/‖E(x_n)‖ in float64.
 */
function embeddingInvNorms(emb: Float32Array, n: number, D: number, what: string): Float64Array {
  check(
    Number.isInteger(D) && D >= 1,
    `${what}: embedding dimension D must be a positive integer (got ${D})`,
  );
  check(emb instanceof Float32Array, `${what}: embeddings must be a Float32Array`);
  check(
    emb.length === n * D,
    `${what}: embeddings have ${emb.length} values, expected n·D = ${n}·${D} = ${n * D} ` +
      `(one row per evaluation sample)`,
  );
  const inv = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    let s = 0;
    for (let j = r * D, e = j + D; j < e; j++) {
      const v = emb[j];
      if (!Number.isFinite(v)) {
        throw new MonobenchError(`${what}: non-finite embedding value ${v} at row ${r}, column ${j - r * D}`);
      }
      s += v * v;
    }
    if (!(s > 0)) {
      throw new MonobenchError(`${what}: embedding row ${r} has zero norm; cosine similarity is undefined`);
    }
    inv[r] = 1 / Math.sqrt(s);
  }
  return inv;
}

function checkInputs(acts: ActMatrix, emb: Float32Array, D: number, what: string): Float64Array {
  checkActMatrix(acts, `${what} activations`);
  check(acts.n >= 2, `${what}: need at least 2 evaluation samples to form pairs (got n = ${acts.n})`);
  return embeddingInvNorms(emb, acts.n, D, what);
}

/**
 * MS from float64 sums: zTop = the largest weight, hDot = ê_top · h, h2 = ‖h‖², sz2 = Σ′ z² (h and
 * Σ′ leave the top sample out) and den = the pair-weight sum. Zero pair weight → NaN.
 */
function finish(zTop: number, hDot: number, h2: number, sz2: number, den: number): number {
  if (!(den > 0)) return NaN;
  // A weighted mean of cosines lies in [−1, 1]; rounding can step an ulp past it (e.g. 1 + 2⁻⁵²).
  const ms = (zTop * hDot + 0.5 * (h2 - sz2)) / den;
  return ms > 1 ? 1 : ms < -1 ? -1 : ms;
}

/** ê · g[go..go+D) for the embedding row at E[eo..eo+D) with inverse norm `inv`. */
function dotRow(g: Float64Array, go: number, E: Float32Array, eo: number, D: number, inv: number): number {
  let s = 0;
  for (let j = 0; j < D; j++) s += g[go + j] * E[eo + j];
  return s * inv;
}

/**
 * Per-neuron Monosemanticity Scores, exact (to float64 rounding) and fast.
 * - dense [n, cols]: O(n·cols·D) blocked float64 product Zᵀ Ê (neuron blocks × sample blocks,
 *   4×4 register tile), O(cols·D) extra memory per block;
 * - CSR [n, cols]: O(nnz·D + cols·D). A neuron's minimum is 0 when it has an implicit zero
 *   (min over its stored values and 0), and the implicit zeros then carry weight 0; when its
 *   minimum is negative the implicit zeros carry weight −min, handled via Σ_n ê_n.
 * `emb` is [n, D] row-major (any norm; rows are normalised here). Returns one score per
 * column of `acts` (NaN for constant / single-sample neurons, see the module doc).
 * Throws MonobenchError for shape mismatches, non-finite values or zero-norm embedding rows.
 */
export function msScores(acts: ActMatrix, emb: Float32Array, D: number, opts: MsOptions = {}): Float64Array {
  const inv = checkInputs(acts, emb, D, "msScores");
  return acts.kind === "dense" ? msDense(acts, emb, D, inv, opts) : msCsr(acts, emb, D, inv, opts);
}

// ---------------------------------------------------------------------------------------------
// Dense: G = Zᵀ Ê for a block of NB neurons, samples in blocks of PB, 4×4 register tiles.

const NB = 64; // neurons per block (multiple of 4)
const PB = 256; // samples per block: the 4-column slice of PB embedding rows stays in L1

function msDense(
  acts: Extract<ActMatrix, { kind: "dense" }>,
  emb: Float32Array,
  D: number,
  inv: Float64Array,
  opts: MsOptions,
): Float64Array {
  const { n, cols, data } = acts;
  const mn = new Float64Array(cols).fill(Infinity);
  const mx = new Float64Array(cols).fill(-Infinity);
  const top = new Int32Array(cols); // first sample at the maximum: left out of h and Σ′
  for (let r = 0; r < n; r++) {
    const o = r * cols;
    for (let k = 0; k < cols; k++) {
      const v = data[o + k];
      if (v < mn[k]) mn[k] = v;
      if (v > mx[k]) {
        mx[k] = v;
        top[k] = r;
      }
    }
  }
  // Pair-weight sum Σ_j z_j·Σ_{i<j} z_i (running prefix `pre`) and Σ′ z².
  const den = new Float64Array(cols);
  const pre = new Float64Array(cols);
  const sz2 = new Float64Array(cols);
  for (let r = 0; r < n; r++) {
    const o = r * cols;
    for (let k = 0; k < cols; k++) {
      const z = data[o + k] - mn[k];
      den[k] += z * pre[k];
      pre[k] += z;
      if (r !== top[k]) sz2[k] += z * z;
    }
  }
  const out = new Float64Array(cols);
  const D4 = D - (D % 4);
  const U = new Float64Array(NB * PB);
  const G = new Float64Array(NB * D);
  for (let k0 = 0; k0 < cols; k0 += NB) {
    const nb = Math.min(NB, cols - k0);
    const nq = (nb + 3) >> 2;
    G.fill(0);
    for (let p0 = 0; p0 < n; p0 += PB) {
      const pb = Math.min(PB, n - p0);
      // Pack U[q][p][t] = (a[p0+p][k0+4q+t] − min) / ‖E(x_p)‖ (0 for padding / constant neurons
      // and for the top sample, so that G accumulates h).
      for (let q = 0; q < nq; q++) {
        const ub = q * pb * 4;
        for (let t = 0; t < 4; t++) {
          const k = k0 + q * 4 + t;
          const live = k < k0 + nb && mx[k] > mn[k];
          const m = live ? mn[k] : 0;
          for (let p = 0; p < pb; p++) {
            U[ub + p * 4 + t] = live ? (data[(p0 + p) * cols + k] - m) * inv[p0 + p] : 0;
          }
          if (live && top[k] >= p0 && top[k] < p0 + pb) U[ub + (top[k] - p0) * 4 + t] = 0;
        }
      }
      const eBase = p0 * D;
      for (let j = 0; j < D4; j += 4) {
        for (let q = 0; q < nq; q++) kernel44(U, q * pb * 4, pb, emb, eBase + j, D, G, q * 4 * D + j, D);
      }
      for (let j = D4; j < D; j++) {
        for (let q = 0; q < nq; q++) kernel41(U, q * pb * 4, pb, emb, eBase + j, D, G, q * 4 * D + j, D);
      }
    }
    for (let t = 0; t < nb; t++) {
      const k = k0 + t;
      if (!(mx[k] > mn[k])) {
        out[k] = NaN;
        continue;
      }
      let h2 = 0;
      for (let j = t * D, e = j + D; j < e; j++) h2 += G[j] * G[j];
      const hDot = dotRow(G, t * D, emb, top[k] * D, D, inv[top[k]]);
      out[k] = finish(mx[k] - mn[k], hDot, h2, sz2[k], den[k]);
    }
    opts.onProgress?.(k0 + nb, cols);
  }
  return out;
}

/** G[4×4 tile at go, row stride gs] += Σ_p U[uo + 4p + i] · E[eo + p·D + j]. */
function kernel44(
  U: Float64Array,
  uo: number,
  pb: number,
  E: Float32Array,
  eo: number,
  D: number,
  G: Float64Array,
  go: number,
  gs: number,
): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let p = 0; p < pb; p++) {
    const u0 = U[uo], u1 = U[uo + 1], u2 = U[uo + 2], u3 = U[uo + 3];
    const e0 = E[eo], e1 = E[eo + 1], e2 = E[eo + 2], e3 = E[eo + 3];
    c00 += u0 * e0;
    c01 += u0 * e1;
    c02 += u0 * e2;
    c03 += u0 * e3;
    c10 += u1 * e0;
    c11 += u1 * e1;
    c12 += u1 * e2;
    c13 += u1 * e3;
    c20 += u2 * e0;
    c21 += u2 * e1;
    c22 += u2 * e2;
    c23 += u2 * e3;
    c30 += u3 * e0;
    c31 += u3 * e1;
    c32 += u3 * e2;
    c33 += u3 * e3;
    uo += 4;
    eo += D;
  }
  G[go] += c00;
  G[go + 1] += c01;
  G[go + 2] += c02;
  G[go + 3] += c03;
  go += gs;
  G[go] += c10;
  G[go + 1] += c11;
  G[go + 2] += c12;
  G[go + 3] += c13;
  go += gs;
  G[go] += c20;
  G[go + 1] += c21;
  G[go + 2] += c22;
  G[go + 3] += c23;
  go += gs;
  G[go] += c30;
  G[go + 1] += c31;
  G[go + 2] += c32;
  G[go + 3] += c33;
}

/** Tail column (D % 4 ≠ 0): 4 neurons × 1 embedding dimension. */
function kernel41(
  U: Float64Array,
  uo: number,
  pb: number,
  E: Float32Array,
  eo: number,
  D: number,
  G: Float64Array,
  go: number,
  gs: number,
): void {
  let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
  for (let p = 0; p < pb; p++) {
    const e = E[eo];
    c0 += U[uo] * e;
    c1 += U[uo + 1] * e;
    c2 += U[uo + 2] * e;
    c3 += U[uo + 3] * e;
    uo += 4;
    eo += D;
  }
  G[go] += c0;
  G[go + gs] += c1;
  G[go + 2 * gs] += c2;
  G[go + 3 * gs] += c3;
}

// ---------------------------------------------------------------------------------------------
// CSR: one neuron (column) at a time over its stored entries.

const CSR_PROGRESS_EVERY = 1024;

function msCsr(
  acts: Extract<ActMatrix, { kind: "csr" }>,
  emb: Float32Array,
  D: number,
  inv: Float64Array,
  opts: MsOptions,
): Float64Array {
  const { n, cols } = acts;
  const { colPtr, row, val } = csrToCsc(acts);
  const out = new Float64Array(cols);
  const g = new Float64Array(D);
  const tmp = new Float64Array(D);
  let S: Float64Array | null = null; // Σ_n ê_n, built on first need
  for (let k = 0; k < cols; k++) {
    const s = colPtr[k], e = colPtr[k + 1];
    const c = e - s;
    let mn = c < n ? 0 : Infinity;
    let mx = c < n ? 0 : -Infinity;
    let tTop = -1; // stored entry at the maximum (−1: the maximum is an implicit zero)
    for (let t = s; t < e; t++) {
      const v = val[t];
      if (v < mn) mn = v;
      if (v > mx) {
        mx = v;
        tTop = t;
      }
    }
    if (!(mx > mn)) {
      out[k] = NaN;
    } else if (mn === 0 || c === n) {
      // Only stored entries carry weight z = a − min: with implicit zeros the minimum is 0 and
      // they weigh nothing; with none (c = n) every sample is stored. mx > mn, so tTop ≥ 0.
      g.fill(0);
      let den = 0, pre = 0, sz2 = 0;
      for (let t = s; t < e; t++) {
        const z = val[t] - mn;
        if (z === 0) continue;
        den += z * pre;
        pre += z;
        if (t === tTop) continue;
        sz2 += z * z;
        const r = row[t];
        axpy(g, z * inv[r], emb, r * D, D);
      }
      const rTop = row[tTop];
      out[k] = finish(mx - mn, dotRow(g, 0, emb, rTop * D, D, inv[rTop]), sumSq(g, D), sz2, den);
    } else {
      // Negative minimum with implicit zeros: every sample carries weight; the c0 implicit zeros
      // get w0 = −min. The implicit rows are summed directly when they are the fewer (S − Σ_stored
      // would cancel to them), else as Σ_n ê_n − Σ_stored ê_n.
      const w0 = -mn, c0 = n - c;
      let rTop: number;
      let topImplicit = false;
      if (tTop < 0) {
        // The maximum weight w0 sits on zeros: an explicit one if stored, else the first row
        // missing from the column (rows are stored in ascending order).
        for (let t = s; t < e && tTop < 0; t++) if (val[t] === 0) tTop = t;
        if (tTop >= 0) {
          rTop = row[tTop];
        } else {
          let t = s;
          rTop = 0;
          while (t < e && row[t] === rTop) t++, rTop++;
          topImplicit = true;
        }
      } else {
        rTop = row[tTop];
      }
      g.fill(0);
      let den = w0 * w0 * ((c0 * (c0 - 1)) / 2), pre = 0;
      let sz2 = (topImplicit ? c0 - 1 : c0) * w0 * w0;
      for (let t = s; t < e; t++) {
        const z = val[t] - mn;
        den += z * pre;
        pre += z;
        if (t === tTop) continue;
        sz2 += z * z;
        const r = row[t];
        if (z !== 0) axpy(g, z * inv[r], emb, r * D, D);
      }
      den += w0 * c0 * pre;
      if (c0 <= c) {
        for (let r = 0, t = s; r < n; r++) {
          if (t < e && row[t] === r) {
            t++;
            continue;
          }
          if (!(topImplicit && r === rTop)) axpy(g, w0 * inv[r], emb, r * D, D);
        }
      } else {
        if (S === null) {
          S = new Float64Array(D);
          for (let r = 0; r < n; r++) axpy(S, inv[r], emb, r * D, D);
        }
        tmp.set(S);
        for (let t = s; t < e; t++) axpy(tmp, -inv[row[t]], emb, row[t] * D, D);
        if (topImplicit) axpy(tmp, -inv[rTop], emb, rTop * D, D);
        for (let j = 0; j < D; j++) g[j] += w0 * tmp[j];
      }
      out[k] = finish(mx - mn, dotRow(g, 0, emb, rTop * D, D, inv[rTop]), sumSq(g, D), sz2, den);
    }
    if (opts.onProgress && ((k + 1) % CSR_PROGRESS_EVERY === 0 || k + 1 === cols)) {
      opts.onProgress(k + 1, cols);
    }
  }
  return out;
}

/** g[0..D) += f · E[o..o+D). Kept small and monomorphic so that V8 optimises it on its own. */
function axpy(g: Float64Array, f: number, E: Float32Array, o: number, D: number): void {
  for (let j = 0; j < D; j++) g[j] += f * E[o + j];
}

function sumSq(g: Float64Array, D: number): number {
  let s = 0;
  for (let j = 0; j < D; j++) s += g[j] * g[j];
  return s;
}

// ---------------------------------------------------------------------------------------------

/**
 * The reference `metric.py` computation, literally: min-max normalise each neuron (0/0 → NaN
 * for constant neurons), then loop over all pairs n < m accumulating r_nm·s_nm and r_nm, and
 * return wsum / weight_sum where weight_sum ≠ 0, else NaN. O(N²·cols) time; float64. The test
 * oracle for {@link msScores}; only for small inputs.
 */
export function msBrute(acts: ActMatrix, emb: Float32Array, D: number): Float64Array {
  const inv = checkInputs(acts, emb, D, "msBrute");
  const { n, cols } = acts;
  // Dense float64 copy of the activations, then per-column min-max normalisation.
  const a = new Float64Array(n * cols);
  if (acts.kind === "dense") {
    for (let i = 0; i < a.length; i++) a[i] = acts.data[i];
  } else {
    for (let r = 0; r < n; r++) {
      for (let t = acts.rowPtr[r]; t < acts.rowPtr[r + 1]; t++) a[r * cols + acts.idx[t]] = acts.val[t];
    }
  }
  for (let k = 0; k < cols; k++) {
    let mn = Infinity, mx = -Infinity;
    for (let r = 0; r < n; r++) {
      const v = a[r * cols + k];
      if (v < mn) mn = v;
      if (v > mx) mx = v;
    }
    for (let r = 0; r < n; r++) a[r * cols + k] = (a[r * cols + k] - mn) / (mx - mn);
  }
  const wsum = new Float64Array(cols);
  const weightSum = new Float64Array(cols);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let dot = 0;
      for (let t = 0; t < D; t++) dot += emb[i * D + t] * emb[j * D + t];
      const sim = dot * inv[i] * inv[j];
      for (let k = 0; k < cols; k++) {
        const w = a[i * cols + k] * a[j * cols + k];
        wsum[k] += w * sim;
        weightSum[k] += w;
      }
    }
  }
  const out = new Float64Array(cols);
  for (let k = 0; k < cols; k++) out[k] = weightSum[k] !== 0 ? wsum[k] / weightSum[k] : NaN;
  return out;
}

/**
 * One-hot embeddings [n, classes] of integer labels: their cosine similarity is 1 for samples
 * with the same label and 0 otherwise (the "labels" similarity source). `classes` defaults to
 * max(label) + 1. Throws MonobenchError for non-integer / negative / out-of-range labels.
 */
export function oneHotEmbeddings(labels: ArrayLike<number>, classes?: number): Float32Array {
  const n = labels.length;
  let mx = -1;
  for (let i = 0; i < n; i++) {
    const l = labels[i];
    if (!Number.isInteger(l) || l < 0) {
      throw new MonobenchError(`oneHotEmbeddings: label ${l} at index ${i} is not a non-negative integer`);
    }
    if (l > mx) mx = l;
  }
  const C = classes ?? mx + 1;
  check(Number.isInteger(C) && C >= 1, `oneHotEmbeddings: classes must be a positive integer (got ${C})`);
  check(mx < C, `oneHotEmbeddings: label ${mx} out of range for ${C} classes`);
  const out = new Float32Array(n * C);
  for (let i = 0; i < n; i++) out[i * C + labels[i]] = 1;
  return out;
}

/** Maximum number of points in {@link MsSummary.curve}. */
export const CURVE_POINTS = 200;

/**
 * Summary of per-neuron scores as the reference reports them (`metric.py`): mean and std over
 * the non-NaN scores, std being torch's default `.std()`, i.e. the sample (unbiased, N−1)
 * standard deviation (NaN with fewer than 2 scores); min / max over non-NaN scores; the NaN
 * count; and the descending sorted non-NaN scores resampled to ≤ 200 points (first = max,
 * last = min, evenly spaced ranks). With no non-NaN score, mean/std/min/max are NaN.
 */
export function summarizeMs(scores: Float64Array, encoder: string): MsSummary {
  const valid: number[] = [];
  for (let i = 0; i < scores.length; i++) if (!Number.isNaN(scores[i])) valid.push(scores[i]);
  const m = valid.length;
  let mean = NaN, std = NaN, min = NaN, max = NaN;
  if (m > 0) {
    let s = 0;
    for (const v of valid) s += v;
    mean = s / m;
    if (m > 1) {
      let ss = 0;
      for (const v of valid) ss += (v - mean) * (v - mean);
      std = Math.sqrt(ss / (m - 1));
    }
    min = Infinity;
    max = -Infinity;
    for (const v of valid) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  const sorted = Float64Array.from(valid).sort().reverse();
  const curve: number[] = [];
  if (m <= CURVE_POINTS) {
    for (let i = 0; i < m; i++) curve.push(sorted[i]);
  } else {
    for (let i = 0; i < CURVE_POINTS; i++) curve.push(sorted[Math.round((i * (m - 1)) / (CURVE_POINTS - 1))]);
  }
  return { encoder, mean, std, min, max, nanCount: scores.length - m, count: scores.length, curve };
}

/**
 * Fraction of the non-NaN scores strictly greater than `value` (e.g. the mean raw-neuron MS,
 * paper Fig. 5a). NaN when there is no non-NaN score.
 */
export function fracAbove(scores: ArrayLike<number>, value: number): number {
  let valid = 0, above = 0;
  for (let i = 0; i < scores.length; i++) {
    const v = scores[i];
    if (Number.isNaN(v)) continue;
    valid++;
    if (v > value) above++;
  }
  return valid === 0 ? NaN : above / valid;
}
