/**
 * CPU backend: the reference implementation of the {@link Backend} contract and the oracle the
 * GPU kernels are tested against. Plain TypeScript on typed arrays; ops run synchronously.
 */
import type {
  AdamParams,
  Backend,
  ClipParams,
  Codes,
  CodesT,
  DType,
  EwArg,
  EwSpace,
  MatmulOptions,
  ReduceTo,
  Tensor,
  Threshold,
} from "./types.ts";
import { MonobenchError } from "../util/errors.ts";
import type { Expr } from "../compute/expr.ts";
import { bindEw } from "../compute/ew.ts";
import { hostArgs, runEw } from "../compute/cpu_ew.ts";

export class CpuTensor implements Tensor {
  readonly size: number;
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly data: Float32Array | Uint32Array,
  ) {
    this.size = data.length;
  }
}

function prod(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new MonobenchError(`bad tensor shape [${shape.join(", ")}]`);
    n *= s;
  }
  return n;
}

/** The host array of an f32 CpuTensor (throws for anything else). */
export function f32(t: Tensor): Float32Array {
  const c = t as CpuTensor;
  if (!(c instanceof CpuTensor) || c.dtype !== "f32") {
    throw new Error("cpu backend: expected an f32 CpuTensor");
  }
  return c.data as Float32Array;
}

/** The host array of a u32 CpuTensor (throws for anything else). */
export function u32(t: Tensor): Uint32Array {
  const c = t as CpuTensor;
  if (!(c instanceof CpuTensor) || c.dtype !== "u32") {
    throw new Error("cpu backend: expected a u32 CpuTensor");
  }
  return c.data as Uint32Array;
}

/** Map a float's bits to a u32 whose unsigned order equals the float order. */
export function orderedKey(bits: number): number {
  return (bits & 0x80000000) ? (~bits) >>> 0 : (bits | 0x80000000) >>> 0;
}

function keyToFloat(key: number): number {
  const bits = (key & 0x80000000) ? (key & 0x7fffffff) >>> 0 : (~key) >>> 0;
  const b = new Uint32Array([bits]);
  return new Float32Array(b.buffer)[0];
}

/** Scratch space for {@link radixKth}: a 2048-bin histogram and a growable candidate buffer. */
class SelectScratch {
  hist = new Uint32Array(2048);
  cand = new Uint32Array(1024);
  grow(n: number): Uint32Array {
    if (this.cand.length < n) this.cand = new Uint32Array(Math.max(n, this.cand.length * 2));
    return this.cand;
  }
}

/** Digit layout of the 32-bit key: 11 + 11 + 10 bits, most significant first. */
const DIGITS: readonly [shift: number, bits: number][] = [[21, 11], [10, 11], [0, 10]];

/**
 * k-th largest (1-based) of `vals[off + i]` for eligible i < n (eligible[i] != 0, or all when
 * null), by radix select over the order-preserving key of the float bits: one histogram pass
 * over all elements on the top 11 bits, then the keys of the chosen bucket are compacted and the
 * remaining 21 bits are resolved on those candidates only. Returns −Infinity when fewer than k
 * elements are eligible.
 */
function radixKth(
  bits: Uint32Array,
  off: number,
  n: number,
  k: number,
  eligible: Uint32Array | null,
  sc: SelectScratch,
): number {
  const hist = sc.hist;
  const [s0, w0] = DIGITS[0];
  hist.fill(0, 0, 1 << w0);
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (eligible && !eligible[i]) continue;
    hist[orderedKey(bits[off + i]) >>> s0]++;
    count++;
  }
  if (k < 1 || k > count) return -Infinity;
  let remaining = k;
  let b = (1 << w0) - 1;
  for (; b > 0; b--) {
    if (hist[b] >= remaining) break;
    remaining -= hist[b];
  }
  let prefix = (b << s0) >>> 0;
  // Compact the keys of bucket b.
  const cand = sc.grow(hist[b]);
  let m = 0;
  for (let i = 0; i < n; i++) {
    if (eligible && !eligible[i]) continue;
    const key = orderedKey(bits[off + i]);
    if ((key >>> s0) === b) cand[m++] = key;
  }
  for (let p = 1; p < DIGITS.length; p++) {
    const [shift, width] = DIGITS[p];
    const mask = (1 << width) - 1;
    hist.fill(0, 0, 1 << width);
    for (let i = 0; i < m; i++) hist[(cand[i] >>> shift) & mask]++;
    let c = mask;
    for (; c > 0; c--) {
      if (hist[c] >= remaining) break;
      remaining -= hist[c];
    }
    prefix = (prefix | (c << shift)) >>> 0;
    if (p + 1 < DIGITS.length) {
      let w = 0;
      for (let i = 0; i < m; i++) if (((cand[i] >>> shift) & mask) === c) cand[w++] = cand[i];
      m = w;
    }
  }
  return keyToFloat(prefix);
}

export class CpuBackend implements Backend {
  readonly name: string = "cpu";
  readonly description: string = "CPU (TypeScript reference backend)";
  private scratch = new SelectScratch();

  // ---- memory ---------------------------------------------------------------------------------
  tensor(data: Float32Array | Uint32Array, shape: number[]): Tensor {
    const n = prod(shape);
    if (data.length !== n) {
      throw new MonobenchError(`tensor data has ${data.length} elements, shape [${shape}] needs ${n}`);
    }
    const dtype: DType = data instanceof Uint32Array ? "u32" : "f32";
    return new CpuTensor([...shape], dtype, data.slice());
  }
  zeros(shape: number[], dtype: DType = "f32"): Tensor {
    const n = prod(shape);
    return new CpuTensor([...shape], dtype, dtype === "u32" ? new Uint32Array(n) : new Float32Array(n));
  }
  write(t: Tensor, data: Float32Array | Uint32Array, offset = 0): void {
    const c = t as CpuTensor;
    if (offset + data.length > c.size) throw new MonobenchError("write past the end of a tensor");
    c.data.set(data, offset);
  }
  read(t: Tensor): Promise<Float32Array | Uint32Array> {
    return Promise.resolve((t as CpuTensor).data.slice());
  }
  fill(t: Tensor, value: number): void {
    (t as CpuTensor).data.fill(value);
  }
  copy(src: Tensor, dst: Tensor): void {
    if (src.size !== dst.size || src.dtype !== dst.dtype) throw new Error("copy: size/dtype mismatch");
    (dst as CpuTensor).data.set((src as CpuTensor).data);
  }
  dispose(_t: Tensor): void {}
  codes(rows: number, cols: number, cap: number): Codes {
    return {
      rows,
      cols,
      cap,
      rowPtr: this.zeros([rows + 1], "u32"),
      idx: this.zeros([Math.max(cap, 1)], "u32"),
      val: this.zeros([Math.max(cap, 1)]),
    };
  }
  codesT(rows: number, cols: number, cap: number): CodesT {
    return {
      rows,
      cols,
      cap,
      colPtr: this.zeros([cols + 1], "u32"),
      row: this.zeros([Math.max(cap, 1)], "u32"),
      entry: this.zeros([Math.max(cap, 1)], "u32"),
    };
  }
  disposeCodes(_c: Codes | CodesT): void {}
  sync(): Promise<void> {
    return Promise.resolve();
  }
  destroy(): void {}

  // ---- forward --------------------------------------------------------------------------------
  encode(x: Tensor, Wenc: Tensor, benc: Tensor, bdec: Tensor, pre: Tensor): void {
    const X = f32(x), W = f32(Wenc), be = f32(benc), bd = f32(bdec), P = f32(pre);
    const d = bd.length, w = be.length, B = X.length / d;
    if (W.length !== w * d || P.length !== B * w) throw new Error("encode: shape mismatch");
    // Centre the inputs once.
    const xc = new Float32Array(X.length);
    for (let b = 0; b < B; b++) for (let i = 0; i < d; i++) xc[b * d + i] = X[b * d + i] - bd[i];
    // 4 samples x 4 latents register block.
    let b = 0;
    for (; b + 4 <= B; b += 4) {
      const o0 = b * d, o1 = o0 + d, o2 = o1 + d, o3 = o2 + d;
      let j = 0;
      for (; j + 4 <= w; j += 4) {
        const r0 = j * d, r1 = r0 + d, r2 = r1 + d, r3 = r2 + d;
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
        let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
        for (let i = 0; i < d; i++) {
          const a0 = xc[o0 + i], a1 = xc[o1 + i], a2 = xc[o2 + i], a3 = xc[o3 + i];
          const w0 = W[r0 + i], w1 = W[r1 + i], w2 = W[r2 + i], w3 = W[r3 + i];
          s00 += a0 * w0, s01 += a0 * w1, s02 += a0 * w2, s03 += a0 * w3;
          s10 += a1 * w0, s11 += a1 * w1, s12 += a1 * w2, s13 += a1 * w3;
          s20 += a2 * w0, s21 += a2 * w1, s22 += a2 * w2, s23 += a2 * w3;
          s30 += a3 * w0, s31 += a3 * w1, s32 += a3 * w2, s33 += a3 * w3;
        }
        const p0 = b * w + j, p1 = p0 + w, p2 = p1 + w, p3 = p2 + w;
        const c0 = be[j], c1 = be[j + 1], c2 = be[j + 2], c3 = be[j + 3];
        P[p0] = relu(s00 + c0),
          P[p0 + 1] = relu(s01 + c1),
          P[p0 + 2] = relu(s02 + c2),
          P[p0 + 3] = relu(s03 + c3);
        P[p1] = relu(s10 + c0),
          P[p1 + 1] = relu(s11 + c1),
          P[p1 + 2] = relu(s12 + c2),
          P[p1 + 3] = relu(s13 + c3);
        P[p2] = relu(s20 + c0),
          P[p2 + 1] = relu(s21 + c1),
          P[p2 + 2] = relu(s22 + c2),
          P[p2 + 3] = relu(s23 + c3);
        P[p3] = relu(s30 + c0),
          P[p3 + 1] = relu(s31 + c1),
          P[p3 + 2] = relu(s32 + c2),
          P[p3 + 3] = relu(s33 + c3);
      }
      for (; j < w; j++) {
        for (let r = 0; r < 4; r++) P[(b + r) * w + j] = relu(dot(xc, (b + r) * d, W, j * d, d) + be[j]);
      }
    }
    for (; b < B; b++) {
      for (let j = 0; j < w; j++) P[b * w + j] = relu(dot(xc, b * d, W, j * d, d) + be[j]);
    }
  }

  kthLargest(values: Tensor, k: number, out: Tensor, slot: number): void {
    const v = f32(values);
    const bits = new Uint32Array(v.buffer, v.byteOffset, v.length);
    f32(out)[slot] = radixKth(bits, 0, v.length, k, null, this.scratch);
  }

  kthLargestRows(values: Tensor, k: number, mask: Tensor | null, out: Tensor): void {
    const v = f32(values), o = f32(out);
    const B = o.length, w = v.length / B;
    const bits = new Uint32Array(v.buffer, v.byteOffset, v.length);
    const m = mask ? u32(mask) : null;
    for (let b = 0; b < B; b++) o[b] = radixKth(bits, b * w, w, k, m, this.scratch);
  }

  gather(values: Tensor, thr: Threshold, mask: Tensor | null, strict: boolean, out: Codes): void {
    const v = f32(values), rp = u32(out.rowPtr), idx = u32(out.idx), val = f32(out.val);
    const B = out.rows, w = out.cols;
    if (v.length !== B * w) throw new Error("gather: shape mismatch");
    const m = mask ? u32(mask) : null;
    const t = f32(thr.t);
    let e = 0;
    rp[0] = 0;
    for (let b = 0; b < B; b++) {
      const tb = thr.kind === "scalar" ? t[thr.slot] : t[b];
      const off = b * w;
      // Kept iff a > 0 and a ≥ tb (a > tb when strict): one comparison against the effective bound.
      // A NaN threshold keeps nothing, as every comparison with it is false.
      if (tb === tb) {
        const lo = tb > 0 ? tb : 0, strictLo = strict || !(tb > 0);
        for (let j = 0; j < w; j++) {
          const a = v[off + j];
          if (strictLo ? !(a > lo) : !(a >= lo)) continue;
          if (m && !m[j]) continue;
          if (e < out.cap) {
            idx[e] = j;
            val[e] = a;
            e++;
          }
        }
      }
      rp[b + 1] = e;
    }
  }

  transpose(codes: Codes, out: CodesT): void {
    const rp = u32(codes.rowPtr), idx = u32(codes.idx);
    const cp = u32(out.colPtr), row = u32(out.row), entry = u32(out.entry);
    const w = out.cols;
    cp.fill(0);
    const total = rp[codes.rows];
    for (let e = 0; e < total; e++) cp[idx[e] + 1]++;
    for (let j = 0; j < w; j++) cp[j + 1] += cp[j];
    const fillPos = cp.slice(0, w);
    for (let b = 0; b < codes.rows; b++) {
      for (let e = rp[b]; e < rp[b + 1]; e++) {
        const p = fillPos[idx[e]]++;
        row[p] = b;
        entry[p] = e;
      }
    }
  }

  decode(codes: Codes, Wdec: Tensor, bdec: Tensor | null, groups: number[], out: Tensor): void {
    const rp = u32(codes.rowPtr), idx = u32(codes.idx), val = f32(codes.val);
    const W = f32(Wdec), o = f32(out);
    const B = codes.rows, G = groups.length, d = W.length / codes.cols;
    if (o.length !== G * B * d) throw new Error("decode: out shape mismatch");
    const bd = bdec ? f32(bdec) : null;
    const acc = new Float64Array(d);
    for (let b = 0; b < B; b++) {
      if (bd) { for (let i = 0; i < d; i++) acc[i] = bd[i]; }
      else acc.fill(0);
      let e = rp[b];
      for (let g = 0; g < G; g++) {
        for (; e < rp[b + 1] && idx[e] < groups[g]; e++) {
          const a = val[e], r = idx[e] * d;
          for (let i = 0; i < d; i++) acc[i] += a * W[r + i];
        }
        const ob = (g * B + b) * d;
        for (let i = 0; i < d; i++) o[ob + i] = acc[i];
      }
    }
  }

  // ---- losses ---------------------------------------------------------------------------------
  reconLossGrad(
    xhat: Tensor,
    x: Tensor,
    weights: number[],
    gradS: Tensor,
    stats: Tensor,
    slot: number,
  ): void {
    const xh = f32(xhat), X = f32(x), gS = f32(gradS);
    const G = weights.length, n = X.length, B = xhat.shape[1];
    let loss = 0;
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let g = G - 1; g >= 0; g--) {
        const r = xh[g * n + i] - X[i];
        loss += weights[g] * r * r;
        acc += weights[g] * (2 / B) * r;
        gS[g * n + i] = acc;
      }
    }
    f32(stats)[slot] = loss / B;
  }

  auxLossGrad(
    x: Tensor,
    xhat: Tensor,
    auxRecon: Tensor,
    alpha: number,
    gradS: Tensor,
    stats: Tensor,
    slot: number,
  ): void {
    const X = f32(x), xh = f32(xhat), ea = f32(auxRecon), gS = f32(gradS);
    const [B, d] = x.shape;
    const last = (xhat.shape[0] - 1) * B * d;
    const mean = new Float64Array(d);
    let num = 0;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < d; i++) {
        const e = X[b * d + i] - xh[last + b * d + i];
        mean[i] += e / B;
        const r = e - ea[b * d + i];
        num += r * r;
      }
    }
    let den = 0;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < d; i++) {
        const c = X[b * d + i] - xh[last + b * d + i] - mean[i];
        den += c * c;
      }
    }
    num /= B;
    den /= B;
    const loss = alpha * num / den;
    const ok = Number.isFinite(loss);
    f32(stats)[slot] = ok ? loss : 0;
    const s = ok ? alpha * (-2 / B) / den : 0;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < d; i++) {
        const e = X[b * d + i] - xh[last + b * d + i];
        gS[b * d + i] = s * (e - ea[b * d + i]);
      }
    }
  }

  l1Grad(codes: Codes, gradVal: Tensor, lambda: number, stats: Tensor, slot: number): void {
    const total = u32(codes.rowPtr)[codes.rows], val = f32(codes.val), g = f32(gradVal);
    let s = 0;
    for (let e = 0; e < total; e++) {
      s += val[e];
      g[e] += lambda;
    }
    f32(stats)[slot] = lambda * s;
  }

  // ---- backward -------------------------------------------------------------------------------
  decodeBackward(
    codes: Codes,
    gradS: Tensor,
    Wdec: Tensor,
    groups: number[],
    gradVal: Tensor,
    accumulate: boolean,
  ): void {
    const rp = u32(codes.rowPtr), idx = u32(codes.idx), gS = f32(gradS), W = f32(Wdec), gv = f32(gradVal);
    const B = codes.rows, d = W.length / codes.cols;
    if (!accumulate) gv.fill(0);
    for (let b = 0; b < B; b++) {
      let g = 0;
      for (let e = rp[b]; e < rp[b + 1]; e++) {
        const j = idx[e];
        while (j >= groups[g]) g++;
        const o = (g * B + b) * d, r = j * d;
        let s = 0;
        for (let i = 0; i < d; i++) s += gS[o + i] * W[r + i];
        gv[e] += s;
      }
    }
  }

  latentGrads(
    codes: Codes,
    codesT: CodesT,
    gradVal: Tensor,
    x: Tensor,
    bdec: Tensor,
    gradS: Tensor,
    groups: number[],
    gradWenc: Tensor,
    gradBenc: Tensor,
    gradWdec: Tensor | null,
  ): void {
    const cp = u32(codesT.colPtr), row = u32(codesT.row), entry = u32(codesT.entry);
    const gv = f32(gradVal), val = f32(codes.val), X = f32(x), bd = f32(bdec), gS = f32(gradS);
    const gWe = f32(gradWenc), gbe = f32(gradBenc), gWd = gradWdec ? f32(gradWdec) : null;
    const B = codes.rows, d = bd.length;
    let g = 0;
    const aE = new Float64Array(d), aD = new Float64Array(d);
    for (let j = 0; j < codesT.cols; j++) {
      while (j >= groups[g]) g++;
      const s = cp[j], t = cp[j + 1];
      if (s === t) continue;
      aE.fill(0);
      aD.fill(0);
      let sb = 0;
      for (let p = s; p < t; p++) {
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
  }

  /**
   * gradBdec (+)= [Σ_b gradS[0, b]] − Σ_j (Σ_{e ∈ col j} gradVal[e]) · Wenc[j]: the per-latent sums
   * first, so the cost is O(nnz + m·d) instead of O(nnz·d).
   */
  bdecGrad(
    codes: Codes,
    gradVal: Tensor,
    Wenc: Tensor,
    gradS: Tensor,
    withDecodePath: boolean,
    gradBdec: Tensor,
    accumulate: boolean,
  ): void {
    const idx = u32(codes.idx), gv = f32(gradVal), W = f32(Wenc), gS = f32(gradS), gb = f32(gradBdec);
    const d = gb.length, B = codes.rows, total = u32(codes.rowPtr)[B];
    const acc = new Float64Array(d);
    if (withDecodePath) {
      for (let b = 0; b < B; b++) for (let i = 0; i < d; i++) acc[i] += gS[b * d + i];
    }
    const sums = new Float64Array(codes.cols);
    const used = new Uint8Array(codes.cols);
    for (let e = 0; e < total; e++) {
      sums[idx[e]] += gv[e];
      used[idx[e]] = 1;
    }
    for (let j = 0; j < codes.cols; j++) {
      if (!used[j]) continue;
      const s = sums[j], r = j * d;
      for (let i = 0; i < d; i++) acc[i] -= s * W[r + i];
    }
    for (let i = 0; i < d; i++) gb[i] = (accumulate ? gb[i] : 0) + acc[i];
  }

  // ---- optimiser ------------------------------------------------------------------------------
  sumSquares(ts: Tensor[], stats: Tensor, slot: number): void {
    let s = 0;
    for (const t of ts) {
      const a = f32(t);
      for (let i = 0; i < a.length; i++) s += a[i] * a[i];
    }
    f32(stats)[slot] = s;
  }

  projectDecoderGrad(Wdec: Tensor, gradWdec: Tensor): void {
    const W = f32(Wdec), G = f32(gradWdec);
    const d = Wdec.shape[1], w = Wdec.shape[0];
    for (let j = 0; j < w; j++) {
      const r = j * d;
      let nn = 0, dp = 0;
      for (let i = 0; i < d; i++) {
        nn += W[r + i] * W[r + i];
        dp += W[r + i] * G[r + i];
      }
      if (nn === 0) continue;
      const c = dp / nn; // (g · w/|w|) (w/|w|)
      for (let i = 0; i < d; i++) G[r + i] -= c * W[r + i];
    }
  }

  adam(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hp: AdamParams, clip: ClipParams | null): void {
    const p = f32(param), g = f32(grad), M = f32(m), V = f32(v);
    let scale = 1;
    if (clip) {
      const norm = Math.sqrt(f32(clip.normSq)[clip.slot]);
      scale = Math.min(1, clip.maxNorm / (norm + 1e-6));
    }
    const bc1 = 1 - Math.pow(hp.beta1, hp.step), bc2 = 1 - Math.pow(hp.beta2, hp.step);
    const stepSize = hp.lr / bc1, sq2 = Math.sqrt(bc2);
    for (let i = 0; i < p.length; i++) {
      const gi = g[i] * scale;
      M[i] = hp.beta1 * M[i] + (1 - hp.beta1) * gi;
      V[i] = hp.beta2 * V[i] + (1 - hp.beta2) * gi * gi;
      p[i] -= stepSize * M[i] / (Math.sqrt(V[i]) / sq2 + hp.eps);
    }
  }

  renormRows(W: Tensor): void {
    const a = f32(W), d = W.shape[1], w = W.shape[0];
    for (let j = 0; j < w; j++) {
      let nn = 0;
      for (let i = 0; i < d; i++) nn += a[j * d + i] * a[j * d + i];
      if (nn === 0) continue;
      const s = 1 / Math.sqrt(nn);
      for (let i = 0; i < d; i++) a[j * d + i] *= s;
    }
  }

  // ---- primitives -----------------------------------------------------------------------------
  map(e: Expr, args: Record<string, EwArg>, space: EwSpace, out: Tensor, accumulate = false): void {
    const b = bindEw(e, args, space, out);
    const { T, S } = hostArgs(b, (a) => a.kind === "tensor" ? f32(a.t) : undefined);
    runEw(e, b, entriesOf(space), undefined, accumulate, T, S, f32(out), 0);
  }

  reduce(
    e: Expr,
    args: Record<string, EwArg>,
    space: EwSpace,
    to: ReduceTo,
    out: Tensor,
    opts: { accumulate?: boolean; slot?: number } = {},
  ): void {
    const slot = opts.slot ?? 0;
    const b = bindEw(e, args, space, out, to, slot);
    const { T, S } = hostArgs(b, (a) => a.kind === "tensor" ? f32(a.t) : undefined);
    runEw(e, b, entriesOf(space), to, !!opts.accumulate, T, S, f32(out), slot);
  }

  matmul(a: Tensor, b: Tensor, c: Tensor, opts: MatmulOptions = {}): void {
    const { M, N, K } = matmulDims(a, b, c, opts);
    const alpha = opts.alpha ?? 1;
    // Pack op(a) as [M, K] and op(b)ᵀ as [N, K] rows, then row-by-row dot products.
    const A = opts.ta ? transposed(f32(a), K, M) : f32(a);
    const Bt = opts.tb ? f32(b) : transposed(f32(b), K, N);
    gemmNT(A, Bt, M, N, K, f32(c), alpha, !!opts.accumulate);
  }

  spmm(codes: Codes, vals: Tensor, W: Tensor, out: Tensor, accumulate: boolean): void {
    const rp = u32(codes.rowPtr), idx = u32(codes.idx), v = f32(vals), Wm = f32(W), o = f32(out);
    const d = sparseD(codes, W, "spmm");
    checkSize(out, codes.rows * d, "spmm out");
    checkSize(vals, codes.cap, "spmm vals", true);
    const acc = new Float64Array(d);
    for (let b = 0; b < codes.rows; b++) {
      const ob = b * d;
      for (let i = 0; i < d; i++) acc[i] = accumulate ? o[ob + i] : 0;
      const e1 = Math.min(rp[b + 1], codes.cap);
      for (let e = Math.min(rp[b], codes.cap); e < e1; e++) {
        const a = v[e], r = idx[e] * d;
        for (let i = 0; i < d; i++) acc[i] += a * Wm[r + i];
      }
      for (let i = 0; i < d; i++) o[ob + i] = acc[i];
    }
  }

  sddmm(codes: Codes, A: Tensor, W: Tensor, out: Tensor, accumulate: boolean): void {
    const rp = u32(codes.rowPtr), idx = u32(codes.idx), X = f32(A), Wm = f32(W), o = f32(out);
    const d = sparseD(codes, W, "sddmm");
    checkSize(A, codes.rows * d, "sddmm A");
    checkSize(out, codes.cap, "sddmm out", true);
    const total = Math.min(rp[codes.rows], codes.cap);
    for (let b = 0; b < codes.rows; b++) {
      const xo = b * d, e1 = Math.min(rp[b + 1], codes.cap);
      for (let e = Math.min(rp[b], codes.cap); e < e1; e++) {
        const r = idx[e] * d;
        let s = 0;
        for (let i = 0; i < d; i++) s += X[xo + i] * Wm[r + i];
        o[e] = accumulate ? o[e] + s : s;
      }
    }
    if (!accumulate) o.fill(0, total);
  }

  spmmT(codes: Codes, codesT: CodesT, vals: Tensor, A: Tensor, out: Tensor, accumulate: boolean): void {
    const cp = u32(codesT.colPtr), row = u32(codesT.row), entry = u32(codesT.entry);
    const v = f32(vals), X = f32(A), o = f32(out);
    const w = codes.cols, d = codes.rows > 0 ? X.length / codes.rows : 0;
    if (!Number.isInteger(d) || codesT.cols !== w) throw new MonobenchError("spmmT: shape mismatch");
    checkSize(out, w * d, "spmmT out");
    checkSize(vals, codes.cap, "spmmT vals", true);
    const acc = new Float64Array(d);
    for (let j = 0; j < w; j++) {
      const s = cp[j], t = cp[j + 1], oj = j * d;
      if (s === t) {
        if (!accumulate) o.fill(0, oj, oj + d);
        continue;
      }
      for (let i = 0; i < d; i++) acc[i] = accumulate ? o[oj + i] : 0;
      for (let p = s; p < t; p++) {
        const a = v[entry[p]], xo = row[p] * d;
        for (let i = 0; i < d; i++) acc[i] += a * X[xo + i];
      }
      for (let i = 0; i < d; i++) o[oj + i] = acc[i];
    }
  }

  gatherEntries(codes: Codes, dense: Tensor, out: Tensor): void {
    const rp = u32(codes.rowPtr), idx = u32(codes.idx), D = f32(dense), o = f32(out);
    checkSize(dense, codes.rows * codes.cols, "gatherEntries dense");
    checkSize(out, codes.cap, "gatherEntries out", true);
    const w = codes.cols, total = Math.min(rp[codes.rows], codes.cap);
    for (let b = 0; b < codes.rows; b++) {
      const e1 = Math.min(rp[b + 1], codes.cap);
      for (let e = Math.min(rp[b], codes.cap); e < e1; e++) o[e] = D[b * w + idx[e]];
    }
    o.fill(0, total);
  }

  scatterEntries(codes: Codes, vals: Tensor, dense: Tensor, accumulate: boolean): void {
    const rp = u32(codes.rowPtr), idx = u32(codes.idx), v = f32(vals), D = f32(dense);
    checkSize(dense, codes.rows * codes.cols, "scatterEntries dense");
    checkSize(vals, codes.cap, "scatterEntries vals", true);
    if (!accumulate) D.fill(0);
    const w = codes.cols;
    for (let b = 0; b < codes.rows; b++) {
      const e1 = Math.min(rp[b + 1], codes.cap);
      for (let e = Math.min(rp[b], codes.cap); e < e1; e++) D[b * w + idx[e]] += v[e];
    }
  }

  // ---- training state -------------------------------------------------------------------------
  thresholdEma(codes: Codes, thr: Tensor, slot: number, beta: number): void {
    const total = u32(codes.rowPtr)[codes.rows], val = f32(codes.val), t = f32(thr);
    let m = Infinity;
    for (let e = 0; e < total; e++) if (val[e] > 0 && val[e] < m) m = val[e];
    if (m === Infinity) m = 0;
    t[slot] = t[slot] < 0 ? m : beta * t[slot] + (1 - beta) * m;
  }

  updateDead(
    codesT: CodesT,
    counter: Tensor,
    deadAfter: number,
    mask: Tensor,
    stats: Tensor,
    slot: number,
  ): void {
    const cp = u32(codesT.colPtr), c = f32(counter), mk = u32(mask);
    let dead = 0;
    for (let j = 0; j < codesT.cols; j++) {
      c[j] = cp[j + 1] > cp[j] ? 0 : c[j] + codesT.rows;
      mk[j] = c[j] >= deadAfter ? 1 : 0;
      dead += mk[j];
    }
    f32(stats)[slot] = dead;
  }
}

function relu(v: number): number {
  return v > 0 ? v : 0;
}

function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[ao + i] * b[bo + i];
  return s;
}

function entriesOf(space: EwSpace): { rp: Uint32Array; idx: Uint32Array; cap: number } | null {
  if (space.kind === "dense") return null;
  const c = space.codes;
  return { rp: u32(c.rowPtr), idx: u32(c.idx), cap: c.cap };
}

function checkSize(t: Tensor, n: number, what: string, atLeast = false): void {
  if (atLeast ? t.size < n : t.size !== n) {
    throw new MonobenchError(`${what}: ${t.size} elements, expected ${atLeast ? "at least " : ""}${n}`);
  }
}

/** Row length d of W [cols, d] for a sparse op on `codes`. */
function sparseD(codes: Codes, W: Tensor, what: string): number {
  const d = codes.cols > 0 ? W.size / codes.cols : 0;
  if (!Number.isInteger(d)) {
    throw new MonobenchError(`${what}: W has ${W.size} elements, not a multiple of ${codes.cols}`);
  }
  return d;
}

/** M, N, K of `matmul` from the operand shapes (2-D, consistent). Shared by every backend. */
export function matmulDims(
  a: Tensor,
  b: Tensor,
  c: Tensor,
  opts: MatmulOptions,
): { M: number; N: number; K: number } {
  if (a.shape.length !== 2 || b.shape.length !== 2 || c.shape.length !== 2) {
    throw new MonobenchError("matmul: operands must be 2-D");
  }
  const [a0, a1] = a.shape, [b0, b1] = b.shape;
  const M = opts.ta ? a1 : a0, K = opts.ta ? a0 : a1;
  const Kb = opts.tb ? b1 : b0, N = opts.tb ? b0 : b1;
  if (K !== Kb || c.shape[0] !== M || c.shape[1] !== N) {
    throw new MonobenchError(
      `matmul: shapes [${a.shape}]${opts.ta ? "ᵀ" : ""} · [${b.shape}]${
        opts.tb ? "ᵀ" : ""
      } → [${c.shape}] do not match`,
    );
  }
  return { M, N, K };
}

function transposed(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/** C (+)= alpha · A · Btᵀ with A [M, K], Bt [N, K]: 4 × 4 register blocks, double accumulators. */
function gemmNT(
  A: Float32Array,
  Bt: Float32Array,
  M: number,
  N: number,
  K: number,
  C: Float32Array,
  alpha: number,
  accumulate: boolean,
): void {
  const put = (m: number, n: number, s: number) => {
    const o = m * N + n;
    C[o] = accumulate ? C[o] + alpha * s : alpha * s;
  };
  let m = 0;
  for (; m + 4 <= M; m += 4) {
    const a0 = m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    let n = 0;
    for (; n + 4 <= N; n += 4) {
      const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = A[a0 + k], x1 = A[a1 + k], x2 = A[a2 + k], x3 = A[a3 + k];
        const y0 = Bt[b0 + k], y1 = Bt[b1 + k], y2 = Bt[b2 + k], y3 = Bt[b3 + k];
        s00 += x0 * y0, s01 += x0 * y1, s02 += x0 * y2, s03 += x0 * y3;
        s10 += x1 * y0, s11 += x1 * y1, s12 += x1 * y2, s13 += x1 * y3;
        s20 += x2 * y0, s21 += x2 * y1, s22 += x2 * y2, s23 += x2 * y3;
        s30 += x3 * y0, s31 += x3 * y1, s32 += x3 * y2, s33 += x3 * y3;
      }
      put(m, n, s00), put(m, n + 1, s01), put(m, n + 2, s02), put(m, n + 3, s03);
      put(m + 1, n, s10), put(m + 1, n + 1, s11), put(m + 1, n + 2, s12), put(m + 1, n + 3, s13);
      put(m + 2, n, s20), put(m + 2, n + 1, s21), put(m + 2, n + 2, s22), put(m + 2, n + 3, s23);
      put(m + 3, n, s30), put(m + 3, n + 1, s31), put(m + 3, n + 2, s32), put(m + 3, n + 3, s33);
    }
    for (; n < N; n++) {
      for (let r = 0; r < 4; r++) put(m + r, n, dot(A, (m + r) * K, Bt, n * K, K));
    }
  }
  for (; m < M; m++) for (let n = 0; n < N; n++) put(m, n, dot(A, m * K, Bt, n * K, K));
}
