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
} from "../types.ts";
import { MonobenchError } from "../../util/errors.ts";
import type { Expr } from "../../compute/expr.ts";
import { bindEw } from "../../compute/ew.ts";
import { matmulDims } from "../cpu.ts";
import { ewKernel, ewKey, type EwOp } from "./ew.ts";
import { Engine, type EngineOptions, type Kernel } from "./engine.ts";
import { chunks as pieces, type Range, segments, type Split } from "./split.ts";
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

export class WebGpuBackend implements Backend {
  readonly engine: Engine;
  private readonly split: Split;

  constructor(
    device: GPUDevice,
    readonly name: string,
    readonly description: string,
    opts: EngineOptions = {},
    /** Runs on a software adapter (see `isSoftwareAdapter`). */
    readonly software = false,
  ) {
    this.engine = new Engine(device, opts);
    this.split = this.engine.split;
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
    return this.split.range(this.g(t).buffer, start, count);
  }

  /** Bind a whole tensor (or its first n elements); it must fit in one binding. */
  private whole(t: Tensor, what: string, n = t.size): Range {
    return this.split.whole(this.g(t).buffer, n, what);
  }

  private scratchRange(name: string, n: number, vec4 = false): Range {
    if (!this.split.fits(n)) {
      throw new MonobenchError(`webgpu: scratch ${name} of ${n} elements exceeds one storage binding`);
    }
    return this.split.range(this.engine.scratch(name, Math.max(16, n * 4)), 0, Math.max(n, 1), vec4);
  }

  /** Range for an array<vec4<f32>> binding when `vec` (base then in vec4 units, see `vb`). */
  private rv(t: Tensor, start: number, count: number, vec: boolean): Range {
    return this.split.range(this.g(t).buffer, start, count, vec);
  }

  private dummy(): Range {
    return this.split.dummy();
  }

  private partCap(): number {
    return this.split.partCap();
  }

  private fillRange(rg: Range, n: number, bits: number): void {
    this.engine.dispatch(
      this.k("fill", K.fillKernel),
      [rg],
      K.FILL.pack({ n: n, base: rg.base, bits: bits >>> 0 }),
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
    const acc = this.split.range(a.buf, 0, a.d);
    const comp = this.split.range(a.buf, a.compOff, a.d);
    this.engine.dispatch(
      this.k("fold", K.foldKernel),
      [part, acc, comp],
      K.FOLD.pack({ P: P, d: d, sgn: sign, partBase: part.base, accBase: acc.base, compBase: comp.base }),
      d,
    );
  }

  private finish(a: Accum, d: number, scale: number, accumulate: boolean, out: Range): void {
    if (d <= 0) return;
    const acc = this.split.range(a.buf, 0, a.d);
    const comp = this.split.range(a.buf, a.compOff, a.d);
    this.engine.dispatch(
      this.k("finish", K.finishKernel),
      [acc, comp, out],
      K.FINISH.pack({
        d: d,
        scale: scale,
        accumulate: accumulate,
        accBase: acc.base,
        compBase: comp.base,
        outBase: out.base,
      }),
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
    for (const [s, n] of pieces(gt.size, this.split.elemsPerBinding())) {
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
      this.split.rowsPerBinding(Math.max(d, 1), "x"),
      this.split.rowsPerBinding(w, "pre"),
      64 * 65535,
    );
    const latC = Math.min(this.split.rowsPerBinding(Math.max(d, 1), "Wenc"), 128 * 65535);
    this.whole(bd, "bdec");
    const bdr = this.split.range(bd.buffer, 0, d, vec);
    for (const [b0, nb] of pieces(B, rowsB)) {
      const xr = this.split.range(X.buffer, b0 * d, nb * d, vec), pr = this.r(P, b0 * w, nb * w);
      for (const [j0, nj] of pieces(w, latC)) {
        const wr = this.split.range(W.buffer, j0 * d, nj * d, vec), ber = this.r(be, j0, nj);
        this.engine.dispatch(
          kern,
          [xr, wr, ber, bdr, pr],
          K.ENCODE.pack({
            B: nb,
            w: nj,
            dv: d / V,
            xBase: xr.base / V,
            wBase: wr.base / V,
            bencBase: ber.base,
            bdecBase: bdr.base / V,
            preBase: pr.base + j0,
            preStride: w,
          }),
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
    this.engine.dispatch(this.k("kthInit", K.kthInitKernel), [hs], K.KTH_INIT.pack({ k: kk }), 1);
    const chunks = pieces(n, this.split.elemsPerBinding());
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
        K.KTH_SAMPLE.pack({
          m: j1 - j0,
          j0: j0,
          stride: stride,
          baseShift: (vr.base - s) >>> 0,
          sampleBase: sample.base,
          chunkEnd: s + c,
        }),
        Math.ceil((j1 - j0) / 256),
      );
    });
    const tb = this.split.range(hs.buffer, K.KTH.TBITS, 1);
    this.engine.dispatch(
      this.k("kthRows", K.kthRowsKernel),
      [sample, this.dummy(), tb],
      K.KTH_ROWS.pack({
        nRows: 1,
        w: S,
        valBase: sample.base,
        k: r,
        useMask: false,
        maskBase: 0,
        outBase: tb.base,
        rank: WebGpuBackend.sampleRank(r, Math.min(S, 1024), S),
      }),
      1,
    );
    // 2. candidates: keys at or above the threshold.
    const compact = this.k("kthCompact", K.kthCompactKernel);
    chunks.forEach(([, c], ci) => {
      const vr = ranges[ci];
      this.engine.dispatch(
        compact,
        [vr, hs, cand],
        K.KTH_COMPACT.pack({ n: c, base: vr.base, cap: capC, epw: KTH_EPW }),
        Math.ceil(c / KTH_EPW),
      );
    });
    this.engine.dispatch(this.k("kthDecide", K.kthDecideKernel), [hs], K.KTH_DECIDE.pack({ cap: capC }), 1);
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
          K.KTH_HIST.pack({
            n: c,
            base: vr.base,
            shift: shift,
            highMask: hm,
            epw: KTH_EPW,
            digitMask: dm,
            source: 1,
          }),
          Math.ceil(c / KTH_EPW),
        );
      });
      this.engine.dispatch(
        hist,
        [ranges[0], hs, cand],
        K.KTH_HIST.pack({
          n: capC,
          base: 0,
          shift: shift,
          highMask: hm,
          epw: KTH_EPW,
          digitMask: dm,
          source: 2,
        }),
        Math.ceil(capC / KTH_EPW),
      );
      const last = p === KTH_DIGITS.length - 1;
      this.engine.dispatch(
        sel,
        [hs, outR],
        K.KTH_SELECT.pack({ shift: shift, last: last, outBase: outR.base }),
        1,
      );
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
    for (const [r0, nr] of pieces(B, this.split.rowsPerBinding(Math.max(w, 1), "values"))) {
      const vr = this.r(v, r0 * w, nr * w), or = this.r(o, r0, nr);
      this.engine.dispatch(
        kern,
        [vr, mr, or],
        K.KTH_ROWS.pack({
          nRows: nr,
          w: w,
          valBase: vr.base,
          k: kk,
          useMask: !!mask,
          maskBase: mr.base,
          outBase: or.base,
          rank: rank,
        }),
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
    const rowsPer = this.split.rowsPerBinding(Math.max(w, 1), "values");
    const chunks = pieces(B, rowsPer);
    const thrRange = (r0: number, nr: number) =>
      thr.kind === "scalar" ? this.r(tt, thr.slot, 1) : this.r(tt, r0, nr);
    const cK = this.k("gatherCount", K.gatherCountKernel);
    for (const [r0, nr] of chunks) {
      const vr = this.r(v, r0 * w, nr * w), tr = thrRange(r0, nr);
      this.engine.dispatch(
        cK,
        [vr, tr, mr, cnt],
        K.GATHER_COUNT.pack({
          nRows: nr,
          w: w,
          valBase: vr.base,
          thrRows: thr.kind === "rows",
          thrBase: tr.base,
          useMask: !!mask,
          maskBase: mr.base,
          strict: strict,
          rowOff: cnt.base + r0,
        }),
        nr,
      );
    }
    this.engine.dispatch(
      this.k("scan", K.scanKernel),
      [cnt, offs, rpr],
      K.SCAN.pack({ n: B, clampV: out.cap, cntBase: cnt.base, aBase: offs.base, bBase: rpr.base }),
      1,
    );
    const wK = this.k("gatherWrite", K.gatherWriteKernel);
    for (const [r0, nr] of chunks) {
      const vr = this.r(v, r0 * w, nr * w), tr = thrRange(r0, nr);
      this.engine.dispatch(
        wK,
        [vr, tr, mr, offs, idx, val],
        K.GATHER_WRITE.pack({
          nRows: nr,
          w: w,
          valBase: vr.base,
          thrRows: thr.kind === "rows",
          thrBase: tr.base,
          useMask: !!mask,
          maskBase: mr.base,
          strict: strict,
          rowOff: offs.base + r0,
          cap: out.cap,
        }),
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
      K.TRANSPOSE.pack({ cap: Math.min(cap, capT), rows: codes.rows, cols: w }),
      nG,
    );
    this.engine.dispatch(
      this.k("scan", K.scanKernel),
      [cnt, cp, fillPos],
      K.SCAN.pack({ n: w, clampV: 0xffffffff, cntBase: cnt.base, aBase: cp.base, bBase: fillPos.base }),
      1,
    );
    this.engine.dispatch(
      this.k("transposeScatter", K.transposeScatterKernel),
      [rp, idx, fillPos, rowR, entR],
      K.TRANSPOSE.pack({ cap: Math.min(cap, capT), rows: codes.rows, cols: w }),
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
    const per = this.split.rowsPerBinding(d, "Wdec/out");
    const segs = segments(groups, per, true);
    const kern = this.k(vec ? "decode4" : "decode1", () => K.decodeKernel(vec));
    for (const [r0, nr] of pieces(B, per)) {
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
          K.DECODE.pack({
            nRows: nr,
            dv: d / V,
            rowOff: r0,
            lo: s.lo,
            hi: s.hi,
            wBase: wr.base / V,
            mode: mode,
            srcBase: srcR.base / V,
            outBase: outR.base / V,
            cap: codes.cap,
          }),
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
    const per = Math.max(1024, Math.floor(this.split.elemsPerBinding() / 1024) * 1024);
    const kern = this.k("recon", K.reconKernel);
    for (let g = G - 1; g >= 0; g--) {
      for (const [i0, nc] of pieces(n, per)) {
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
          K.RECON.pack({
            n: nc,
            xhBase: xhr.base,
            xBase: xr.base,
            gnBase: gnr.base,
            gsBase: gsr.base,
            hasNext: g < G - 1,
            coef: weights[g] * (2 / B),
            wgt: weights[g],
            partBase: part.base,
          }),
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
      this.split.rowsPerBinding(Math.max(d, 1), "x"),
      ROW_BLOCK * Math.max(1, Math.floor(this.partCap() / Math.max(d, 1))),
    );
    const chunks = pieces(B, rowsPer);
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
          K.AUX_COLS.pack({
            nRows: nr,
            d: d,
            xBase: xr.base,
            xhBase: xhr.base,
            eaBase: ear.base,
            R: ROW_BLOCK,
            nib: nib,
            mode: mode,
            meanBase: mean.base,
            partABase: pA.base,
            partBBase: pB.base,
          }),
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
    const nR = this.split.range(aN.buf, 0, aN.compOff + 1),
      dR = this.split.range(aD.buf, 0, aD.compOff + 1);
    this.engine.dispatch(
      this.k("auxFinal", K.auxFinalKernel),
      [nR, dR, out, sc],
      K.AUX_FINAL.pack({
        alpha: alpha,
        invB: 1 / B,
        nBase: nR.base,
        dBase: dR.base,
        outBase: out.base,
        scBase: sc.base,
        nCompBase: nR.base + aN.compOff,
        dCompBase: dR.base + aD.compOff,
        minus2overB: -2 / B,
      }),
      1,
    );
    const gK = this.k("auxGrad", K.auxGradKernel);
    for (const [i0, nc] of pieces(n, this.split.elemsPerBinding())) {
      const xr = this.r(X, i0, nc), xhr = this.r(xh, last + i0, nc), ear = this.r(ea, i0, nc);
      const gsr = this.r(gS, i0, nc);
      this.engine.dispatch(
        gK,
        [xr, xhr, ear, gsr, sc],
        K.AUX_GRAD.pack({
          n: nc,
          xBase: xr.base,
          xhBase: xhr.base,
          eaBase: ear.base,
          gsBase: gsr.base,
          scBase: sc.base,
        }),
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
        K.L1.pack({ cap: cap, rows: codes.rows, lam: lambda, partBase: part.base }),
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
    const per = this.split.rowsPerBinding(Math.max(d, 1), "Wdec/gradS");
    const segs = segments(groups, per, false);
    const vec = d % 4 === 0, V = vec ? 4 : 1;
    const kern = this.k(vec ? "decodeBackward4" : "decodeBackward1", () => K.decodeBackwardKernel(vec));
    const cap = Math.min(codes.cap, gvT.size);
    for (const [r0, nr] of pieces(B, per)) {
      for (const s of segs) {
        const wr = this.rv(W, s.lo * d, (s.hi - s.lo) * d, vec);
        const gsr = this.rv(gS, (s.g * B + r0) * d, nr * d, vec);
        this.engine.dispatch(
          kern,
          [rp, idx, wr, gsr, gv],
          K.DECODE_BACKWARD.pack({
            nRows: nr,
            dv: d / V,
            rowOff: r0,
            lo: s.lo,
            hi: s.hi,
            wBase: wr.base / V,
            gsBase: gsr.base / V,
            cap: cap,
          }),
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
    const per = this.split.rowsPerBinding(Math.max(d, 1), "x/gradWenc");
    const segs = segments(groups, per, false);
    const rows = pieces(Math.max(B, 1), per);
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
          K.LATENT_GRADS.pack({
            nLat: nl,
            dv: d / V,
            lo: s.lo,
            r0: r0,
            r1: r0 + nr,
            xBase: xr.base / V,
            bdBase: bdr.base / V,
            gsBase: gsr.base / V,
            weBase: wer.base / V,
            beBase: ber.base,
            wdBase: wdr.base / V,
            doBenc: ri === 0,
            hasWd: !!gWd,
            cpBase: cpr.base,
          }),
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
      const rowsPer = Math.min(this.split.rowsPerBinding(d, "gradS"), ROW_BLOCK * pc);
      const kern = this.k("colSum", K.colSumKernel);
      for (const [r0, nr] of pieces(B, rowsPer)) {
        const P = Math.ceil(nr / ROW_BLOCK);
        const part = this.scratchRange("part", P * d);
        const sr = this.r(gS, r0 * d, nr * d);
        this.engine.dispatch(
          kern,
          [sr, part],
          K.COL_SUM.pack({ nRows: nr, d: d, aBase: sr.base, R: ROW_BLOCK, nib: nib, partBase: part.base }),
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
      for (const [lo, nl] of pieces(w, this.split.rowsPerBinding(d, "Wenc"))) {
        const part = this.scratchRange("part", nBlk * d);
        const wr = this.r(W, lo * d, nl * d);
        this.engine.dispatch(
          kern,
          [rp, idx, gv, wr, part],
          K.ENTRY_WEIGHT_SUM.pack({
            cap: cap,
            rows: B,
            d: d,
            EB: EB,
            lo: lo,
            hi: lo + nl,
            wBase: wr.base,
            nib: nib,
            partBase: part.base,
          }),
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
      for (const [s, n] of pieces(gt.size, this.split.elemsPerBinding())) {
        const epw = Math.max(1024, Math.ceil(Math.ceil(n / maxP) / 256) * 256);
        const P = Math.ceil(n / epw);
        const part = this.scratchRange("part", P);
        const ar = this.r(gt, s, n);
        this.engine.dispatch(
          kern,
          [ar, part],
          K.SUM_SQUARES.pack({ n: n, base: ar.base, epw: epw, partBase: part.base }),
          P,
        );
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
    for (const [r0, nr] of pieces(w, this.split.rowsPerBinding(d, "W"))) {
      const wr = this.r(W, r0 * d, nr * d);
      const gr = Gm ? this.r(Gm, r0 * d, nr * d) : this.dummy();
      this.engine.dispatch(
        kern,
        [wr, gr],
        K.ROW_OP.pack({ nRows: nr, d: d, wBase: wr.base, gBase: gr.base, mode: mode }),
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
    for (const [s, n] of pieces(p.size, this.split.elemsPerBinding())) {
      const pr = this.r(p, s, n), gr = this.r(g, s, n), mr = this.r(M, s, n), vr = this.r(V, s, n);
      this.engine.dispatch(
        kern,
        [pr, gr, mr, vr, ns],
        K.ADAM.pack({
          n: n,
          pBase: pr.base,
          gBase: gr.base,
          mBase: mr.base,
          vBase: vr.base,
          b1: hp.beta1,
          b2: hp.beta2,
          omb1: 1 - hp.beta1,
          omb2: 1 - hp.beta2,
          stepSize: hp.lr / bc1,
          sqrtBc2: Math.sqrt(bc2),
          eps: hp.eps,
          clip: !!clip,
          maxNorm: clip ? clip.maxNorm : 0,
          nsBase: ns.base,
        }),
        Math.ceil(n / 256),
      );
    }
  }

  renormRows(W: Tensor): void {
    this.rowOp(this.g(W, "f32"), null, 1);
  }

  // ---- primitives -----------------------------------------------------------------------------
  map(e: Expr, args: Record<string, EwArg>, space: EwSpace, out: Tensor, accumulate = false): void {
    this.ew(e, args, space, "map", out, accumulate, 0);
  }

  reduce(
    e: Expr,
    args: Record<string, EwArg>,
    space: EwSpace,
    to: ReduceTo,
    out: Tensor,
    opts: { accumulate?: boolean; slot?: number } = {},
  ): void {
    this.ew(e, args, space, to, out, !!opts.accumulate, opts.slot ?? 0);
  }

  private ew(
    e: Expr,
    args: Record<string, EwArg>,
    space: EwSpace,
    op: EwOp,
    out: Tensor,
    acc: boolean,
    slot: number,
  ) {
    const b = bindEw(e, args, space, out, op === "map" ? undefined : op, slot);
    const o = this.g(out, "f32");
    for (const a of b.args) if (a.kind === "tensor") this.g(a.t, "f32");
    const entries = space.kind === "entries";
    const ek = ewKernel(e, b, entries, op);
    const kern = this.k(ewKey(e, b, entries, op), () => ek.source);
    const { rows, cols } = b;
    // Per-argument fields and bindings; `full`/`row` ranges depend on the chunk.
    const fixed: Record<string, number | boolean> = {};
    b.args.forEach((a, k) => {
      if (a.kind === "const") fixed[`c${k}`] = a.c;
    });
    const argRanges = (r0: number, nr: number): Range[] =>
      b.args.flatMap((a, k) => {
        if (a.kind === "const") return [];
        let rg: Range;
        if (a.bc === "scalar") rg = this.r(a.t, a.slot, 1);
        else if (a.bc === "col") rg = this.whole(a.t, `argument ${a.name}`, cols);
        else if (entries) {
          rg = this.whole(a.t, `argument ${a.name}`, a.bc === "row" ? rows : Math.max(b.elems, 1));
        } else rg = a.bc === "row" ? this.r(a.t, r0, nr) : this.r(a.t, r0 * cols, nr * cols);
        fixed[`b${k}`] = rg.base;
        return [rg];
      });
    const pack = (f: Record<string, number | boolean>) => ek.params.pack({ ...fixed, ...f } as never);
    if (entries) {
      const codes = space.codes, cap = codes.cap;
      const pre = [this.whole(codes.rowPtr, "codes.rowPtr"), this.whole(codes.idx, "codes.idx")];
      const ar = argRanges(0, rows);
      const base = { n: cap, rows, cols, acc };
      if (op === "map") {
        if (cap === 0) return;
        const outR = this.whole(o, "map output", cap);
        this.engine.dispatch(
          kern,
          [...pre, outR, ...ar],
          pack({ ...base, outBase: outR.base }),
          Math.ceil(cap / 256),
        );
      } else if (op === "scalar") {
        const a = this.newAccum("acc.ew", 1);
        if (cap > 0) {
          const P = Math.ceil(cap / 256), part = this.scratchRange("part", P);
          this.engine.dispatch(kern, [...pre, part, ...ar], pack({ ...base, outBase: part.base }), P);
          this.fold(part, P, 1, 1, a);
        }
        this.finish(a, 1, 1, acc, this.slotRange(o, slot));
      } else if (op === "rows") {
        if (rows === 0) return;
        const outR = this.whole(o, "reduce output", rows);
        this.engine.dispatch(
          kern,
          [...pre, outR, ...ar],
          pack({ ...base, outBase: outR.base }),
          Math.ceil(rows / 64),
        );
      } else {
        if (cols === 0) return;
        const cT = space.codesT!;
        const outR = this.whole(o, "reduce output", cols);
        const tb = [
          this.whole(cT.colPtr, "codesT.colPtr", cols + 1),
          this.whole(cT.entry, "codesT.entry"),
          b.args.some((x) => x.kind === "tensor" && x.bc === "row")
            ? this.whole(cT.row, "codesT.row")
            : this.dummy(),
        ];
        this.engine.dispatch(
          kern,
          [...pre, outR, ...tb, ...ar],
          pack({ ...base, outBase: outR.base }),
          Math.ceil(cols / 64),
        );
      }
      return;
    }
    const per = Math.max(
      1,
      Math.min(Math.floor(this.split.elemsPerBinding() / Math.max(cols, 1)), 64 * 65535),
    );
    const parts = rows > 0 ? pieces(rows, per) : [];
    if (op === "map") {
      for (const [r0, nr] of parts) {
        const n = nr * cols;
        if (n === 0) continue;
        const ar = argRanges(r0, nr), outR = this.r(o, r0 * cols, n);
        this.engine.dispatch(
          kern,
          [outR, ...ar],
          pack({ n, rows: nr, cols, acc, outBase: outR.base }),
          Math.ceil(n / 256),
        );
      }
    } else if (op === "scalar") {
      const a = this.newAccum("acc.ew", 1);
      for (const [r0, nr] of parts) {
        const n = nr * cols;
        if (n === 0) continue;
        const P = Math.ceil(n / 1024), part = this.scratchRange("part", P), ar = argRanges(r0, nr);
        this.engine.dispatch(kern, [part, ...ar], pack({ n, rows: nr, cols, acc, outBase: part.base }), P);
        this.fold(part, P, 1, 1, a);
      }
      this.finish(a, 1, 1, acc, this.slotRange(o, slot));
    } else if (op === "rows") {
      for (const [r0, nr] of parts) {
        const ar = argRanges(r0, nr), outR = this.r(o, r0, nr);
        this.engine.dispatch(
          kern,
          [outR, ...ar],
          pack({ n: nr * cols, rows: nr, cols, acc, outBase: outR.base }),
          nr,
        );
      }
    } else {
      if (cols === 0) return;
      const a = this.newAccum("acc.ewc", cols);
      const nib = Math.ceil(cols / 64);
      for (
        const [r0, nr] of pieces(rows, Math.min(per, 64 * Math.max(1, Math.floor(this.partCap() / cols))))
      ) {
        const P = Math.ceil(nr / 64), part = this.scratchRange("part", P * cols), ar = argRanges(r0, nr);
        this.engine.dispatch(
          kern,
          [part, ...ar],
          pack({ n: nr * cols, rows: nr, cols, acc, outBase: part.base }),
          nib * P,
        );
        this.fold(part, P, cols, 1, a);
      }
      this.finish(a, cols, 1, acc, this.whole(o, "reduce output", cols));
    }
  }

  matmul(a: Tensor, b: Tensor, c: Tensor, opts: MatmulOptions = {}): void {
    const { M, N, K: KD } = matmulDims(a, b, c, opts);
    const A = this.g(a, "f32"), Bm = this.g(b, "f32"), C = this.g(c, "f32");
    const ta = !!opts.ta, tb = !!opts.tb;
    if (M === 0 || N === 0) return;
    if (KD === 0) {
      if (!opts.accumulate) this.engine.clear(C.buffer, 0, C.size * 4);
      return;
    }
    // Blocks (mc × nc × kc) whose three operand extents each fit in one binding.
    const extA = (m: number, k: number) => ta ? (k - 1) * M + m : (m - 1) * KD + k;
    const extB = (k: number, n: number) => tb ? (n - 1) * KD + k : (k - 1) * N + n;
    const extC = (m: number, n: number) => (m - 1) * N + n;
    let mc = Math.min(M, 32 * 65535), nc = Math.min(N, 32 * 65535), kc = KD;
    const half = (x: number) => Math.max(1, Math.ceil(x / 2));
    for (;;) {
      if (!this.split.fits(extA(mc, kc))) {
        if (ta ? kc > 1 : mc === 1) kc = half(kc);
        else mc = half(mc);
      } else if (!this.split.fits(extB(kc, nc))) {
        if (tb ? nc === 1 : kc > 1) kc = half(kc);
        else nc = half(nc);
      } else if (!this.split.fits(extC(mc, nc))) {
        if (mc > 1) mc = half(mc);
        else nc = half(nc);
      } else break;
    }
    const kern = this.k("matmul", K.matmulKernel);
    for (const [m0, mn] of pieces(M, mc)) {
      for (const [n0, nn] of pieces(N, nc)) {
        pieces(KD, kc).forEach(([k0, kn], ki) => {
          const aR = this.r(A, ta ? k0 * M + m0 : m0 * KD + k0, extA(mn, kn));
          const bR = this.r(Bm, tb ? n0 * KD + k0 : k0 * N + n0, extB(kn, nn));
          const cR = this.r(C, m0 * N + n0, extC(mn, nn));
          this.engine.dispatch(
            kern,
            [aR, bR, cR],
            K.MATMUL.pack({
              M: mn,
              N: nn,
              K: kn,
              aBase: aR.base,
              aSm: ta ? 1 : KD,
              aSk: ta ? M : 1,
              bBase: bR.base,
              bSk: tb ? 1 : N,
              bSn: tb ? KD : 1,
              cBase: cR.base,
              cSm: N,
              acc: !!opts.accumulate || ki > 0,
              alpha: opts.alpha ?? 1,
            }),
            [Math.ceil(nn / 32), Math.ceil(mn / 32)],
          );
        });
      }
    }
  }

  /** Row length d of W [cols, d] for a sparse op (and the size checks shared by the sparse ops). */
  private sparseD(codes: Codes, W: Tensor, what: string): number {
    const d = codes.cols > 0 ? this.g(W, "f32").size / codes.cols : 0;
    if (!Number.isInteger(d)) {
      throw new MonobenchError(`${what}: W has ${W.size} elements, not a multiple of ${codes.cols}`);
    }
    return d;
  }

  private atLeast(t: Tensor, n: number, what: string, exact = false): GpuTensor {
    const gt = this.g(t, "f32");
    if (exact ? gt.size !== n : gt.size < n) {
      throw new MonobenchError(`${what}: ${gt.size} elements, expected ${exact ? "" : "at least "}${n}`);
    }
    return gt;
  }

  spmm(codes: Codes, vals: Tensor, W: Tensor, out: Tensor, accumulate: boolean): void {
    const d = this.sparseD(codes, W, "spmm"), B = codes.rows;
    const o = this.atLeast(out, B * d, "spmm out", true), v = this.atLeast(vals, codes.cap, "spmm vals");
    if (B === 0 || d === 0) return;
    const rp = this.whole(codes.rowPtr, "codes.rowPtr"), idx = this.whole(codes.idx, "codes.idx");
    const vr = this.whole(v, "spmm vals", Math.max(codes.cap, 1));
    const per = this.split.rowsPerBinding(d, "W/out");
    const segs = segments([codes.cols], per, false);
    if (segs.length === 0) {
      if (!accumulate) this.engine.clear(o.buffer, 0, o.size * 4);
      return;
    }
    const kern = this.k("spmm", K.spmmKernel);
    for (const [r0, nr] of pieces(B, per)) {
      segs.forEach((s, si) => {
        const wr = this.r(W, s.lo * d, (s.hi - s.lo) * d), outR = this.r(o, r0 * d, nr * d);
        this.engine.dispatch(
          kern,
          [rp, idx, vr, wr, outR],
          K.SPMM.pack({
            nRows: nr,
            d,
            rowOff: r0,
            lo: s.lo,
            hi: s.hi,
            wBase: wr.base,
            outBase: outR.base,
            cap: codes.cap,
            init: accumulate || si > 0,
          }),
          nr,
        );
      });
    }
  }

  sddmm(codes: Codes, A: Tensor, W: Tensor, out: Tensor, accumulate: boolean): void {
    const d = this.sparseD(codes, W, "sddmm"), B = codes.rows;
    const X = this.atLeast(A, B * d, "sddmm A", true), o = this.atLeast(out, codes.cap, "sddmm out");
    if (!accumulate) this.engine.clear(o.buffer, 0, o.size * 4);
    if (B === 0 || d === 0 || codes.cols === 0) return;
    const rp = this.whole(codes.rowPtr, "codes.rowPtr"), idx = this.whole(codes.idx, "codes.idx");
    const outR = this.whole(o, "sddmm out", Math.max(codes.cap, 1));
    const per = this.split.rowsPerBinding(d, "A/W");
    const kern = this.k("sddmm", K.sddmmKernel);
    for (const [r0, nr] of pieces(B, per)) {
      for (const s of segments([codes.cols], per, false)) {
        const ar = this.r(X, r0 * d, nr * d), wr = this.r(W, s.lo * d, (s.hi - s.lo) * d);
        this.engine.dispatch(
          kern,
          [rp, idx, ar, wr, outR],
          K.SDDMM.pack({
            nRows: nr,
            d,
            rowOff: r0,
            lo: s.lo,
            hi: s.hi,
            aBase: ar.base,
            wBase: wr.base,
            cap: codes.cap,
          }),
          nr,
        );
      }
    }
  }

  spmmT(codes: Codes, codesT: CodesT, vals: Tensor, A: Tensor, out: Tensor, accumulate: boolean): void {
    const w = codes.cols, B = codes.rows;
    const X = this.g(A, "f32");
    const d = B > 0 ? X.size / B : 0;
    if (!Number.isInteger(d) || codesT.cols !== w) throw new MonobenchError("spmmT: shape mismatch");
    const o = this.atLeast(out, w * d, "spmmT out", true), v = this.atLeast(vals, codes.cap, "spmmT vals");
    if (w === 0 || d === 0) return;
    if (B === 0) {
      if (!accumulate) this.engine.clear(o.buffer, 0, o.size * 4);
      return;
    }
    const rowT = this.whole(codesT.row, "codesT.row"), entT = this.whole(codesT.entry, "codesT.entry");
    const vr = this.whole(v, "spmmT vals", Math.max(codes.cap, 1));
    const cpT = this.g(codesT.colPtr, "u32");
    const per = this.split.rowsPerBinding(d, "A/out");
    const rows = pieces(B, per);
    const kern = this.k("spmmT", K.spmmTKernel);
    for (const s of segments([w], per, false)) {
      const nl = s.hi - s.lo;
      const cpr = this.r(cpT, s.lo, nl + 1), outR = this.r(o, s.lo * d, nl * d);
      rows.forEach(([r0, nr], ri) => {
        const ar = this.r(X, r0 * d, nr * d);
        this.engine.dispatch(
          kern,
          [cpr, rowT, entT, vr, ar, outR],
          K.SPMMT.pack({
            nLat: nl,
            d,
            r0,
            r1: r0 + nr,
            aBase: ar.base,
            outBase: outR.base,
            cpBase: cpr.base,
            init: accumulate || ri > 0,
          }),
          nl,
        );
      });
    }
  }

  private entriesOp(codes: Codes, vals: GpuTensor, dense: GpuTensor, scatter: boolean): void {
    const B = codes.rows, w = codes.cols;
    if (B === 0 || w === 0) return;
    const rp = this.whole(codes.rowPtr, "codes.rowPtr"), idx = this.whole(codes.idx, "codes.idx");
    const vr = this.whole(vals, "entry values", Math.max(codes.cap, 1));
    const kern = this.k("entries", K.entriesKernel);
    for (const [r0, nr] of pieces(B, this.split.rowsPerBinding(w, "dense"))) {
      const dr = this.r(dense, r0 * w, nr * w);
      this.engine.dispatch(
        kern,
        [rp, idx, vr, dr],
        K.ENTRIES.pack({ nRows: nr, cols: w, rowOff: r0, denseBase: dr.base, cap: codes.cap, scatter }),
        nr,
      );
    }
  }

  gatherEntries(codes: Codes, dense: Tensor, out: Tensor): void {
    const D = this.atLeast(dense, codes.rows * codes.cols, "gatherEntries dense", true);
    const o = this.atLeast(out, codes.cap, "gatherEntries out");
    this.engine.clear(o.buffer, 0, o.size * 4);
    this.entriesOp(codes, o, D, false);
  }

  scatterEntries(codes: Codes, vals: Tensor, dense: Tensor, accumulate: boolean): void {
    const D = this.atLeast(dense, codes.rows * codes.cols, "scatterEntries dense", true);
    const v = this.atLeast(vals, codes.cap, "scatterEntries vals");
    if (!accumulate) this.engine.clear(D.buffer, 0, D.size * 4);
    this.entriesOp(codes, v, D, true);
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
        K.MIN_POSITIVE.pack({ cap: cap, rows: codes.rows }),
        Math.ceil(cap / 256),
      );
    }
    this.engine.dispatch(
      this.k("ema", K.emaKernel),
      [mn, tr],
      K.EMA.pack({ beta: beta, thrBase: tr.base, omBeta: 1 - beta }),
      1,
    );
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
    for (const [s, n] of pieces(w, this.split.elemsPerBinding() - 4)) {
      const cpr = this.r(cp, s, n + 1), cr = this.r(c, s, n), mr = this.r(mk, s, n);
      this.engine.dispatch(
        kern,
        [cpr, cr, mr, cnt],
        K.DEAD.pack({
          n: n,
          cpBase: cpr.base,
          cBase: cr.base,
          mBase: mr.base,
          rows: codesT.rows,
          deadAfter: f32Ceil(deadAfter),
        }),
        Math.ceil(n / 256),
      );
    }
    this.engine.dispatch(
      this.k("countToFloat", K.countToFloatKernel),
      [cnt, out],
      K.COUNT_TO_FLOAT.pack({ outBase: out.base }),
      1,
    );
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
