/**
 * WebGPU implementation of the {@link Backend} contract (WGSL compute kernels in kernels.ts).
 * Works with Deno's built-in `navigator.gpu` (default) and Dawn `npm:webgpu` (opt-in).
 *
 * Tensors are single GPU buffers (up to the device's maxBufferSize, 2 GiB on Mesa). Storage
 * bindings are limited to maxStorageBufferBindingSize (128 MiB on Mesa), so ops bind ranges of
 * tensors and loop over chunks: element-wise ops over element ranges, row-wise ops over row
 * ranges, the encoder matmul over (sample rows × latent rows) blocks, sparse decode/backward over
 * (sample rows × latent segments), per-latent gradients over (latent segments × sample rows).
 * Arguments that are always bound whole (CSR arrays, masks, per-row/per-latent vectors) must fit
 * in one binding; a clear error says so otherwise.
 */
import type { AdamParams, Backend, ClipParams, Codes, CodesT, DType, Tensor, Threshold } from "../types.ts";
import { MonobenchError } from "../../util/errors.ts";
import { Engine, type EngineOptions, type Kernel, params, type Range } from "./engine.ts";
import * as K from "./kernels.ts";
import { acquireDevice, type DeviceOptions, type GpuKind } from "./device.ts";

export class GpuTensor implements Tensor {
  disposed = false;
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly size: number,
    readonly buffer: GPUBuffer,
  ) {}
}

export interface WebGpuOptions extends EngineOptions, DeviceOptions {}

function prod(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new MonobenchError(`bad tensor shape [${shape.join(", ")}]`);
    n *= s;
  }
  return n;
}

function f32Bits(v: number): number {
  const f = new Float32Array([v]);
  return new Uint32Array(f.buffer)[0];
}

/** Smallest f32 >= x (so that, for f32 c, c >= result iff c >= x). */
function f32Ceil(x: number): number {
  const f = Math.fround(x);
  if (!(f < x)) return f;
  const a = new Float32Array([f]);
  const u = new Uint32Array(a.buffer);
  if (f === 0) u[0] = 1; // smallest positive subnormal
  else if (f > 0) u[0]++;
  else u[0]--;
  return a[0];
}

const NEG_INF_BITS = 0xff800000;
/** Digits of the radix select over the whole tensor (shift, width): 11 + 11 + 10 bits. */
const KTH_DIGITS: [number, number][] = [[21, 11], [10, 11], [0, 10]];
const KTH_EPW = 8192;
/** Candidate capacity of kthLargest (4M keys = 16 MiB) and its sample size. */
const KTH_CAND = 1 << 22;
const KTH_SAMPLE = 1 << 16;
/** Row block of the column-sum kernels. */
const ROW_BLOCK = 64;

interface Accum {
  buf: GPUBuffer;
  d: number;
  compOff: number; // element offset of the compensation region
}

interface Segment {
  g: number;
  lo: number;
  hi: number;
}

export class WebGpuBackend implements Backend {
  readonly engine: Engine;

  constructor(
    device: GPUDevice,
    readonly name: string,
    readonly description: string,
    opts: EngineOptions = {},
    /** Runs on a software adapter (see `isSoftwareAdapter`). */
    readonly software = false,
  ) {
    this.engine = new Engine(device, opts);
  }

  // ---- helpers ------------------------------------------------------------------------------
  private k(name: string, build: () => K.KernelSource): Kernel {
    return this.engine.kernel(name, build);
  }

  private g(t: Tensor, dtype?: DType): GpuTensor {
    if (!(t instanceof GpuTensor)) throw new Error("webgpu backend: tensor from another backend");
    if (t.disposed) throw new Error("webgpu backend: tensor used after dispose");
    if (dtype && t.dtype !== dtype) {
      throw new Error(`webgpu backend: expected a ${dtype} tensor, got ${t.dtype}`);
    }
    return t;
  }

  private r(t: Tensor, start: number, count: number): Range {
    return this.engine.range(this.g(t).buffer, start, count);
  }

  /** Bind a whole tensor (or its first n elements); it must fit in one binding. */
  private whole(t: Tensor, what: string, n = t.size): Range {
    if (n * 4 > this.engine.maxBind - this.engine.align - 16) {
      throw new MonobenchError(
        `webgpu: ${what} has ${n} elements (${n * 4} bytes), more than fits in one storage binding ` +
          `(${this.engine.maxBind} bytes)`,
        "reduce the batch size / code capacity, or use --backend cpu",
      );
    }
    return this.r(t, 0, n);
  }

  private scratchRange(name: string, n: number, vec4 = false): Range {
    if (n * 4 > this.engine.maxBind - this.engine.align - 16) {
      throw new MonobenchError(`webgpu: scratch ${name} of ${n} elements exceeds one storage binding`);
    }
    return this.engine.range(this.engine.scratch(name, Math.max(16, n * 4)), 0, Math.max(n, 1), vec4);
  }

  /** Range for an array<vec4<f32>> binding when `vec` (base then in vec4 units, see `vb`). */
  private rv(t: Tensor, start: number, count: number, vec: boolean): Range {
    return this.engine.range(this.g(t).buffer, start, count, vec);
  }

  private dummy(): Range {
    return this.engine.dummyRange();
  }

  /** Elements of partial sums that fit in one binding. */
  private partCap(): number {
    return Math.floor((this.engine.maxBind - this.engine.align - 16) / 4);
  }

  private fillRange(rg: Range, n: number, bits: number): void {
    this.engine.dispatch(
      this.k("fill", K.fillKernel),
      [rg],
      params().u(n).u(rg.base).u(bits >>> 0),
      Math.ceil(n / 256),
    );
  }

  private newAccum(name: string, d: number): Accum {
    const al = this.engine.align / 4;
    const compOff = Math.ceil(Math.max(d, 1) / al) * al;
    const n = compOff + Math.max(d, 1);
    const buf = this.engine.scratch(name, n * 4);
    this.engine.clear(buf, 0, n * 4);
    return { buf, d, compOff };
  }

  private fold(part: Range, P: number, d: number, sign: number, a: Accum): void {
    if (P <= 0 || d <= 0) return;
    const acc = this.engine.range(a.buf, 0, a.d);
    const comp = this.engine.range(a.buf, a.compOff, a.d);
    this.engine.dispatch(
      this.k("fold", K.foldKernel),
      [part, acc, comp],
      params().u(P).u(d).f(sign).u(part.base).u(acc.base).u(comp.base),
      d,
    );
  }

  private finish(a: Accum, d: number, scale: number, accumulate: boolean, out: Range): void {
    if (d <= 0) return;
    const acc = this.engine.range(a.buf, 0, a.d);
    const comp = this.engine.range(a.buf, a.compOff, a.d);
    this.engine.dispatch(
      this.k("finish", K.finishKernel),
      [acc, comp, out],
      params().u(d).f(scale).b(accumulate).u(acc.base).u(comp.base).u(out.base),
      Math.ceil(d / 64),
    );
  }

  /**
   * Rank in a sample of S out of n values whose value is, with high probability, just below the
   * k-th largest of all n: a few standard deviations above the expected rank k·S/n. Capped at
   * S + 1 (= no threshold).
   */
  private static sampleRank(k: number, S: number, n: number): number {
    const m = (k * S) / Math.max(n, 1);
    return Math.max(1, Math.min(S + 1, Math.ceil(m + 3 * Math.sqrt(m) + 3)));
  }

  /** Split [0, n) into pieces of at most `per`. */
  private static chunks(n: number, per: number): [number, number][] {
    const out: [number, number][] = [];
    for (let s = 0; s < n; s += per) out.push([s, Math.min(per, n - s)]);
    return out;
  }

  /** Latent segments: each group interval split into pieces of at most `per` latents. */
  private static segments(groups: number[], per: number, keepEmpty: boolean): Segment[] {
    const out: Segment[] = [];
    let lo = 0;
    groups.forEach((hi, g) => {
      if (hi === lo && keepEmpty) out.push({ g, lo, hi });
      for (let s = lo; s < hi; s += per) out.push({ g, lo: s, hi: Math.min(s + per, hi) });
      lo = hi;
    });
    return out;
  }

  private static checkGroups(groups: number[], cols: number, what: string): void {
    if (groups.length === 0) throw new MonobenchError(`${what}: groups must not be empty`);
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i];
      if (!Number.isInteger(g) || g < 0 || (i > 0 && g <= groups[i - 1])) {
        throw new MonobenchError(`${what}: groups must be strictly increasing integers (got [${groups}])`);
      }
    }
    if (groups[groups.length - 1] !== cols) {
      throw new MonobenchError(`${what}: the last group bound must equal the number of latents (${cols})`);
    }
  }

  // ---- memory ---------------------------------------------------------------------------------
  private alloc(shape: readonly number[], dtype: DType): GpuTensor {
    const n = prod(shape);
    return new GpuTensor([...shape], dtype, n, this.engine.createBuffer(n * 4));
  }

  tensor(data: Float32Array | Uint32Array, shape: number[]): Tensor {
    const n = prod(shape);
    if (data.length !== n) {
      throw new MonobenchError(`tensor data has ${data.length} elements, shape [${shape}] needs ${n}`);
    }
    const t = this.alloc(shape, data instanceof Uint32Array ? "u32" : "f32");
    this.write(t, data);
    return t;
  }

  zeros(shape: number[], dtype: DType = "f32"): Tensor {
    return this.alloc(shape, dtype); // WebGPU buffers are zero-initialised
  }

  write(t: Tensor, data: Float32Array | Uint32Array, offset = 0): void {
    const gt = this.g(t);
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > gt.size) {
      throw new MonobenchError("write past the end of a tensor");
    }
    if (data.length === 0) return;
    let src: Float32Array | Uint32Array = data;
    if (gt.dtype === "u32" && !(data instanceof Uint32Array)) src = Uint32Array.from(data);
    if (gt.dtype === "f32" && !(data instanceof Float32Array)) src = Float32Array.from(data);
    this.engine.writeTo(gt.buffer, offset * 4, new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
  }

  async read(t: Tensor): Promise<Float32Array | Uint32Array> {
    const gt = this.g(t);
    if (gt.size === 0) {
      await this.sync();
      return gt.dtype === "u32" ? new Uint32Array(0) : new Float32Array(0);
    }
    const ab = await this.engine.readFrom(gt.buffer, 0, gt.size * 4);
    return gt.dtype === "u32" ? new Uint32Array(ab) : new Float32Array(ab);
  }

  fill(t: Tensor, value: number): void {
    const gt = this.g(t);
    if (gt.size === 0) return;
    const bits = gt.dtype === "u32" ? new Uint32Array([value])[0] : f32Bits(value);
    if (bits === 0) {
      this.engine.clear(gt.buffer, 0, gt.size * 4);
      return;
    }
    for (const [s, n] of WebGpuBackend.chunks(gt.size, this.engine.elemsPerBinding())) {
      this.fillRange(this.r(gt, s, n), n, bits);
    }
  }

  copy(src: Tensor, dst: Tensor): void {
    const a = this.g(src), b = this.g(dst);
    if (a.size !== b.size || a.dtype !== b.dtype) throw new MonobenchError("copy: size/dtype mismatch");
    if (a === b) return;
    this.engine.copy(a.buffer, 0, b.buffer, 0, a.size * 4);
  }

  dispose(t: Tensor): void {
    const gt = t as GpuTensor;
    if (!(gt instanceof GpuTensor) || gt.disposed) return;
    gt.disposed = true;
    this.engine.destroyLater(gt.buffer);
  }

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

  disposeCodes(c: Codes | CodesT): void {
    if ("rowPtr" in c) {
      this.dispose(c.rowPtr);
      this.dispose(c.idx);
      this.dispose(c.val);
    } else {
      this.dispose(c.colPtr);
      this.dispose(c.row);
      this.dispose(c.entry);
    }
  }

  sync(): Promise<void> {
    return this.engine.sync();
  }

  destroy(): void {
    this.engine.destroy();
  }

  // ---- forward --------------------------------------------------------------------------------
  encode(x: Tensor, Wenc: Tensor, benc: Tensor, bdec: Tensor, pre: Tensor): void {
    const X = this.g(x, "f32"), W = this.g(Wenc, "f32"), be = this.g(benc, "f32");
    const bd = this.g(bdec, "f32"), P = this.g(pre, "f32");
    const d = bd.size, w = be.size, B = d > 0 ? X.size / d : 0;
    if (!Number.isInteger(B) || W.size !== w * d || P.size !== B * w) {
      throw new MonobenchError("encode: shape mismatch");
    }
    if (B === 0 || w === 0) return;
    const vec = d % 4 === 0 && d > 0;
    const V = vec ? 4 : 1;
    const kern = this.k(vec ? "encode4" : "encode1", () => K.encodeKernel(vec));
    const rowsB = Math.min(
      this.engine.rowsPerBinding(Math.max(d, 1), "x"),
      this.engine.rowsPerBinding(w, "pre"),
      64 * 65535,
    );
    const latC = Math.min(this.engine.rowsPerBinding(Math.max(d, 1), "Wenc"), 128 * 65535);
    this.whole(bd, "bdec");
    const bdr = this.engine.range(bd.buffer, 0, d, vec);
    for (const [b0, nb] of WebGpuBackend.chunks(B, rowsB)) {
      const xr = this.engine.range(X.buffer, b0 * d, nb * d, vec), pr = this.r(P, b0 * w, nb * w);
      for (const [j0, nj] of WebGpuBackend.chunks(w, latC)) {
        const wr = this.engine.range(W.buffer, j0 * d, nj * d, vec), ber = this.r(be, j0, nj);
        this.engine.dispatch(
          kern,
          [xr, wr, ber, bdr, pr],
          params().u(nb).u(nj).u(d / V).u(xr.base / V).u(wr.base / V).u(ber.base).u(bdr.base / V)
            .u(pr.base + j0).u(w),
          [Math.ceil(nj / 128), Math.ceil(nb / 64)],
        );
      }
    }
  }

  kthLargest(values: Tensor, k: number, out: Tensor, slot: number): void {
    const v = this.g(values, "f32");
    const o = this.g(out, "f32");
    if (!Number.isInteger(slot) || slot < 0 || slot >= o.size) {
      throw new MonobenchError("kthLargest: bad slot");
    }
    const outR = this.r(o, slot, 1);
    const n = v.size;
    if (!(k >= 1) || k > n) {
      this.fillRange(outR, 1, NEG_INF_BITS);
      return;
    }
    const kk = Math.ceil(k);
    const hs = this.scratchRange("kth.hs", K.KTH.WORDS);
    const capC = Math.min(n, KTH_CAND, this.partCap());
    const cand = this.scratchRange("kth.cand", capC);
    this.engine.dispatch(this.k("kthInit", K.kthInitKernel), [hs], params().u(kk), 1);
    const chunks = WebGpuBackend.chunks(n, this.engine.elemsPerBinding());
    const ranges = chunks.map(([s, c]) => this.r(v, s, c));
    // 1. strided sample → threshold = r-th largest of the sample, r a few deviations above the
    //    expected sample rank of the k-th largest (so that usually k ≤ #(keys ≥ t) ≪ capacity).
    const S = Math.min(n, KTH_SAMPLE, this.partCap()), stride = Math.floor(n / S);
    const r = WebGpuBackend.sampleRank(kk, S, n);
    const sample = this.scratchRange("kth.sample", S);
    const sK = this.k("kthSample", K.kthSampleKernel);
    chunks.forEach(([s, c], ci) => {
      const j0 = Math.ceil(s / stride), j1 = Math.min(S, Math.ceil((s + c) / stride));
      if (j1 <= j0) return;
      const vr = ranges[ci];
      this.engine.dispatch(
        sK,
        [vr, sample],
        params().u(j1 - j0).u(j0).u(stride).u((vr.base - s) >>> 0).u(sample.base).u(s + c),
        Math.ceil((j1 - j0) / 256),
      );
    });
    const tb = this.engine.range(hs.buffer, K.KTH.TBITS, 1);
    this.engine.dispatch(
      this.k("kthRows", K.kthRowsKernel),
      [sample, this.dummy(), tb],
      params().u(1).u(S).u(sample.base).u(r).b(false).u(0).u(tb.base).u(
        WebGpuBackend.sampleRank(r, Math.min(S, 1024), S),
      ),
      1,
    );
    // 2. candidates: keys at or above the threshold.
    const compact = this.k("kthCompact", K.kthCompactKernel);
    chunks.forEach(([, c], ci) => {
      const vr = ranges[ci];
      this.engine.dispatch(
        compact,
        [vr, hs, cand],
        params().u(c).u(vr.base).u(capC).u(KTH_EPW),
        Math.ceil(c / KTH_EPW),
      );
    });
    this.engine.dispatch(this.k("kthDecide", K.kthDecideKernel), [hs], params().u(capC), 1);
    // 3. radix digits on the candidates, or on the data when the candidate path failed.
    const hist = this.k("kthHist", K.kthHistKernel);
    const sel = this.k("kthSelect", K.kthSelectKernel);
    KTH_DIGITS.forEach(([shift, width], p) => {
      const top = shift + width;
      const hm = top >= 32 ? 0 : (~((1 << top) - 1)) >>> 0;
      const dm = (1 << width) - 1;
      chunks.forEach(([, c], ci) => {
        const vr = ranges[ci];
        this.engine.dispatch(
          hist,
          [vr, hs, cand],
          params().u(c).u(vr.base).u(shift).u(hm).u(KTH_EPW).u(dm).u(1),
          Math.ceil(c / KTH_EPW),
        );
      });
      this.engine.dispatch(
        hist,
        [ranges[0], hs, cand],
        params().u(capC).u(0).u(shift).u(hm).u(KTH_EPW).u(dm).u(2),
        Math.ceil(capC / KTH_EPW),
      );
      const last = p === KTH_DIGITS.length - 1;
      this.engine.dispatch(sel, [hs, outR], params().u(shift).b(last).u(outR.base), 1);
    });
  }

  kthLargestRows(values: Tensor, k: number, mask: Tensor | null, out: Tensor): void {
    const v = this.g(values, "f32"), o = this.g(out, "f32");
    const B = o.size;
    if (B === 0) return;
    const w = v.size / B;
    if (!Number.isInteger(w)) throw new MonobenchError("kthLargestRows: shape mismatch");
    const mr = mask ? this.whole(this.g(mask, "u32"), "mask", w) : this.dummy();
    const kk = k >= 1 ? Math.min(Math.ceil(k), 0xffffffff) : 0;
    const kern = this.k("kthRows", K.kthRowsKernel);
    const rank = WebGpuBackend.sampleRank(kk, Math.min(w, 1024), w);
    for (const [r0, nr] of WebGpuBackend.chunks(B, this.engine.rowsPerBinding(Math.max(w, 1), "values"))) {
      const vr = this.r(v, r0 * w, nr * w), or = this.r(o, r0, nr);
      this.engine.dispatch(
        kern,
        [vr, mr, or],
        params().u(nr).u(w).u(vr.base).u(kk).b(!!mask).u(mr.base).u(or.base).u(rank),
        nr,
      );
    }
  }

  gather(values: Tensor, thr: Threshold, mask: Tensor | null, strict: boolean, out: Codes): void {
    const v = this.g(values, "f32");
    const B = out.rows, w = out.cols;
    if (v.size !== B * w) throw new MonobenchError("gather: shape mismatch");
    const rp = this.g(out.rowPtr, "u32");
    const idx = this.whole(this.g(out.idx, "u32"), "codes.idx"),
      val = this.whole(this.g(out.val, "f32"), "codes.val");
    const mr = mask ? this.whole(this.g(mask, "u32"), "mask", w) : this.dummy();
    const tt = this.g(thr.t, "f32");
    if (thr.kind === "scalar" && !(Number.isInteger(thr.slot) && thr.slot >= 0 && thr.slot < tt.size)) {
      throw new MonobenchError("gather: bad threshold slot");
    }
    if (thr.kind === "rows" && tt.size < B) throw new MonobenchError("gather: threshold tensor too small");
    const rpr = this.whole(rp, "codes.rowPtr", B + 1);
    if (B === 0) {
      this.engine.clear(rp.buffer, 0, 4);
      return;
    }
    const cnt = this.scratchRange("gather.cnt", B);
    const offs = this.scratchRange("gather.offs", B + 1);
    const rowsPer = this.engine.rowsPerBinding(Math.max(w, 1), "values");
    const chunks = WebGpuBackend.chunks(B, rowsPer);
    const thrRange = (r0: number, nr: number) =>
      thr.kind === "scalar" ? this.r(tt, thr.slot, 1) : this.r(tt, r0, nr);
    const cK = this.k("gatherCount", K.gatherCountKernel);
    for (const [r0, nr] of chunks) {
      const vr = this.r(v, r0 * w, nr * w), tr = thrRange(r0, nr);
      this.engine.dispatch(
        cK,
        [vr, tr, mr, cnt],
        params().u(nr).u(w).u(vr.base).b(thr.kind === "rows").u(tr.base).b(!!mask).u(mr.base).b(strict)
          .u(cnt.base + r0),
        nr,
      );
    }
    this.engine.dispatch(
      this.k("scan", K.scanKernel),
      [cnt, offs, rpr],
      params().u(B).u(out.cap).u(cnt.base).u(offs.base).u(rpr.base),
      1,
    );
    const wK = this.k("gatherWrite", K.gatherWriteKernel);
    for (const [r0, nr] of chunks) {
      const vr = this.r(v, r0 * w, nr * w), tr = thrRange(r0, nr);
      this.engine.dispatch(
        wK,
        [vr, tr, mr, offs, idx, val],
        params().u(nr).u(w).u(vr.base).b(thr.kind === "rows").u(tr.base).b(!!mask).u(mr.base).b(strict)
          .u(offs.base + r0).u(out.cap),
        nr,
      );
    }
  }

  transpose(codes: Codes, out: CodesT): void {
    const w = out.cols;
    const rp = this.whole(this.g(codes.rowPtr, "u32"), "codes.rowPtr");
    const idx = this.whole(this.g(codes.idx, "u32"), "codes.idx");
    const cp = this.whole(this.g(out.colPtr, "u32"), "codesT.colPtr", w + 1);
    const rowR = this.whole(this.g(out.row, "u32"), "codesT.row");
    const entR = this.whole(this.g(out.entry, "u32"), "codesT.entry");
    if (rp.base !== 0 || idx.base !== 0) throw new Error("webgpu: internal error: codes binding base");
    const cnt = this.scratchRange("transpose.cnt", w + 1);
    const fillPos = this.scratchRange("transpose.fill", w + 1);
    this.engine.clear(cnt.buffer, 0, (w + 1) * 4);
    const cap = codes.cap, capT = Math.min(out.cap, this.g(out.row).size);
    const nG = Math.ceil(Math.min(cap, capT) / 256);
    this.engine.dispatch(
      this.k("transposeCount", K.transposeCountKernel),
      [rp, idx, cnt],
      params().u(Math.min(cap, capT)).u(codes.rows).u(w),
      nG,
    );
    this.engine.dispatch(
      this.k("scan", K.scanKernel),
      [cnt, cp, fillPos],
      params().u(w).u(0xffffffff).u(cnt.base).u(cp.base).u(fillPos.base),
      1,
    );
    this.engine.dispatch(
      this.k("transposeScatter", K.transposeScatterKernel),
      [rp, idx, fillPos, rowR, entR],
      params().u(Math.min(cap, capT)).u(codes.rows).u(w),
      nG,
    );
  }

  decode(codes: Codes, Wdec: Tensor, bdec: Tensor | null, groups: number[], out: Tensor): void {
    const W = this.g(Wdec, "f32"), o = this.g(out, "f32");
    const B = codes.rows, w = codes.cols, G = groups.length;
    WebGpuBackend.checkGroups(groups, w, "decode");
    const d = w > 0 ? W.size / w : 0;
    if (!Number.isInteger(d) || o.size !== G * B * d) throw new MonobenchError("decode: out shape mismatch");
    if (B === 0 || d === 0) return;
    if (bdec && this.g(bdec, "f32").size !== d) throw new MonobenchError("decode: bdec shape mismatch");
    const rp = this.whole(this.g(codes.rowPtr, "u32"), "codes.rowPtr");
    const idx = this.whole(this.g(codes.idx, "u32"), "codes.idx");
    const val = this.whole(this.g(codes.val, "f32"), "codes.val");
    const vec = d % 4 === 0, V = vec ? 4 : 1;
    if (bdec) this.whole(bdec, "bdec");
    const bdr = bdec ? this.rv(bdec, 0, d, vec) : null;
    const per = this.engine.rowsPerBinding(d, "Wdec/out");
    const segs = WebGpuBackend.segments(groups, per, true);
    const kern = this.k(vec ? "decode4" : "decode1", () => K.decodeKernel(vec));
    for (const [r0, nr] of WebGpuBackend.chunks(B, per)) {
      let prevG = -1;
      for (const s of segs) {
        const first = s.g !== prevG;
        prevG = s.g;
        let mode = 3, srcR = this.dummy();
        if (first && s.g === 0) {
          mode = bdr ? 1 : 0;
          if (bdr) srcR = bdr;
        } else if (first) {
          // out[g] starts from the previous prefix, read from a scratch copy: a second binding of
          // `out` could overlap after offset alignment (Dawn rejects that) and WebGPU forbids
          // copies within one buffer.
          mode = 2;
          srcR = this.scratchRange("decode.prev", nr * d, vec);
          this.engine.copy(o.buffer, ((s.g - 1) * B + r0) * d * 4, srcR.buffer, 0, nr * d * 4);
        }
        const wr = s.hi > s.lo ? this.rv(W, s.lo * d, (s.hi - s.lo) * d, vec) : this.dummy();
        const outR = this.rv(o, (s.g * B + r0) * d, nr * d, vec);
        this.engine.dispatch(
          kern,
          [rp, idx, val, wr, srcR, outR],
          params().u(nr).u(d / V).u(r0).u(s.lo).u(s.hi).u(wr.base / V).u(mode).u(srcR.base / V)
            .u(outR.base / V).u(codes.cap),
          nr,
        );
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
    const xh = this.g(xhat, "f32"), X = this.g(x, "f32"), gS = this.g(gradS, "f32");
    const G = weights.length, n = X.size, B = xh.shape[1];
    if (xh.size !== G * n || gS.size < G * n) throw new MonobenchError("reconLossGrad: shape mismatch");
    const a = this.newAccum("acc.recon", 1);
    const per = Math.max(1024, Math.floor(this.engine.elemsPerBinding() / 1024) * 1024);
    const kern = this.k("recon", K.reconKernel);
    for (let g = G - 1; g >= 0; g--) {
      for (const [i0, nc] of WebGpuBackend.chunks(n, per)) {
        const P = Math.ceil(nc / 1024);
        const part = this.scratchRange("part", P);
        const xhr = this.r(xh, g * n + i0, nc), xr = this.r(X, i0, nc), gsr = this.r(gS, g * n + i0, nc);
        // gradS[g] = gradS[g+1] + ...: read gradS[g+1] from a scratch copy (no aliasing bindings).
        let gnr = this.dummy();
        if (g < G - 1) {
          gnr = this.scratchRange("recon.next", nc);
          this.engine.copy(gS.buffer, ((g + 1) * n + i0) * 4, gnr.buffer, 0, nc * 4);
        }
        this.engine.dispatch(
          kern,
          [xhr, xr, gnr, gsr, part],
          params().u(nc).u(xhr.base).u(xr.base).u(gnr.base).u(gsr.base).b(g < G - 1).f(weights[g] * (2 / B))
            .f(weights[g]).u(part.base),
          P,
        );
        this.fold(part, P, 1, 1, a);
      }
    }
    this.finish(a, 1, 1 / B, false, this.slotRange(stats, slot));
  }

  private slotRange(t: Tensor, slot: number): Range {
    const gt = this.g(t, "f32");
    if (!Number.isInteger(slot) || slot < 0 || slot >= gt.size) {
      throw new MonobenchError(`bad stats slot ${slot}`);
    }
    return this.r(gt, slot, 1);
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
    const X = this.g(x, "f32"),
      xh = this.g(xhat, "f32"),
      ea = this.g(auxRecon, "f32"),
      gS = this.g(gradS, "f32");
    const [B, d] = X.shape;
    const n = B * d;
    const G = xh.shape[0];
    if (xh.size !== G * n || ea.size !== n || gS.size < n) {
      throw new MonobenchError("auxLossGrad: shape mismatch");
    }
    const out = this.slotRange(stats, slot);
    const last = (G - 1) * n;
    const aE = this.newAccum("acc.auxE", d),
      aN = this.newAccum("acc.auxN", 1),
      aD = this.newAccum("acc.auxD", 1);
    const rowsPer = Math.min(
      this.engine.rowsPerBinding(Math.max(d, 1), "x"),
      ROW_BLOCK * Math.max(1, Math.floor(this.partCap() / Math.max(d, 1))),
    );
    const chunks = WebGpuBackend.chunks(B, rowsPer);
    const nib = Math.ceil(d / 64);
    const colsK = this.k("auxCols", K.auxColsKernel);
    const mean = this.scratchRange("aux.mean", Math.max(d, 1));
    const cols = (mode: number) => {
      for (const [r0, nr] of chunks) {
        const P = Math.ceil(nr / ROW_BLOCK);
        const pA = this.scratchRange("part", P * d),
          pB = mode === 0 ? this.scratchRange("partB", P * d) : this.dummy();
        const xr = this.r(X, r0 * d, nr * d), xhr = this.r(xh, last + r0 * d, nr * d);
        const ear = mode === 0 ? this.r(ea, r0 * d, nr * d) : this.dummy();
        this.engine.dispatch(
          colsK,
          [xr, xhr, ear, mode === 1 ? mean : this.dummy(), pA, pB],
          params().u(nr).u(d).u(xr.base).u(xhr.base).u(ear.base).u(ROW_BLOCK).u(nib).u(mode).u(mean.base)
            .u(pA.base).u(pB.base),
          nib * P,
        );
        if (mode === 0) {
          this.fold(pA, P, d, 1, aE);
          this.fold(pB, P * d, 1, 1, aN);
        } else {
          this.fold(pA, P * d, 1, 1, aD);
        }
      }
    };
    if (n > 0) {
      cols(0);
      this.finish(aE, d, 1 / B, false, mean);
      cols(1);
    }
    const sc = this.scratchRange("aux.sc", 1);
    const nR = this.engine.range(aN.buf, 0, aN.compOff + 1),
      dR = this.engine.range(aD.buf, 0, aD.compOff + 1);
    this.engine.dispatch(
      this.k("auxFinal", K.auxFinalKernel),
      [nR, dR, out, sc],
      params().f(alpha).f(1 / B).u(nR.base).u(dR.base).u(out.base).u(sc.base).u(nR.base + aN.compOff)
        .u(dR.base + aD.compOff).f(-2 / B),
      1,
    );
    const gK = this.k("auxGrad", K.auxGradKernel);
    for (const [i0, nc] of WebGpuBackend.chunks(n, this.engine.elemsPerBinding())) {
      const xr = this.r(X, i0, nc), xhr = this.r(xh, last + i0, nc), ear = this.r(ea, i0, nc);
      const gsr = this.r(gS, i0, nc);
      this.engine.dispatch(
        gK,
        [xr, xhr, ear, gsr, sc],
        params().u(nc).u(xr.base).u(xhr.base).u(ear.base).u(gsr.base).u(sc.base),
        Math.ceil(nc / 256),
      );
    }
  }

  l1Grad(codes: Codes, gradVal: Tensor, lambda: number, stats: Tensor, slot: number): void {
    const rp = this.whole(this.g(codes.rowPtr, "u32"), "codes.rowPtr");
    const val = this.whole(this.g(codes.val, "f32"), "codes.val");
    const gv = this.whole(this.g(gradVal, "f32"), "gradVal");
    const out = this.slotRange(stats, slot);
    const a = this.newAccum("acc.l1", 1);
    const cap = Math.min(codes.cap, this.g(gradVal).size);
    if (cap > 0) {
      const P = Math.ceil(cap / 256);
      const part = this.scratchRange("part", P);
      this.engine.dispatch(
        this.k("l1", K.l1Kernel),
        [rp, val, gv, part],
        params().u(cap).u(codes.rows).f(lambda).u(part.base),
        P,
      );
      this.fold(part, P, 1, 1, a);
    }
    this.finish(a, 1, lambda, false, out);
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
    const gS = this.g(gradS, "f32"), W = this.g(Wdec, "f32"), gvT = this.g(gradVal, "f32");
    const B = codes.rows, w = codes.cols, G = groups.length;
    WebGpuBackend.checkGroups(groups, w, "decodeBackward");
    const d = w > 0 ? W.size / w : 0;
    if (!Number.isInteger(d) || gS.size < G * B * d) {
      throw new MonobenchError("decodeBackward: shape mismatch");
    }
    if (!accumulate) this.engine.clear(gvT.buffer, 0, gvT.size * 4);
    if (B === 0) return;
    const rp = this.whole(this.g(codes.rowPtr, "u32"), "codes.rowPtr");
    const idx = this.whole(this.g(codes.idx, "u32"), "codes.idx");
    const gv = this.whole(gvT, "gradVal");
    const per = this.engine.rowsPerBinding(Math.max(d, 1), "Wdec/gradS");
    const segs = WebGpuBackend.segments(groups, per, false);
    const vec = d % 4 === 0, V = vec ? 4 : 1;
    const kern = this.k(vec ? "decodeBackward4" : "decodeBackward1", () => K.decodeBackwardKernel(vec));
    const cap = Math.min(codes.cap, gvT.size);
    for (const [r0, nr] of WebGpuBackend.chunks(B, per)) {
      for (const s of segs) {
        const wr = this.rv(W, s.lo * d, (s.hi - s.lo) * d, vec);
        const gsr = this.rv(gS, (s.g * B + r0) * d, nr * d, vec);
        this.engine.dispatch(
          kern,
          [rp, idx, wr, gsr, gv],
          params().u(nr).u(d / V).u(r0).u(s.lo).u(s.hi).u(wr.base / V).u(gsr.base / V).u(cap),
          nr,
        );
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
    const X = this.g(x, "f32"), bd = this.g(bdec, "f32"), gS = this.g(gradS, "f32");
    const gWe = this.g(gradWenc, "f32"), gbe = this.g(gradBenc, "f32");
    const gWd = gradWdec ? this.g(gradWdec, "f32") : null;
    const B = codes.rows, d = bd.size, w = codesT.cols, G = groups.length;
    WebGpuBackend.checkGroups(groups, w, "latentGrads");
    if (X.size !== B * d || gWe.size !== w * d || gbe.size !== w || (gWd && gWd.size !== w * d)) {
      throw new MonobenchError("latentGrads: shape mismatch");
    }
    if (gWd && gS.size < G * B * d) throw new MonobenchError("latentGrads: gradS shape mismatch");
    if (w === 0) return;
    const rowT = this.whole(this.g(codesT.row, "u32"), "codesT.row");
    const entT = this.whole(this.g(codesT.entry, "u32"), "codesT.entry");
    const gv = this.whole(this.g(gradVal, "f32"), "gradVal");
    const val = this.whole(this.g(codes.val, "f32"), "codes.val");
    this.whole(bd, "bdec");
    const vec = d % 4 === 0, V = vec ? 4 : 1;
    const bdr = this.rv(bd, 0, d, vec);
    const cpT = this.g(codesT.colPtr, "u32");
    const per = this.engine.rowsPerBinding(Math.max(d, 1), "x/gradWenc");
    const segs = WebGpuBackend.segments(groups, per, false);
    const rows = WebGpuBackend.chunks(Math.max(B, 1), per);
    const kern = this.k(vec ? "latentGrads4" : "latentGrads1", () => K.latentGradsKernel(vec));
    for (const s of segs) {
      const nl = s.hi - s.lo;
      const cpr = this.r(cpT, s.lo, nl + 1);
      const wer = this.rv(gWe, s.lo * d, nl * d, vec), ber = this.r(gbe, s.lo, nl);
      const wdr = gWd ? this.rv(gWd, s.lo * d, nl * d, vec) : this.dummy();
      rows.forEach(([r0, nr], ri) => {
        const xr = this.rv(X, r0 * d, nr * d, vec);
        const gsr = gWd ? this.rv(gS, (s.g * B + r0) * d, nr * d, vec) : this.dummy();
        this.engine.dispatch(
          kern,
          [cpr, rowT, entT, gv, val, xr, bdr, gsr, wer, ber, wdr],
          params().u(nl).u(d / V).u(s.lo).u(r0).u(r0 + nr).u(xr.base / V).u(bdr.base / V).u(gsr.base / V)
            .u(wer.base / V).u(ber.base).u(wdr.base / V).b(ri === 0).b(!!gWd).u(cpr.base),
          nl,
        );
      });
    }
  }

  bdecGrad(
    codes: Codes,
    gradVal: Tensor,
    Wenc: Tensor,
    gradS: Tensor,
    withDecodePath: boolean,
    gradBdec: Tensor,
    accumulate: boolean,
  ): void {
    const gb = this.g(gradBdec, "f32"), W = this.g(Wenc, "f32"), gS = this.g(gradS, "f32");
    const d = gb.size, B = codes.rows, w = codes.cols;
    if (W.size !== w * d || (withDecodePath && gS.size < B * d)) {
      throw new MonobenchError("bdecGrad: shape mismatch");
    }
    if (d === 0) return;
    const a = this.newAccum("acc.bdec", d);
    const pc = Math.max(1, Math.floor(this.partCap() / d));
    const nib = Math.ceil(d / 64);
    if (withDecodePath && B > 0) {
      const rowsPer = Math.min(this.engine.rowsPerBinding(d, "gradS"), ROW_BLOCK * pc);
      const kern = this.k("colSum", K.colSumKernel);
      for (const [r0, nr] of WebGpuBackend.chunks(B, rowsPer)) {
        const P = Math.ceil(nr / ROW_BLOCK);
        const part = this.scratchRange("part", P * d);
        const sr = this.r(gS, r0 * d, nr * d);
        this.engine.dispatch(
          kern,
          [sr, part],
          params().u(nr).u(d).u(sr.base).u(ROW_BLOCK).u(nib).u(part.base),
          nib * P,
        );
        this.fold(part, P, d, 1, a);
      }
    }
    const cap = Math.min(codes.cap, this.g(gradVal).size);
    if (cap > 0 && w > 0) {
      const rp = this.whole(this.g(codes.rowPtr, "u32"), "codes.rowPtr");
      const idx = this.whole(this.g(codes.idx, "u32"), "codes.idx");
      const gv = this.whole(this.g(gradVal, "f32"), "gradVal");
      const nBlk = Math.max(1, Math.min(256, pc, Math.ceil(cap / 64)));
      const EB = Math.ceil(cap / nBlk);
      const kern = this.k("entryWeightSum", K.entryWeightSumKernel);
      for (const [lo, nl] of WebGpuBackend.chunks(w, this.engine.rowsPerBinding(d, "Wenc"))) {
        const part = this.scratchRange("part", nBlk * d);
        const wr = this.r(W, lo * d, nl * d);
        this.engine.dispatch(
          kern,
          [rp, idx, gv, wr, part],
          params().u(cap).u(B).u(d).u(EB).u(lo).u(lo + nl).u(wr.base).u(nib).u(part.base),
          nib * nBlk,
        );
        this.fold(part, nBlk, d, -1, a);
      }
    }
    this.finish(a, d, 1, accumulate, this.whole(gb, "gradBdec"));
  }

  // ---- optimiser ------------------------------------------------------------------------------
  sumSquares(ts: Tensor[], stats: Tensor, slot: number): void {
    const out = this.slotRange(stats, slot);
    const a = this.newAccum("acc.sq", 1);
    const kern = this.k("sumSquares", K.sumSquaresKernel);
    const maxP = Math.min(this.partCap(), 4096);
    for (const t of ts) {
      const gt = this.g(t, "f32");
      for (const [s, n] of WebGpuBackend.chunks(gt.size, this.engine.elemsPerBinding())) {
        const epw = Math.max(1024, Math.ceil(Math.ceil(n / maxP) / 256) * 256);
        const P = Math.ceil(n / epw);
        const part = this.scratchRange("part", P);
        const ar = this.r(gt, s, n);
        this.engine.dispatch(kern, [ar, part], params().u(n).u(ar.base).u(epw).u(part.base), P);
        this.fold(part, P, 1, 1, a);
      }
    }
    this.finish(a, 1, 1, false, out);
  }

  private rowOp(W: GpuTensor, Gm: GpuTensor | null, mode: number): void {
    const [w, d] = W.shape;
    if (W.shape.length !== 2 || (Gm && Gm.size !== W.size)) {
      throw new MonobenchError("row op: shape mismatch");
    }
    if (w === 0 || d === 0) return;
    const kern = this.k("rowOp", K.rowOpKernel);
    for (const [r0, nr] of WebGpuBackend.chunks(w, this.engine.rowsPerBinding(d, "W"))) {
      const wr = this.r(W, r0 * d, nr * d);
      const gr = Gm ? this.r(Gm, r0 * d, nr * d) : this.dummy();
      this.engine.dispatch(
        kern,
        [wr, gr],
        params().u(nr).u(d).u(wr.base).u(gr.base).u(mode),
        Math.ceil(nr / 64),
      );
    }
  }

  projectDecoderGrad(Wdec: Tensor, gradWdec: Tensor): void {
    this.rowOp(this.g(Wdec, "f32"), this.g(gradWdec, "f32"), 0);
  }

  adam(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hp: AdamParams, clip: ClipParams | null): void {
    const p = this.g(param, "f32"), g = this.g(grad, "f32"), M = this.g(m, "f32"), V = this.g(v, "f32");
    if (g.size !== p.size || M.size !== p.size || V.size !== p.size) {
      throw new MonobenchError("adam: size mismatch");
    }
    const bc1 = 1 - Math.pow(hp.beta1, hp.step), bc2 = 1 - Math.pow(hp.beta2, hp.step);
    const ns = clip ? this.slotRange(clip.normSq, clip.slot) : this.dummy();
    const kern = this.k("adam", K.adamKernel);
    for (const [s, n] of WebGpuBackend.chunks(p.size, this.engine.elemsPerBinding())) {
      const pr = this.r(p, s, n), gr = this.r(g, s, n), mr = this.r(M, s, n), vr = this.r(V, s, n);
      this.engine.dispatch(
        kern,
        [pr, gr, mr, vr, ns],
        params().u(n).u(pr.base).u(gr.base).u(mr.base).u(vr.base).f(hp.beta1).f(hp.beta2).f(1 - hp.beta1)
          .f(1 - hp.beta2).f(hp.lr / bc1).f(Math.sqrt(bc2)).f(hp.eps).b(!!clip).f(clip ? clip.maxNorm : 0)
          .u(ns.base),
        Math.ceil(n / 256),
      );
    }
  }

  renormRows(W: Tensor): void {
    this.rowOp(this.g(W, "f32"), null, 1);
  }

  // ---- training state -------------------------------------------------------------------------
  thresholdEma(codes: Codes, thr: Tensor, slot: number, beta: number): void {
    const tr = this.slotRange(thr, slot);
    const mn = this.scratchRange("ema.min", 1);
    this.fillRange(mn, 1, 0x7f800000);
    const cap = codes.cap;
    if (cap > 0) {
      const rp = this.whole(this.g(codes.rowPtr, "u32"), "codes.rowPtr");
      const val = this.whole(this.g(codes.val, "f32"), "codes.val");
      this.engine.dispatch(
        this.k("minPositive", K.minPositiveKernel),
        [rp, val, mn],
        params().u(cap).u(codes.rows),
        Math.ceil(cap / 256),
      );
    }
    this.engine.dispatch(this.k("ema", K.emaKernel), [mn, tr], params().f(beta).u(tr.base).f(1 - beta), 1);
  }

  updateDead(
    codesT: CodesT,
    counter: Tensor,
    deadAfter: number,
    mask: Tensor,
    stats: Tensor,
    slot: number,
  ): void {
    const c = this.g(counter, "f32"), mk = this.g(mask, "u32"), cp = this.g(codesT.colPtr, "u32");
    const w = codesT.cols;
    if (c.size < w || mk.size < w) throw new MonobenchError("updateDead: shape mismatch");
    const out = this.slotRange(stats, slot);
    const cnt = this.scratchRange("dead.cnt", 1);
    this.engine.clear(cnt.buffer, 0, 16);
    const kern = this.k("dead", K.deadKernel);
    for (const [s, n] of WebGpuBackend.chunks(w, this.engine.elemsPerBinding() - 4)) {
      const cpr = this.r(cp, s, n + 1), cr = this.r(c, s, n), mr = this.r(mk, s, n);
      this.engine.dispatch(
        kern,
        [cpr, cr, mr, cnt],
        params().u(n).u(cpr.base).u(cr.base).u(mr.base).f(codesT.rows).f(f32Ceil(deadAfter)),
        Math.ceil(n / 256),
      );
    }
    this.engine.dispatch(this.k("countToFloat", K.countToFloatKernel), [cnt, out], params().u(out.base), 1);
  }
}

/** Create a WebGPU backend on Deno's built-in WebGPU ("webgpu") or Dawn ("dawn"). Throws
 * MonobenchError when no adapter/device is available. */
export async function createWebGpuBackend(
  kind: GpuKind = "webgpu",
  opts: WebGpuOptions = {},
): Promise<WebGpuBackend> {
  const dev = await acquireDevice(kind, opts);
  return new WebGpuBackend(dev.device, kind, dev.description, opts, dev.software);
}
