/**
 * `cpu-mt`: the multi-threaded CPU backend, the fastest path on a machine without a GPU.
 *
 * - The dense encoder GEMM (and the AuxK path's dense-enough sparse blocks, see `blas.ts`) runs on
 *   the best GEMM available: OpenBLAS through FFI when it loads (MONOBENCH_BLAS or the system
 *   library), else onnxruntime's MLAS from the `onnxruntime-node` package the project already
 *   installs (`mlas.ts`), else multi-threaded TypeScript.
 * - The rest of the step (selection histograms, gather, sparse decode and its gradients, loss,
 *   Adam, projection, renormalisation) runs on `threads` threads: Web Workers plus the caller
 *   (`pool.ts`), on tensors kept in SharedArrayBuffers. Each slice computes what the reference
 *   does for its rows or latents in the same order (`mt_kernels.ts`).
 * - Ops too small to pay for a fork-join, and every op not overridden here (including ops added
 *   to {@link CpuBackend} later), run on the calling thread exactly as the reference.
 */
import { CpuTensor, f32, u32 } from "./cpu.ts";
import { BlasBackend, type GemmProvider, openBlasGemm } from "./blas.ts";
import { MlasGemm, mlasProvider } from "./mlas.ts";
import { defaultThreads, ThreadPool } from "./pool.ts";
import { resolveLow, TOP_BINS, TOP_SHIFT } from "./mt_kernels.ts";
import type { AdamParams, ClipParams, Codes, CodesT, DType, Tensor, Threshold } from "./types.ts";
import { MonobenchError } from "../util/errors.ts";

/** Which GEMM library to use: the best available ("auto"), the best without OpenBLAS, or a named one. */
export type GemmChoice = "auto" | "mlas-or-ts" | "openblas" | "mlas" | "ts";

export interface CpuMtOptions {
  /** Threads, the caller's included (default MONOBENCH_THREADS, else the logical CPU count). */
  threads?: number;
  /** GEMM library (default "auto": OpenBLAS, else MLAS, else TypeScript). */
  gemm?: GemmChoice;
  /** Elements of work below which an op stays on the calling thread (default 32768; tests lower it). */
  grain?: number;
}

const DEFAULT_GRAIN = 32_768;

function tsProvider(): GemmProvider {
  return {
    kind: "ts",
    description: "TypeScript",
    sgemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc) {
      for (let i = 0; i < M; i++) {
        for (let j = 0; j < N; j++) {
          let s = 0;
          for (let k = 0; k < K; k++) {
            s += (transA ? A[k * lda + i] : A[i * lda + k]) * (transB ? B[j * ldb + k] : B[k * ldb + j]);
          }
          C[i * ldc + j] = beta === 0 ? s : beta * C[i * ldc + j] + s;
        }
      }
    },
  };
}

/** The GEMM provider for a choice; throws MonobenchError when a named one is unavailable. */
export function gemmProvider(choice: GemmChoice, threads: number): GemmProvider {
  if (choice === "openblas" || choice === "auto") {
    const p = openBlasGemm(threads);
    if (p) return p;
    if (choice === "openblas") {
      throw new MonobenchError(
        "OpenBLAS (libopenblas.so.0) could not be loaded",
        "install libopenblas0-pthread (Debian) or set MONOBENCH_BLAS to the library path; run with -A",
      );
    }
  }
  if (choice === "mlas" || choice === "auto" || choice === "mlas-or-ts") {
    const m = MlasGemm.tryCreate(threads);
    if (m) return mlasProvider(m);
    if (choice === "mlas") {
      throw new MonobenchError(
        "onnxruntime's library (from onnxruntime-node) could not be loaded",
        "run with -A (FFI permission) after the project's npm packages are installed",
      );
    }
  }
  return tsProvider();
}

export class CpuMtBackend extends BlasBackend {
  override readonly name: string = "cpu-mt";
  override readonly description: string;

  private constructor(
    provider: GemmProvider,
    private readonly pool: ThreadPool,
    private readonly grain: number,
  ) {
    super(provider);
    this.description = `CPU, ${pool.threads} threads, GEMM: ${provider.description}`;
  }

  /** The GEMM library in use: "openblas", "mlas" or "ts". */
  get gemmKind(): string {
    return this.provider.kind;
  }

  get threads(): number {
    return this.pool.threads;
  }

  static async create(opts: CpuMtOptions = {}): Promise<CpuMtBackend> {
    const threads = opts.threads ?? defaultThreads();
    if (!(Number.isInteger(threads) && threads >= 1)) {
      throw new MonobenchError(`threads must be a positive integer (got ${threads})`);
    }
    const provider = gemmProvider(opts.gemm ?? "auto", threads);
    let pool;
    try {
      pool = await ThreadPool.create(threads);
    } catch (e) {
      throw new MonobenchError(
        `the cpu-mt backend could not start its worker threads: ${e instanceof Error ? e.message : e}`,
        "run with -A, or use --backend cpu",
      );
    }
    return new CpuMtBackend(provider, pool, Math.max(1, opts.grain ?? DEFAULT_GRAIN));
  }

  override destroy(): void {
    this.pool.close();
  }

  // ---- memory: shared, so that the workers see it ---------------------------------------------
  private alloc(shape: readonly number[], dtype: DType): CpuTensor {
    let n = 1;
    for (const s of shape) {
      if (!Number.isInteger(s) || s < 0) throw new MonobenchError(`bad tensor shape [${shape.join(", ")}]`);
      n *= s;
    }
    const sab = new SharedArrayBuffer(Math.max(n, 1) * 4);
    const data = dtype === "u32" ? new Uint32Array(sab, 0, n) : new Float32Array(sab, 0, n);
    return new CpuTensor([...shape], dtype, data);
  }

  override tensor(data: Float32Array | Uint32Array, shape: number[]): Tensor {
    const t = this.alloc(shape, data instanceof Uint32Array ? "u32" : "f32");
    if (data.length !== t.size) {
      throw new MonobenchError(`tensor data has ${data.length} elements, shape [${shape}] needs ${t.size}`);
    }
    t.data.set(data);
    return t;
  }

  override zeros(shape: number[], dtype: DType = "f32"): Tensor {
    return this.alloc(shape, dtype);
  }

  protected override centredScratch(n: number): Float32Array {
    if (!this.xc || this.xc.length < n) {
      this.xc = new Float32Array(new SharedArrayBuffer(Math.max(n, 1) * 4));
    }
    return this.xc.subarray(0, n);
  }
  private xc: Float32Array | null = null;

  /** Whether every array is shared (tensors from another backend are not): else run on one thread. */
  private shared(...ts: (Tensor | null | undefined)[]): boolean {
    for (const t of ts) {
      if (t && !((t as CpuTensor).data?.buffer instanceof SharedArrayBuffer)) return false;
    }
    return true;
  }

  // ---- encoder pieces ----------------------------------------------------------------------------
  protected override center(X: Float32Array, bd: Float32Array, xc: Float32Array): void {
    const d = bd.length;
    this.pool.run("center", { X, bd, xc }, X.length / d, Math.ceil(this.grain / Math.max(d, 1)));
  }

  protected override broadcastRows(P: Float32Array, be: Float32Array): void {
    const w = be.length;
    this.pool.run("bcastRows", { P, be }, P.length / w, Math.ceil(this.grain / Math.max(w, 1)));
  }

  protected override reluInPlace(P: Float32Array): void {
    this.pool.run("relu", { P }, P.length, this.grain);
  }

  override encode(x: Tensor, Wenc: Tensor, benc: Tensor, bdec: Tensor, pre: Tensor): void {
    if (this.provider.kind !== "ts" || !this.shared(x, Wenc, benc, bdec, pre)) {
      return super.encode(x, Wenc, benc, bdec, pre);
    }
    const X = f32(x), W = f32(Wenc), be = f32(benc), bd = f32(bdec), P = f32(pre);
    const d = bd.length, w = be.length, B = X.length / d;
    if (W.length !== w * d || P.length !== B * w || !Number.isInteger(B)) {
      throw new Error("encode: shape mismatch");
    }
    if (B === 0) return;
    const xc = this.centredScratch(X.length);
    this.center(X, bd, xc);
    this.pool.run(
      "encodeRows",
      { xc, W, be, P, d },
      B,
      Math.max(2, Math.ceil(this.grain / Math.max(w * d, 1))),
    );
  }

  // ---- selection -------------------------------------------------------------------------------
  private hist: Uint32Array | null = null;
  private cand: Uint32Array | null = null;

  override kthLargest(values: Tensor, k: number, out: Tensor, slot: number): void {
    const v = f32(values), n = v.length;
    if (n < 4 * this.grain || !this.shared(values)) return super.kthLargest(values, k, out, slot);
    if (k < 1 || k > n) {
      f32(out)[slot] = -Infinity;
      return;
    }
    const bits = new Uint32Array(v.buffer, v.byteOffset, n);
    const r = this.bracketKth(bits, k);
    f32(out)[slot] = r ?? this.radixKth(bits, k);
  }

  /**
   * k-th largest key from one pass: a strided sample brackets the k-th key between two sample
   * keys; the pass counts keys above the bracket and collects those inside it, and the exact key
   * is resolved among those. Null when the sample missed (the caller falls back to radix).
   */
  private bracketKth(bits: Uint32Array, k: number): number | null {
    const n = bits.length, S = Math.min(n, 1 << 15);
    const sample = new Uint32Array(S);
    for (let j = 0; j < S; j++) {
      const b = bits[Math.floor((j * n) / S)];
      sample[j] = (b & 0x80000000) ? (~b) >>> 0 : (b | 0x80000000) >>> 0;
    }
    sample.sort();
    // Rank from the top of k in the sample, with a margin of ~6 standard deviations.
    const q = (k / n) * S, margin = 6 * Math.sqrt(q + 1) + 32;
    const hiRank = Math.floor(q - margin), loRank = Math.ceil(q + margin);
    const hiKey = hiRank < 1 ? 0xffffffff : sample[S - hiRank];
    const loKey = loRank >= S ? 0 : sample[S - 1 - loRank];
    const bounds = this.pool.chunks(n, this.grain), T = bounds.length - 1;
    const expect = ((loRank - Math.max(hiRank, 0) + 2) / S) * n;
    const room = Math.ceil((4 * expect) / T + 1024);
    if (room * T > 8 * n + 65536) return null;
    if (!this.cand || this.cand.length < room * T) {
      this.cand = new Uint32Array(new SharedArrayBuffer(room * T * 4));
    }
    const cnt = this.counts(T);
    const cand = this.cand;
    const above = this.pool.run("bracket", { bits, cand, cnt, loKey, hiKey, room }, n, 1, bounds);
    let m = 0;
    for (let t = 0; t < T; t++) {
      if (cnt[t] > room) return null;
      if (t > 0) cand.copyWithin(m, t * room, t * room + cnt[t]);
      m += cnt[t];
    }
    const need = k - above;
    if (need < 1 || need > m) return null;
    return keyToFloatOf(selectKey(cand.subarray(0, m), need));
  }

  /** Radix select (two passes over the data on every thread), as the reference. */
  private radixKth(bits: Uint32Array, k: number): number {
    const n = bits.length;
    const bounds = this.pool.chunks(n, this.grain), T = bounds.length - 1;
    if (!this.hist || this.hist.length < T * TOP_BINS) {
      this.hist = new Uint32Array(new SharedArrayBuffer(T * TOP_BINS * 4));
    }
    const hist = this.hist;
    hist.fill(0);
    // One histogram row per chunk.
    this.runSlices("hist", (s) => ({ bits, hist, slot: s }), bounds);
    const total = new Float64Array(TOP_BINS);
    for (let t = 0; t < T; t++) for (let i = 0; i < TOP_BINS; i++) total[i] += hist[t * TOP_BINS + i];
    let remaining = k, b = TOP_BINS - 1;
    for (; b > 0; b--) {
      if (total[b] >= remaining) break;
      remaining -= total[b];
    }
    const m = total[b];
    if (!this.cand || this.cand.length < m) {
      this.cand = new Uint32Array(new SharedArrayBuffer(Math.max(m, 1024) * 4));
    }
    const cand = this.cand;
    const at: number[] = [0];
    for (let t = 0; t < T; t++) at.push(at[t] + hist[t * TOP_BINS + b]);
    this.runSlices("collect", (s) => ({ bits, cand, bucket: b, at: at[s] }), bounds);
    return keyToFloatOf(resolveLow(cand, m, remaining, (b << TOP_SHIFT) >>> 0));
  }

  /** Run `kernel` on the given chunks, chunk s with its own arguments. */
  private runSlices(kernel: string, args: (s: number) => Record<string, unknown>, bounds: number[]): void {
    this.pool.run("perSlice", { kernel, per: bounds.slice(0, -1).map((_, s) => args(s)) }, 0, 1, bounds);
  }

  override kthLargestRows(values: Tensor, k: number, mask: Tensor | null, out: Tensor): void {
    const v = f32(values), o = f32(out), B = o.length, w = B ? v.length / B : 0;
    if (v.length < 2 * this.grain || !this.shared(values, mask, out)) {
      return super.kthLargestRows(values, k, mask, out);
    }
    const bits = new Uint32Array(v.buffer, v.byteOffset, v.length);
    this.pool.run(
      "kthRows",
      { bits, out: o, w, k, mask: mask ? u32(mask) : null },
      B,
      Math.ceil(this.grain / w),
    );
  }

  override gather(values: Tensor, thr: Threshold, mask: Tensor | null, strict: boolean, out: Codes): void {
    const v = f32(values), B = out.rows, w = out.cols;
    if (v.length !== B * w) throw new Error("gather: shape mismatch");
    if (v.length < 2 * this.grain || !this.shared(values, thr.t, mask, out.rowPtr, out.idx, out.val)) {
      return super.gather(values, thr, mask, strict, out);
    }
    const cnt = this.counts(B + 1);
    const a = {
      v,
      t: f32(thr.t),
      slot: thr.kind === "scalar" ? thr.slot : 0,
      scalar: thr.kind === "scalar",
      strict,
      w,
      mask: mask ? u32(mask) : null,
      cnt,
      rp: u32(out.rowPtr),
      idx: u32(out.idx),
      val: f32(out.val),
    };
    const grain = Math.ceil(this.grain / Math.max(w, 1));
    const rp = a.rp;
    const bounds = this.pool.chunks(B, grain), T = bounds.length - 1;
    let most = 0;
    for (let c = 0; c < T; c++) most = Math.max(most, bounds[c + 1] - bounds[c]);
    const room = Math.min(out.cap, most * w);
    if (room * T * 8 <= 2 ** 26) {
      // One pass: each slice gathers into its own region, then the regions are laid out as CSR.
      if (!this.local || this.local.idx.length < room * T) {
        this.local = { idx: new Uint32Array(new SharedArrayBuffer(room * T * 4)), val: sharedVals(room * T) };
      }
      const nSlices = T;
      this.pool.run("gatherLocal", { ...a, lidx: this.local.idx, lval: this.local.val, room }, B, 1, bounds);
      let e = 0;
      rp[0] = 0;
      const idx = a.idx, val = a.val;
      for (let s2 = 0; s2 < nSlices; s2++) {
        let src = s2 * room;
        for (let b = bounds[s2]; b < bounds[s2 + 1]; b++) {
          const take = Math.min(cnt[b], out.cap - e);
          idx.set(this.local.idx.subarray(src, src + take), e);
          val.set(this.local.val.subarray(src, src + take), e);
          src += cnt[b];
          e += take;
          rp[b + 1] = e;
        }
      }
      return;
    }
    this.pool.run("gatherCount", a, B, grain);
    let e = 0;
    rp[0] = 0;
    for (let b = 0; b < B; b++) {
      e = Math.min(out.cap, e + cnt[b]);
      rp[b + 1] = e;
    }
    this.pool.run("gatherWrite", a, B, grain);
  }

  private local: { idx: Uint32Array; val: Float32Array } | null = null;

  private cnt: Uint32Array | null = null;
  private counts(n: number): Uint32Array {
    if (!this.cnt || this.cnt.length < n) this.cnt = new Uint32Array(new SharedArrayBuffer(n * 4));
    return this.cnt;
  }

  // ---- sparse decoder ----------------------------------------------------------------------------
  override decode(codes: Codes, Wdec: Tensor, bdec: Tensor | null, groups: number[], out: Tensor): void {
    if (this.active(codes, groups)) return super.decode(codes, Wdec, bdec, groups, out);
    const rp = u32(codes.rowPtr), B = codes.rows, W = f32(Wdec), d = W.length / codes.cols;
    if (rp[B] * d < this.grain || !this.shared(codes.val, Wdec, bdec, out)) {
      return super.decode(codes, Wdec, bdec, groups, out);
    }
    const o = f32(out);
    if (o.length !== groups.length * B * d) throw new Error("decode: out shape mismatch");
    const a = {
      rp,
      idx: u32(codes.idx),
      val: f32(codes.val),
      W,
      o,
      bd: bdec ? f32(bdec) : null,
      groups,
      B,
      d,
    };
    this.pool.run("decode", a, B, 1, this.rowBounds(rp, B));
  }

  /** Row slices with balanced entry counts. */
  private rowBounds(rp: Uint32Array, B: number): number[] {
    return this.pool.balanced(rp, B);
  }

  override reconLossGrad(
    xhat: Tensor,
    x: Tensor,
    weights: number[],
    gradS: Tensor,
    stats: Tensor,
    slot: number,
  ): void {
    const X = f32(x), n = X.length;
    if (n * weights.length < this.grain || !this.shared(xhat, x, gradS)) {
      return super.reconLossGrad(xhat, x, weights, gradS, stats, slot);
    }
    const B = xhat.shape[1];
    const loss = this.pool.run("recon", { xh: f32(xhat), X, gS: f32(gradS), weights, B }, n, this.grain);
    f32(stats)[slot] = loss / B;
  }

  override decodeBackward(
    codes: Codes,
    gradS: Tensor,
    Wdec: Tensor,
    groups: number[],
    gradVal: Tensor,
    accumulate: boolean,
  ): void {
    if (this.active(codes, groups)) {
      return super.decodeBackward(codes, gradS, Wdec, groups, gradVal, accumulate);
    }
    const rp = u32(codes.rowPtr), B = codes.rows, W = f32(Wdec), d = W.length / codes.cols;
    if (rp[B] * d < this.grain || !this.shared(gradS, Wdec, gradVal)) {
      return super.decodeBackward(codes, gradS, Wdec, groups, gradVal, accumulate);
    }
    const gv = f32(gradVal);
    if (!accumulate) gv.fill(0, rp[B]);
    const a = { rp, idx: u32(codes.idx), gS: f32(gradS), W, gv, groups, B, d, accumulate };
    this.pool.run("decodeBackward", a, B, 1, this.rowBounds(rp, B));
  }

  override latentGrads(
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
    const sup = () =>
      super.latentGrads(codes, codesT, gradVal, x, bdec, gradS, groups, gradWenc, gradBenc, gradWdec);
    if (this.active(codes, groups)) return sup();
    const cp = u32(codesT.colPtr), w = codesT.cols, d = f32(bdec).length;
    if (cp[w] * d < this.grain || !this.shared(codesT.row, gradVal, x, gradS, gradWenc, gradBenc, gradWdec)) {
      return sup();
    }
    const a = {
      cp,
      row: u32(codesT.row),
      entry: u32(codesT.entry),
      gv: f32(gradVal),
      val: f32(codes.val),
      X: f32(x),
      bd: f32(bdec),
      gS: f32(gradS),
      gWe: f32(gradWenc),
      gbe: f32(gradBenc),
      gWd: gradWdec ? f32(gradWdec) : null,
      groups,
      B: codes.rows,
    };
    this.pool.run("latentGrads", a, w, 1, this.pool.balanced(cp, w));
  }

  override bdecGrad(
    codes: Codes,
    gradVal: Tensor,
    Wenc: Tensor,
    gradS: Tensor,
    withDecodePath: boolean,
    gradBdec: Tensor,
    accumulate: boolean,
  ): void {
    const idx = u32(codes.idx), gv = f32(gradVal), gb = f32(gradBdec);
    const d = gb.length, B = codes.rows, total = u32(codes.rowPtr)[B];
    if ((total + B) * d < 4 * this.grain || !this.shared(Wenc, gradS, gradBdec)) {
      return super.bdecGrad(codes, gradVal, Wenc, gradS, withDecodePath, gradBdec, accumulate);
    }
    const sums = new Float64Array(new SharedArrayBuffer(codes.cols * 8));
    const used = new Uint8Array(new SharedArrayBuffer(codes.cols));
    for (let e = 0; e < total; e++) {
      sums[idx[e]] += gv[e];
      used[idx[e]] = 1;
    }
    const a = {
      gS: f32(gradS),
      W: f32(Wenc),
      gb,
      sums,
      used,
      B,
      cols: codes.cols,
      withDecodePath,
      accumulate,
    };
    this.pool.run("bdecCols", a, d, 8);
  }

  // ---- optimiser ---------------------------------------------------------------------------------
  override fill(t: Tensor, value: number): void {
    if (t.size < 4 * this.grain || !this.shared(t)) return super.fill(t, value);
    this.pool.run("fill", { t: (t as CpuTensor).data, value }, t.size, this.grain);
  }

  override sumSquares(ts: Tensor[], stats: Tensor, slot: number): void {
    if (!this.shared(...ts)) return super.sumSquares(ts, stats, slot);
    let s = 0;
    for (const t of ts) s += this.pool.run("sumSq", { t: f32(t) }, t.size, 4 * this.grain);
    f32(stats)[slot] = s;
  }

  override projectDecoderGrad(Wdec: Tensor, gradWdec: Tensor): void {
    const d = Wdec.shape[1], w = Wdec.shape[0];
    if (w * d < 2 * this.grain || !this.shared(Wdec, gradWdec)) {
      return super.projectDecoderGrad(Wdec, gradWdec);
    }
    this.pool.run("project", { W: f32(Wdec), G: f32(gradWdec), d }, w, Math.ceil(this.grain / d));
  }

  override adam(
    param: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    hp: AdamParams,
    clip: ClipParams | null,
  ): void {
    if (param.size < 2 * this.grain || !this.shared(param, grad, m, v)) {
      return super.adam(param, grad, m, v, hp, clip);
    }
    let scale = 1;
    if (clip) {
      const norm = Math.sqrt(f32(clip.normSq)[clip.slot]);
      scale = Math.min(1, clip.maxNorm / (norm + 1e-6));
    }
    const bc1 = 1 - Math.pow(hp.beta1, hp.step), bc2 = 1 - Math.pow(hp.beta2, hp.step);
    const a = {
      p: f32(param),
      g: f32(grad),
      M: f32(m),
      V: f32(v),
      scale,
      beta1: hp.beta1,
      beta2: hp.beta2,
      stepSize: hp.lr / bc1,
      sq2: Math.sqrt(bc2),
      eps: hp.eps,
    };
    this.pool.run("adam", a, param.size, this.grain);
  }

  override renormRows(W: Tensor): void {
    const d = W.shape[1], w = W.shape[0];
    if (w * d < 2 * this.grain || !this.shared(W)) return super.renormRows(W);
    this.pool.run("renorm", { W: f32(W), d }, w, Math.ceil(this.grain / d));
  }
}

/** The `r`-th largest (1-based) of keys `c` (reordered). */
function selectKey(c: Uint32Array, r: number): number {
  const hist = new Uint32Array(TOP_BINS);
  for (let i = 0; i < c.length; i++) hist[c[i] >>> TOP_SHIFT]++;
  let b = TOP_BINS - 1;
  for (; b > 0; b--) {
    if (hist[b] >= r) break;
    r -= hist[b];
  }
  let m = 0;
  for (let i = 0; i < c.length; i++) if ((c[i] >>> TOP_SHIFT) === b) c[m++] = c[i];
  return resolveLow(c, m, r, (b << TOP_SHIFT) >>> 0);
}

function sharedVals(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(n * 4));
}

function keyToFloatOf(k: number): number {
  const bits = (k & 0x80000000) ? (k & 0x7fffffff) >>> 0 : (~k) >>> 0;
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}
