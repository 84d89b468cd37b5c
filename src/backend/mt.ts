/**
 * `cpu-mt`: the multi-threaded CPU backend, the fastest path on a machine without a GPU.
 *
 * - Dense GEMMs (the encoder, `matmul`, the AuxK path's dense-enough sparse blocks, see
 *   `blas.ts`) run on the best GEMM available: OpenBLAS through FFI when it loads (MONOBENCH_BLAS
 *   or the system library), else onnxruntime's MLAS from the `onnxruntime-node` package the
 *   project already installs (`mlas.ts`), else a WebAssembly SIMD GEMM (no FFI needed), else
 *   TypeScript.
 * - Tensors live in one shared WebAssembly memory (`wasm/heap.ts`), and the rest of the step
 *   (selection, gather, sparse decode and its gradients, loss, Adam, projection,
 *   renormalisation, the sparse primitives) runs as WebAssembly SIMD kernels
 *   (native/wasm/kernels.c) on `threads` threads: Web Workers plus the caller (`pool.ts`). Each
 *   slice computes what the reference does for its rows, latents or elements, in float32.
 * - Tensors that do not fit in that memory (4 GiB) live in SharedArrayBuffers and take the
 *   multi-threaded TypeScript kernels (`mt_kernels.ts`) instead.
 * - Ops too small to pay for a fork-join run their kernel on the calling thread; ops not
 *   overridden here (including ops added to {@link CpuBackend} later) run as the reference.
 */
import { CpuTensor, f32, matmulDims, orderedKey, u32 } from "./cpu.ts";
import { BlasBackend, type GemmProvider, openBlasGemm } from "./blas.ts";
import { MlasGemm, mlasProvider } from "./mlas.ts";
import { defaultThreads, ThreadPool } from "./pool.ts";
import { resolveLow, TOP_BINS, TOP_SHIFT } from "./mt_kernels.ts";
import { WasmHeap } from "./wasm/heap.ts";
import type {
  AdamParams,
  Backend,
  ClipParams,
  Codes,
  CodesT,
  DType,
  MatmulOptions,
  Tensor,
  Threshold,
} from "./types.ts";
import { MonobenchError } from "../util/errors.ts";

/**
 * Which GEMM to use: the best available ("auto"), the best without OpenBLAS ("mlas-or-ts"), or a
 * named one. "wasm" is the WebAssembly SIMD GEMM; "ts" plain TypeScript (and TypeScript kernels
 * for the whole step: the pre-WebAssembly backend, kept for comparison).
 */
export type GemmChoice = "auto" | "mlas-or-ts" | "openblas" | "mlas" | "wasm" | "ts";

export interface CpuMtOptions {
  /** Threads, the caller's included (default MONOBENCH_THREADS, else the logical CPU count). */
  threads?: number;
  /** GEMM library (default "auto": OpenBLAS, else MLAS, else WebAssembly SIMD). */
  gemm?: GemmChoice;
  /** Elements of work below which an op stays on the calling thread (default 32768; tests lower it). */
  grain?: number;
  /** Bytes of per-chunk regions above which `gather` counts then writes (default 64 MiB; tests lower it). */
  gatherRegionBytes?: number;
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

/**
 * The GEMM library for a choice (OpenBLAS or MLAS), or the TypeScript GEMM when none applies
 * (the backend replaces it with its WebAssembly GEMM where it can); throws MonobenchError when a
 * named library is unavailable.
 */
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

/** Every op of the {@link Backend} contract (counted, see CpuMtBackend). */
const BACKEND_OPS = [
  "tensor",
  "zeros",
  "write",
  "read",
  "fill",
  "copy",
  "dispose",
  "codes",
  "codesT",
  "disposeCodes",
  "sync",
  "encode",
  "kthLargest",
  "kthLargestRows",
  "gather",
  "transpose",
  "decode",
  "reconLossGrad",
  "auxLossGrad",
  "l1Grad",
  "decodeBackward",
  "latentGrads",
  "bdecGrad",
  "sumSquares",
  "projectDecoderGrad",
  "adam",
  "renormRows",
  "map",
  "reduce",
  "matmul",
  "spmm",
  "sddmm",
  "spmmT",
  "gatherEntries",
  "scatterEntries",
  "thresholdEma",
  "updateDead",
] as const satisfies readonly (keyof Backend)[];

/** Candidates of a selection pass (see CpuMtBackend.kthLargest). */
interface Selection {
  values: Tensor;
  /** The op count when it was made: valid only for the op right after. */
  seq: number;
  loKey: number;
  room: number;
  bounds: number[];
  pos: Uint32Array;
  cnt: Uint32Array;
}

/** A scratch block of the WebAssembly memory, grown on demand. */
interface Scratch {
  off: number;
  bytes: number;
}

export class CpuMtBackend extends BlasBackend {
  override readonly name: string = "cpu-mt";
  override readonly description: string;
  /** The shared WebAssembly memory and kernels; null for the TypeScript-only configuration. */
  private readonly heap: WasmHeap | null;

  private constructor(
    provider: GemmProvider,
    private readonly pool: ThreadPool,
    private readonly grain: number,
    heap: WasmHeap | null,
  ) {
    super(provider);
    this.heap = heap;
    const kern = heap ? "WebAssembly SIMD kernels" : "TypeScript kernels";
    this.description = `CPU, ${pool.threads} thread${
      pool.threads === 1 ? "" : "s"
    }, ${kern}, GEMM: ${provider.description}`;
    // Count every op, so that `gather` can tell whether it directly follows `kthLargest`.
    const self = this as unknown as Record<string, (...a: unknown[]) => unknown>;
    for (const name of BACKEND_OPS) {
      const f = self[name];
      self[name] = (...a: unknown[]) => {
        this.seq++;
        return f.apply(this, a);
      };
    }
  }

  /** Ops called so far (see the constructor). */
  private seq = 0;
  private regionBytes = 2 ** 26;

  /** The GEMM library in use: "openblas", "mlas", "wasm" or "ts". */
  get gemmKind(): string {
    return this.provider.kind;
  }

  /** The GEMM in use (benches time it alone). */
  get gemmProvider(): GemmProvider {
    return this.provider;
  }

  get threads(): number {
    return this.pool.threads;
  }

  /** Whether the step runs on the WebAssembly kernels. */
  get wasm(): boolean {
    return this.heap !== null;
  }

  static async create(opts: CpuMtOptions = {}): Promise<CpuMtBackend> {
    const threads = opts.threads ?? defaultThreads();
    if (!(Number.isInteger(threads) && threads >= 1)) {
      throw new MonobenchError(`threads must be a positive integer (got ${threads})`);
    }
    const choice = opts.gemm ?? "auto";
    const heap = choice === "ts" ? null : WasmHeap.get();
    if (choice === "wasm" && !heap) {
      throw new MonobenchError(
        "WebAssembly shared memory is not available in this runtime",
        "use --backend cpu-mt without a GEMM choice, or --backend cpu",
      );
    }
    let provider = choice === "wasm" ? null : gemmProvider(choice, threads);
    let pool;
    try {
      pool = await ThreadPool.create(threads, heap?.init ?? null);
    } catch (e) {
      throw new MonobenchError(
        `the cpu-mt backend could not start its worker threads: ${e instanceof Error ? e.message : e}`,
        "run with -A, or use --backend cpu",
      );
    }
    if (heap && (!provider || provider.kind === "ts")) provider = new WasmGemm(heap, pool, threads);
    const mt = new CpuMtBackend(provider!, pool, Math.max(1, opts.grain ?? DEFAULT_GRAIN), heap);
    if (opts.gatherRegionBytes !== undefined) mt.regionBytes = opts.gatherRegionBytes;
    return mt;
  }

  override destroy(): void {
    this.pool.close();
    if (this.heap) { for (const s of this.wscratch.values()) this.heap.release(s.off); }
    this.wscratch.clear();
  }

  // ---- memory: shared, so that the workers see it ---------------------------------------------
  private alloc(shape: readonly number[], dtype: DType): CpuTensor {
    let n = 1;
    for (const s of shape) {
      if (!Number.isInteger(s) || s < 0) throw new MonobenchError(`bad tensor shape [${shape.join(", ")}]`);
      n *= s;
    }
    const view = (buf: SharedArrayBuffer, off: number) =>
      dtype === "u32" ? new Uint32Array(buf, off, n) : new Float32Array(buf, off, n);
    const blk = this.heap?.alloc(Math.max(n, 1) * 4) ?? null;
    if (blk && this.heap) {
      const data = view(this.heap.buffer, blk.off);
      if (!blk.zeroed) data.fill(0);
      this.heap.track(data, blk.off);
      return new CpuTensor([...shape], dtype, data);
    }
    return new CpuTensor([...shape], dtype, view(new SharedArrayBuffer(Math.max(n, 1) * 4), 0));
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

  override dispose(t: Tensor): void {
    const d = (t as CpuTensor).data;
    if (this.heap && d && this.heap.owns(d)) {
      this.heap.untrack(d);
      this.heap.release(d.byteOffset);
    }
  }

  override disposeCodes(c: Codes | CodesT): void {
    if ("rowPtr" in c) { for (const t of [c.rowPtr, c.idx, c.val]) this.dispose(t); }
    else for (const t of [c.colPtr, c.row, c.entry]) this.dispose(t);
  }

  private readonly wscratch = new Map<string, Scratch>();

  /** Byte offset of a scratch block of `bytes` bytes in the WebAssembly memory (reused per name). */
  private scratchOff(name: string, bytes: number): number {
    const heap = this.heap!;
    let s = this.wscratch.get(name);
    if (!s || s.bytes < bytes) {
      if (s) heap.release(s.off);
      const want = Math.max(bytes, Math.ceil((s?.bytes ?? 0) * 1.5), 256);
      const blk = heap.alloc(want);
      if (!blk) throw new MonobenchError(`cpu-mt: out of WebAssembly memory (scratch of ${want} bytes)`);
      s = { off: blk.off, bytes: want };
      this.wscratch.set(name, s);
    }
    return s.off;
  }

  private scratchU32(name: string, n: number): Uint32Array {
    const off = this.scratchOff(name, n * 4); // may grow the memory: take the buffer after it
    return new Uint32Array(this.heap!.buffer, off, n);
  }

  private scratchF32(name: string, n: number): Float32Array {
    const off = this.scratchOff(name, n * 4);
    return new Float32Array(this.heap!.buffer, off, n);
  }

  /** Small host arrays (group bounds, weights) copied into scratch: their byte offset. */
  private u32s(name: string, xs: readonly number[]): number {
    const a = this.scratchU32(name, xs.length);
    for (let i = 0; i < xs.length; i++) a[i] = xs[i];
    return a.byteOffset;
  }

  private f32s(name: string, xs: readonly number[]): number {
    const a = this.scratchF32(name, xs.length);
    for (let i = 0; i < xs.length; i++) a[i] = xs[i];
    return a.byteOffset;
  }

  protected override centredScratch(n: number): Float32Array {
    if (this.heap) return this.scratchF32("xc", n);
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

  /** Whether every tensor (nulls aside) lives in the WebAssembly memory: then the SIMD kernels apply. */
  private inHeap(...ts: (Tensor | null | undefined)[]): boolean {
    const h = this.heap;
    if (!h) return false;
    for (const t of ts) {
      const d = t ? (t as CpuTensor).data : null;
      if (t && !(d && h.owns(d))) return false;
    }
    return true;
  }

  private arraysInHeap(...as: ArrayBufferView[]): boolean {
    const h = this.heap;
    return !!h && as.every((a) => h.owns(a));
  }

  /** Byte offset of a tensor in the WebAssembly memory (0 for null). */
  private p(t: Tensor | null | undefined): number {
    return t ? (t as CpuTensor).data.byteOffset : 0;
  }

  /** Chunk bounds over [0, n) whose inner bounds are multiples of `step`. */
  private stepped(n: number, step: number, grain: number): number[] {
    const blocks = Math.ceil(n / step);
    return this.pool.chunks(blocks, Math.max(1, Math.ceil(grain / step))).map((b) => Math.min(n, b * step));
  }

  /**
   * The dense-block paths for dense-enough sparse codes (AuxK) pay off against single-threaded
   * TypeScript loops; the SIMD kernels are as fast per flop as a GEMM on such blocks, without
   * building dense operands.
   */
  protected override active(codes: Codes, groups: number[]): ReturnType<BlasBackend["active"]> {
    return this.heap ? null : super.active(codes, groups);
  }

  // ---- encoder pieces ----------------------------------------------------------------------------
  protected override center(X: Float32Array, bd: Float32Array, xc: Float32Array): void {
    const d = bd.length, rows = X.length / d, g = Math.ceil(this.grain / Math.max(d, 1));
    if (this.arraysInHeap(X, bd, xc)) {
      this.pool.run("wCenter", { X: X.byteOffset, bd: bd.byteOffset, xc: xc.byteOffset, d }, rows, g);
    } else this.pool.run("center", { X, bd, xc }, rows, g);
  }

  protected override broadcastRows(P: Float32Array, be: Float32Array): void {
    const w = be.length, rows = P.length / w, g = Math.ceil(this.grain / Math.max(w, 1));
    if (this.arraysInHeap(P, be)) {
      this.pool.run("wBcast", { P: P.byteOffset, be: be.byteOffset, w }, rows, g);
    } else this.pool.run("bcastRows", { P, be }, rows, g);
  }

  protected override reluInPlace(P: Float32Array): void {
    if (this.arraysInHeap(P)) this.pool.run("wRelu", { P: P.byteOffset }, P.length, this.grain);
    else this.pool.run("relu", { P }, P.length, this.grain);
  }

  override encode(x: Tensor, Wenc: Tensor, benc: Tensor, bdec: Tensor, pre: Tensor): void {
    const kind = this.provider.kind;
    const wasm = kind === "wasm" && this.inHeap(x, Wenc, benc, bdec, pre);
    if (!wasm && (kind !== "ts" || !this.shared(x, Wenc, benc, bdec, pre))) {
      return super.encode(x, Wenc, benc, bdec, pre);
    }
    const X = f32(x), W = f32(Wenc), be = f32(benc), bd = f32(bdec), P = f32(pre);
    const d = bd.length, w = be.length, B = X.length / d;
    if (W.length !== w * d || P.length !== B * w || !Number.isInteger(B)) {
      throw new Error("encode: shape mismatch");
    }
    if (B === 0 || w === 0) return;
    const xc = this.centredScratch(X.length);
    this.center(X, bd, xc);
    if (wasm) {
      // pre = ReLU(xc · Wᵀ + benc), bias and ReLU applied as each tile is stored.
      (this.provider as WasmGemm).run(xc, d, 1, B, W, d, true, w, d, P, w, 1, false, be, true);
      return;
    }
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

  /**
   * The candidates of the last SIMD selection pass (every element at or above `loKey`, by chunk
   * in position order), valid for a `gather` that is the very next op (`seq`).
   */
  private sel: Selection | null = null;

  override kthLargest(values: Tensor, k: number, out: Tensor, slot: number): void {
    const v = f32(values), n = v.length;
    this.sel = null;
    if (n < 4 * this.grain || !this.shared(values)) return super.kthLargest(values, k, out, slot);
    if (k < 1 || k > n) {
      f32(out)[slot] = -Infinity;
      return;
    }
    const bits = new Uint32Array(v.buffer, v.byteOffset, n);
    const r = this.inHeap(values) ? this.collectKth(values, bits, k) : this.bracketKth(bits, k);
    f32(out)[slot] = r ?? this.radixKth(bits, k);
    const sel = this.sel as Selection | null;
    if (sel) sel.seq = this.seq;
  }

  /**
   * Ranks (from the top, in a sample of S keys) and sample keys that bracket the k-th largest
   * key of `bits` with a margin of ~6 standard deviations.
   */
  private sampleBracket(bits: Uint32Array, k: number) {
    // 2^14 samples (fewer for small inputs: sampling and sorting must stay cheap next to the pass).
    const n = bits.length, S = Math.min(n, 1 << 14, Math.max(1024, n >> 6));
    const sample = new Uint32Array(S);
    // One element at a pseudo-random place in each of S equal strata: a fixed stride would see
    // the same few columns of every row of a [B, ω] matrix, and columns (latents) differ.
    let h = 0x9e3779b9;
    for (let j = 0; j < S; j++) {
      h = (Math.imul(h, 1664525) + 1013904223) >>> 0;
      const lo = Math.floor((j * n) / S), hi = Math.floor(((j + 1) * n) / S);
      const b = bits[lo + Math.floor(((hi - lo) * h) / 2 ** 32)];
      sample[j] = (b & 0x80000000) ? (~b) >>> 0 : (b | 0x80000000) >>> 0;
    }
    sample.sort();
    const q = (k / n) * S, margin = 6 * Math.sqrt(q + 1) + 32;
    const hiRank = Math.floor(q - margin), loRank = Math.ceil(q + margin);
    const hiKey = hiRank < 1 ? 0xffffffff : sample[S - hiRank];
    const loKey = loRank >= S ? 0 : sample[S - 1 - loRank];
    return { S, hiRank, loRank, hiKey, loKey };
  }

  /**
   * k-th largest on the SIMD kernels: one pass collects every element at or above a sampled
   * lower bound (position and key); the k-th key is resolved among those, and a `gather` that
   * follows keeps its entries from them without another pass. Null when the sample missed.
   */
  private collectKth(values: Tensor, bits: Uint32Array, k: number): number | null {
    const n = bits.length, { S, loRank, loKey } = this.sampleBracket(bits, k);
    const bounds = this.pool.chunks(n, this.grain), T = bounds.length - 1;
    const room = Math.ceil((4 * ((loRank + 2) / S) * n) / T + 1024);
    if (room * T > 2 * n + 65536) return null;
    const pos = this.scratchU32("selpos", room * T), keys = this.scratchU32("selkeys", room * T);
    const cnt = this.scratchU32("selcnt", T);
    const a = {
      bits: bits.byteOffset,
      loKey,
      pos: pos.byteOffset,
      keys: keys.byteOffset,
      room,
      cnt: cnt.byteOffset,
    };
    this.pool.run("wCollect", a, n, 1, bounds);
    let m = 0;
    for (let t = 0; t < T; t++) {
      if (cnt[t] > room) return null;
      m += cnt[t];
    }
    if (m < k) return null;
    const c = this.scratchU32("selc", m), hist = this.scratchOff("selhist", 4 * 2048);
    for (let t = 0, at = 0; t < T; t++) {
      c.set(keys.subarray(t * room, t * room + cnt[t]), at);
      at += cnt[t];
    }
    this.sel = { values, seq: -1, loKey, room, bounds, pos, cnt };
    return keyToFloatOf(this.heap!.k.select_key(c.byteOffset, m, k, hist) >>> 0);
  }

  /**
   * k-th largest key from one pass: a sample brackets the k-th key between two sample keys; the
   * pass counts keys above the bracket and collects those inside it, and the exact key is
   * resolved among those. Null when the sample missed (the caller falls back to radix).
   */
  private bracketKth(bits: Uint32Array, k: number): number | null {
    const n = bits.length, { S, hiRank, loRank, hiKey, loKey } = this.sampleBracket(bits, k);
    const bounds = this.pool.chunks(n, this.grain), T = bounds.length - 1;
    const expect = ((loRank - Math.max(hiRank, 0) + 2) / S) * n;
    const room = Math.ceil((4 * expect) / T + 1024);
    if (room * T > 8 * n + 65536) return null;
    if (!this.cand || this.cand.length < room * T) {
      this.cand = new Uint32Array(new SharedArrayBuffer(room * T * 4));
    }
    const cand = this.cand, cnt = this.counts(T);
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
    if (B > 0 && this.inHeap(values, mask, out)) {
      // The eligible columns once, then a radix select per row over those only.
      let cols = 0, nc = w;
      if (mask) {
        const m = u32(mask), list = this.scratchU32("kcols", Math.max(w, 1));
        nc = 0;
        for (let j = 0; j < w; j++) if (m[j]) list[nc++] = j;
        cols = list.byteOffset;
      }
      const bounds = this.pool.chunks(B, Math.ceil(this.grain / Math.max(nc, 1)));
      const per = 4 * (2048 + nc);
      const scratch = this.scratchOff("kscratch", per * (bounds.length - 1));
      const a = { bits: v.byteOffset, w, k, cols, nc, out: o.byteOffset, scratch, per };
      this.pool.run("wRowKth", a, B, 1, bounds);
      return;
    }
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
    if (this.fromSelection(values, thr, mask, strict, out)) return;
    if (this.inHeap(values, thr.t, mask, out.rowPtr, out.idx, out.val)) {
      return this.gatherWasm(v, thr, mask, strict, out);
    }
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
    if (room * T * 8 <= this.regionBytes) {
      // One pass: each slice gathers into its own region, then the regions are laid out as CSR.
      if (!this.local || this.local.idx.length < room * T) {
        this.local = { idx: new Uint32Array(new SharedArrayBuffer(room * T * 4)), val: sharedVals(room * T) };
      }
      this.pool.run("gatherLocal", { ...a, lidx: this.local.idx, lval: this.local.val, room }, B, 1, bounds);
      layoutCsr(cnt, bounds, room, this.local.idx, this.local.val, out.cap, rp, a.idx, a.val);
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

  /**
   * A gather right after `kthLargest` on the same values, with a positive threshold at or above
   * that selection's lower bound: every kept entry is among the selection's candidates, which are
   * in row-major order, so the codes are built from them alone. False when that does not apply.
   */
  private fromSelection(
    values: Tensor,
    thr: Threshold,
    mask: Tensor | null,
    strict: boolean,
    out: Codes,
  ): boolean {
    const s = this.sel;
    this.sel = null;
    if (!s || s.values !== values || s.seq !== this.seq - 1 || thr.kind !== "scalar" || mask) return false;
    if (!this.inHeap(out.rowPtr, out.idx, out.val)) return false;
    const tv = f32(thr.t)[thr.slot];
    if (!(tv > 0) || orderedKey(new Uint32Array(new Float32Array([tv]).buffer)[0]) < s.loKey) return false;
    this.heap!.k.csr_from_candidates(
      s.pos.byteOffset,
      s.cnt.byteOffset,
      s.room,
      s.bounds.length - 1,
      this.p(values),
      out.cols,
      out.rows,
      tv,
      strict ? 1 : 0,
      out.cap,
      this.p(out.rowPtr),
      this.p(out.idx),
      this.p(out.val),
    );
    return true;
  }

  /** gather on the SIMD kernels: one pass into per-chunk regions, or count then write when large. */
  private gatherWasm(
    v: Float32Array,
    thr: Threshold,
    mask: Tensor | null,
    strict: boolean,
    out: Codes,
  ): void {
    const B = out.rows, w = out.cols;
    const rp = u32(out.rowPtr), idx = u32(out.idx), val = f32(out.val);
    const cnt = this.scratchU32("gcnt", Math.max(B, 1));
    const a = {
      v: v.byteOffset,
      w,
      t: this.p(thr.t),
      slot: thr.kind === "scalar" ? thr.slot : 0,
      scalar: thr.kind === "scalar" ? 1 : 0,
      strict: strict ? 1 : 0,
      mask: this.p(mask),
      cnt: cnt.byteOffset,
      idx: 0,
      val: 0,
      room: 0,
      rp: rp.byteOffset,
    };
    const bounds = this.pool.chunks(B, Math.ceil(this.grain / Math.max(w, 1))), T = bounds.length - 1;
    let most = 0;
    for (let c = 0; c < T; c++) most = Math.max(most, bounds[c + 1] - bounds[c]);
    const room = Math.min(out.cap, most * w);
    if (room * T * 8 <= this.regionBytes) {
      const lidx = this.scratchU32("gidx", Math.max(room * T, 1)),
        lval = this.scratchF32("gval", Math.max(room * T, 1));
      this.pool.run("wGather", { ...a, idx: lidx.byteOffset, val: lval.byteOffset, room }, B, 1, bounds);
      layoutCsr(cnt, bounds, room, lidx, lval, out.cap, rp, idx, val);
      return;
    }
    // Count (store nothing), lay out the row pointer, then write each chunk's rows in place.
    this.pool.run("wGather", { ...a, room: 0 }, B, 1, bounds);
    let e = 0;
    rp[0] = 0;
    for (let b = 0; b < B; b++) {
      e = Math.min(out.cap, e + cnt[b]);
      rp[b + 1] = e;
    }
    this.pool.run("wGather", { ...a, idx: idx.byteOffset, val: val.byteOffset, room: -1 }, B, 1, bounds);
    for (let b = 0; b < B; b++) rp[b + 1] = Math.min(rp[b + 1], out.cap);
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
    const o = f32(out);
    if (this.inHeap(codes.rowPtr, codes.idx, codes.val, Wdec, bdec, out)) {
      if (o.length !== groups.length * B * d) throw new Error("decode: out shape mismatch");
      const a = {
        rp: rp.byteOffset,
        idx: this.p(codes.idx),
        val: this.p(codes.val),
        W: W.byteOffset,
        o: o.byteOffset,
        bd: this.p(bdec),
        accumulate: 0,
        groups: this.u32s("groups", groups),
        G: groups.length,
        B,
        d,
        cap: codes.cap,
      };
      this.pool.run("wDecode", a, B, 1, this.rowBounds(rp, B, d));
      return;
    }
    if (rp[B] * d < this.grain || !this.shared(codes.val, Wdec, bdec, out)) {
      return super.decode(codes, Wdec, bdec, groups, out);
    }
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
    this.pool.run("decode", a, B, 1, this.rowBounds(rp, B, d));
  }

  /** Row slices with balanced entry counts (one slice when the op is too small to split). */
  private rowBounds(rp: Uint32Array, B: number, d: number): number[] {
    if ((rp[B] + B) * d < this.grain) return [0, B];
    return this.pool.balanced(rp, B);
  }

  override auxLossGrad(
    x: Tensor,
    xhat: Tensor,
    auxRecon: Tensor,
    alpha: number,
    gradS: Tensor,
    stats: Tensor,
    slot: number,
  ): void {
    if (!this.inHeap(x, xhat, auxRecon, gradS)) {
      return super.auxLossGrad(x, xhat, auxRecon, alpha, gradS, stats, slot);
    }
    const [B, d] = x.shape, last = (xhat.shape[0] - 1) * B * d;
    const loss = this.heap!.k.aux_loss(
      this.p(x),
      this.p(xhat) + 4 * last,
      this.p(auxRecon),
      this.p(gradS),
      B,
      d,
      alpha,
      this.scratchOff("auxmean", 4 * Math.max(d, 1)),
    );
    f32(stats)[slot] = loss;
  }

  override reconLossGrad(
    xhat: Tensor,
    x: Tensor,
    weights: number[],
    gradS: Tensor,
    stats: Tensor,
    slot: number,
  ): void {
    const X = f32(x), n = X.length, B = xhat.shape[1];
    if (this.inHeap(xhat, x, gradS)) {
      const G = weights.length;
      const a = {
        xh: this.p(xhat),
        X: X.byteOffset,
        gS: this.p(gradS),
        w: this.f32s("weights", weights),
        c: this.f32s("wscale", weights.map((w) => w * (2 / B))),
        G,
        n,
      };
      const loss = this.pool.run("wRecon", a, n, Math.ceil(this.grain / G));
      f32(stats)[slot] = loss / B;
      return;
    }
    if (n * weights.length < this.grain || !this.shared(xhat, x, gradS)) {
      return super.reconLossGrad(xhat, x, weights, gradS, stats, slot);
    }
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
    const gv = f32(gradVal);
    if (this.inHeap(codes.rowPtr, codes.idx, gradS, Wdec, gradVal)) {
      if (!accumulate) gv.fill(0, Math.min(rp[B], codes.cap));
      const a = {
        rp: rp.byteOffset,
        idx: this.p(codes.idx),
        gS: this.p(gradS),
        W: W.byteOffset,
        out: gv.byteOffset,
        accumulate: accumulate ? 1 : 0,
        groups: this.u32s("groups", groups),
        B,
        d,
        cap: codes.cap,
      };
      this.pool.run("wDecodeBackward", a, B, 1, this.rowBounds(rp, B, d));
      return;
    }
    if (rp[B] * d < this.grain || !this.shared(gradS, Wdec, gradVal)) {
      return super.decodeBackward(codes, gradS, Wdec, groups, gradVal, accumulate);
    }
    if (!accumulate) gv.fill(0, rp[B]);
    const a = { rp, idx: u32(codes.idx), gS: f32(gradS), W, gv, groups, B, d, accumulate };
    this.pool.run("decodeBackward", a, B, 1, this.rowBounds(rp, B, d));
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
    if (
      this.inHeap(codesT.colPtr, codesT.row, codesT.entry, gradVal, codes.val, x, bdec, gradS, gradWenc) &&
      this.inHeap(gradBenc, gradWdec)
    ) {
      const a = {
        cp: cp.byteOffset,
        row: this.p(codesT.row),
        entry: this.p(codesT.entry),
        gv: this.p(gradVal),
        val: this.p(codes.val),
        X: this.p(x),
        bd: this.p(bdec),
        gS: this.p(gradS),
        gWe: this.p(gradWenc),
        gbe: this.p(gradBenc),
        gWd: this.p(gradWdec),
        groups: this.u32s("groups", groups),
        B: codes.rows,
        d,
        cap: codes.cap,
        overwrite: 0,
      };
      this.pool.run("wLatentGrads", a, w, 1, this.colBounds(cp, w, d));
      return;
    }
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

  /** Latent slices with balanced entry counts (one slice when small). */
  private colBounds(cp: Uint32Array, w: number, d: number): number[] {
    if (cp[w] * d < this.grain) return [0, w];
    return this.pool.balanced(cp, w);
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
    const wasm = this.inHeap(Wenc, gradS, gradBdec);
    if (!wasm && ((total + B) * d < 4 * this.grain || !this.shared(Wenc, gradS, gradBdec))) {
      return super.bdecGrad(codes, gradVal, Wenc, gradS, withDecodePath, gradBdec, accumulate);
    }
    const sums = new Float64Array(new SharedArrayBuffer(codes.cols * 8));
    const used = new Uint8Array(new SharedArrayBuffer(codes.cols));
    for (let e = 0; e < total; e++) {
      sums[idx[e]] += gv[e];
      used[idx[e]] = 1;
    }
    if (wasm) {
      let nu = 0;
      for (let j = 0; j < codes.cols; j++) nu += used[j];
      const uj = this.scratchU32("uj", Math.max(nu, 1)), us = this.scratchF32("us", Math.max(nu, 1));
      for (let j = 0, u = 0; j < codes.cols; j++) {
        if (!used[j]) continue;
        uj[u] = j;
        us[u++] = sums[j];
      }
      const a = {
        gS: this.p(gradS),
        W: this.p(Wenc),
        gb: gb.byteOffset,
        uj: uj.byteOffset,
        us: us.byteOffset,
        nu,
        B,
        d,
        withDecodePath: withDecodePath ? 1 : 0,
        accumulate: accumulate ? 1 : 0,
      };
      this.pool.run("wBdecCols", a, d, 1, this.stepped(d, 16, Math.ceil(this.grain / Math.max(nu + B, 1))));
      return;
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
    if (t.dtype === "f32" && this.inHeap(t)) {
      this.pool.run("wFill", { t: this.p(t), value }, t.size, 4 * this.grain);
      return;
    }
    if (t.size < 4 * this.grain || !this.shared(t)) return super.fill(t, value);
    this.pool.run("fill", { t: (t as CpuTensor).data, value }, t.size, this.grain);
  }

  override sumSquares(ts: Tensor[], stats: Tensor, slot: number): void {
    if (!this.shared(...ts)) return super.sumSquares(ts, stats, slot);
    let s = 0;
    for (const t of ts) {
      s += this.inHeap(t)
        ? this.pool.run("wSumSq", { t: this.p(t) }, t.size, 4 * this.grain)
        : this.pool.run("sumSq", { t: f32(t) }, t.size, 4 * this.grain);
    }
    f32(stats)[slot] = s;
  }

  override projectDecoderGrad(Wdec: Tensor, gradWdec: Tensor): void {
    const d = Wdec.shape[1], w = Wdec.shape[0];
    if (this.inHeap(Wdec, gradWdec)) {
      this.pool.run("wProject", { W: this.p(Wdec), G: this.p(gradWdec), d }, w, Math.ceil(this.grain / d));
      return;
    }
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
    const wasm = this.inHeap(param, grad, m, v);
    if (!wasm && (param.size < 2 * this.grain || !this.shared(param, grad, m, v))) {
      return super.adam(param, grad, m, v, hp, clip);
    }
    let scale = 1;
    if (clip) {
      const norm = Math.sqrt(f32(clip.normSq)[clip.slot]);
      scale = Math.min(1, clip.maxNorm / (norm + 1e-6));
    }
    const bc1 = 1 - Math.pow(hp.beta1, hp.step), bc2 = 1 - Math.pow(hp.beta2, hp.step);
    const h = {
      scale,
      beta1: hp.beta1,
      beta2: hp.beta2,
      stepSize: hp.lr / bc1,
      sq2: Math.sqrt(bc2),
      eps: hp.eps,
    };
    if (wasm) {
      const a = { p: this.p(param), g: this.p(grad), M: this.p(m), V: this.p(v), ...h };
      this.pool.run("wAdam", a, param.size, this.grain);
      return;
    }
    this.pool.run(
      "adam",
      { p: f32(param), g: f32(grad), M: f32(m), V: f32(v), ...h },
      param.size,
      this.grain,
    );
  }

  override renormRows(W: Tensor): void {
    const d = W.shape[1], w = W.shape[0];
    if (this.inHeap(W)) {
      this.pool.run("wRenorm", { W: this.p(W), d }, w, Math.ceil(this.grain / d));
      return;
    }
    if (w * d < 2 * this.grain || !this.shared(W)) return super.renormRows(W);
    this.pool.run("renorm", { W: f32(W), d }, w, Math.ceil(this.grain / d));
  }

  // ---- primitives --------------------------------------------------------------------------------
  override matmul(a: Tensor, b: Tensor, c: Tensor, opts: MatmulOptions = {}): void {
    const { M, N, K } = matmulDims(a, b, c, opts);
    if (this.provider.kind === "ts" || M * N * K < 4 * this.grain) return super.matmul(a, b, c, opts);
    const ta = !!opts.ta, tb = !!opts.tb;
    this.provider.sgemm(
      ta,
      tb,
      M,
      N,
      K,
      f32(a),
      ta ? M : K,
      f32(b),
      tb ? K : N,
      opts.accumulate ? 1 : 0,
      f32(c),
      N,
      opts.alpha ?? 1,
    );
  }

  override spmm(codes: Codes, vals: Tensor, W: Tensor, out: Tensor, accumulate: boolean): void {
    const d = codes.cols > 0 ? W.size / codes.cols : 0;
    if (
      !this.inHeap(codes.rowPtr, codes.idx, vals, W, out) || !Number.isInteger(d) ||
      out.size !== codes.rows * d || vals.size < codes.cap
    ) {
      return super.spmm(codes, vals, W, out, accumulate);
    }
    const rp = u32(codes.rowPtr), B = codes.rows;
    const a = {
      rp: rp.byteOffset,
      idx: this.p(codes.idx),
      val: this.p(vals),
      W: this.p(W),
      o: this.p(out),
      bd: 0,
      accumulate: accumulate ? 1 : 0,
      groups: this.u32s("groups", [codes.cols]),
      G: 1,
      B,
      d,
      cap: codes.cap,
    };
    this.pool.run("wDecode", a, B, 1, this.rowBounds(rp, B, d));
  }

  override sddmm(codes: Codes, A: Tensor, W: Tensor, out: Tensor, accumulate: boolean): void {
    const d = codes.cols > 0 ? W.size / codes.cols : 0;
    if (
      !this.inHeap(codes.rowPtr, codes.idx, A, W, out) || !Number.isInteger(d) ||
      A.size !== codes.rows * d || out.size < codes.cap
    ) {
      return super.sddmm(codes, A, W, out, accumulate);
    }
    const rp = u32(codes.rowPtr), B = codes.rows;
    const a = {
      rp: rp.byteOffset,
      idx: this.p(codes.idx),
      gS: this.p(A),
      W: this.p(W),
      out: this.p(out),
      accumulate: accumulate ? 1 : 0,
      groups: this.u32s("groups", [codes.cols]),
      B,
      d,
      cap: codes.cap,
    };
    this.pool.run("wDecodeBackward", a, B, 1, this.rowBounds(rp, B, d));
    if (!accumulate) f32(out).fill(0, Math.min(rp[B], codes.cap));
  }

  override spmmT(
    codes: Codes,
    codesT: CodesT,
    vals: Tensor,
    A: Tensor,
    out: Tensor,
    accumulate: boolean,
  ): void {
    const w = codes.cols, d = codes.rows > 0 ? A.size / codes.rows : 0;
    if (
      !this.inHeap(codesT.colPtr, codesT.row, codesT.entry, vals, A, out) || !Number.isInteger(d) ||
      codesT.cols !== w || out.size !== w * d || vals.size < codes.cap || d === 0
    ) {
      return super.spmmT(codes, codesT, vals, A, out, accumulate);
    }
    const cp = u32(codesT.colPtr);
    const a = {
      cp: cp.byteOffset,
      row: this.p(codesT.row),
      entry: this.p(codesT.entry),
      gv: this.p(vals),
      val: 0,
      X: this.p(A),
      bd: 0,
      gS: 0,
      gWe: this.p(out),
      gbe: 0,
      gWd: 0,
      groups: this.u32s("groups", [w]),
      B: codes.rows,
      d,
      cap: codes.cap,
      overwrite: accumulate ? 0 : 1,
    };
    this.pool.run("wLatentGrads", a, w, 1, this.colBounds(cp, w, d));
  }
}

/** Lay out per-chunk gather regions (chunk c from c·room, cnt[row] entries per row) as CSR. */
function layoutCsr(
  cnt: Uint32Array,
  bounds: number[],
  room: number,
  lidx: Uint32Array,
  lval: Float32Array,
  cap: number,
  rp: Uint32Array,
  idx: Uint32Array,
  val: Float32Array,
): void {
  let e = 0;
  rp[0] = 0;
  for (let s = 0; s + 1 < bounds.length; s++) {
    let src = s * room;
    for (let b = bounds[s]; b < bounds[s + 1]; b++) {
      const take = Math.min(cnt[b], cap - e);
      idx.set(lidx.subarray(src, src + take), e);
      val.set(lval.subarray(src, src + take), e);
      src += cnt[b];
      e += take;
      rp[b + 1] = e;
    }
  }
}

/**
 * The WebAssembly SIMD GEMM (native/wasm/kernels.c `gemm`) as a {@link GemmProvider}: op(B) is
 * packed into 8-column panels, then rows of C are split over the pool, 4 rows × 8 columns per
 * tile. Operands outside the WebAssembly memory are copied in.
 */
class WasmGemm implements GemmProvider {
  readonly kind = "wasm";
  readonly description: string;
  private readonly slots: Scratch[] = [];

  constructor(private readonly heap: WasmHeap, private readonly pool: ThreadPool, threads: number) {
    this.description = `WebAssembly SIMD (${threads} thread${threads === 1 ? "" : "s"})`;
  }

  private take(i: number, n: number): Float32Array {
    const s = this.slots[i], bytes = Math.max(n * 4, 256);
    if (!s || s.bytes < bytes) {
      if (s) this.heap.release(s.off);
      const blk = this.heap.alloc(bytes);
      if (!blk) throw new MonobenchError("cpu-mt: out of WebAssembly memory for a GEMM operand");
      this.slots[i] = { off: blk.off, bytes };
    }
    return new Float32Array(this.heap.buffer, this.slots[i].off, n);
  }

  /** Contiguous copy (in the memory) of a rows × cols block stored with leading dimension ld. */
  private copyIn(slot: number, X: Float32Array, rows: number, cols: number, ld: number): Float32Array {
    const out = this.take(slot, rows * cols);
    for (let r = 0; r < rows; r++) out.set(X.subarray(r * ld, r * ld + cols), r * cols);
    return out;
  }

  /**
   * C [M, N] (ldc, in the memory) = alpha · op(A) · op(B) (+ C when beta) (+ bias) (ReLU), with
   * op(A)[i, k] = A[i·sa + k·sk] (A in the memory) and op(B) = B [N, K] transposed (transB) or
   * B [K, N], leading dimension ldb.
   */
  run(
    A: Float32Array,
    sa: number,
    sk: number,
    M: number,
    Bm: Float32Array,
    ldb: number,
    transB: boolean,
    N: number,
    K: number,
    C: Float32Array,
    ldc: number,
    alpha: number,
    beta: boolean,
    bias: Float32Array | null,
    relu: boolean,
  ): void {
    if (M === 0 || N === 0) return;
    const B = this.heap.owns(Bm) ? Bm : this.copyIn(1, Bm, transB ? N : K, transB ? K : N, ldb);
    const ldB = B === Bm ? ldb : transB ? K : N;
    const np = Math.ceil(N / 8), P = this.take(2, np * 8 * Math.max(K, 1));
    const pack = { B: B.byteOffset, ldb: ldB, N, K, trans: transB ? 1 : 0, P: P.byteOffset };
    this.pool.run("wPack", pack, np, Math.max(1, Math.ceil(32_768 / Math.max(8 * K, 1))));
    const args = {
      A: A.byteOffset,
      sa,
      sk,
      P: P.byteOffset,
      C: C.byteOffset,
      ldc,
      N,
      K,
      alpha,
      beta: beta ? 1 : 0,
      bias: bias ? bias.byteOffset : 0,
      relu: relu ? 1 : 0,
    };
    const blocks = Math.ceil(M / 4);
    const bounds = this.pool.chunks(blocks, Math.max(1, Math.ceil(32_768 / Math.max(4 * N * K, 1))))
      .map((x) => Math.min(M, x * 4));
    this.pool.run("wGemm", args, M, 1, bounds);
  }

  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    beta: number,
    C: Float32Array,
    ldc: number,
    alpha = 1,
  ): void {
    if (M === 0 || N === 0) return;
    let a = A, sa = transA ? 1 : lda, sk = transA ? lda : 1;
    if (!this.heap.owns(A)) {
      a = this.copyIn(0, A, transA ? K : M, transA ? M : K, lda);
      sa = transA ? 1 : K;
      sk = transA ? M : 1;
    }
    const direct = this.heap.owns(C);
    const c = direct ? C : this.copyIn(3, C, M, N, ldc);
    const ldcc = direct ? ldc : N;
    if (beta !== 0 && beta !== 1) {
      for (let r = 0; r < M; r++) for (let j = 0; j < N; j++) c[r * ldcc + j] *= beta;
    }
    this.run(a, sa, sk, M, B, ldb, transB, N, K, c, ldcc, alpha, beta !== 0, null, false);
    if (!direct) { for (let r = 0; r < M; r++) C.set(c.subarray(r * N, r * N + N), r * ldc); }
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
