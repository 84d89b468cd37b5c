/**
 * Inference helpers for the metrics: encode a dataset with a trained SAE (the reference
 * `sae.encode`, thresholded by default) into a host CSR {@link ActMatrix}, and reconstruct it.
 * Params take raw activations (see SaeParams), so data is fed unnormalised.
 */
import type { Backend, Codes, Tensor } from "../backend/types.ts";
import type { ActMatrix } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { getSae } from "../sae/registry.ts";
import { type FusedSaeVariant, isModelVariant, type SaeModelVariant, type SaeParams } from "../sae/types.ts";
import { Tape, type Var } from "../compute/tape.ts";
import { modelParams } from "./model_engine.ts";
import { DataSource, type TrainData } from "./data.ts";

export interface EncodeOptions {
  /**
   * true (default, as the reference `encode`): the variant's inference activation, e.g.
   * `f·(f > threshold)` for BatchTopK/Matryoshka; false: the training activation (batch top-K
   * over each batch of `batchSize` for BatchTopK).
   */
  useThreshold?: boolean;
  /** Rows per device batch (default: up to 4096, keeping rows·ω ≤ 2^24). */
  batchSize?: number;
}

interface Buffers {
  x: Tensor;
  pre: Tensor;
  scratch: Tensor;
  codes: Codes;
  out: Tensor | null;
}

interface Inference {
  /** Enqueue encode of `x` [rows, d]; the codes (and x̂) stay valid until the next call. */
  encode(x: Float32Array, rows: number, withOut: boolean): { codes: Codes; out: Tensor | null };
  dispose(): void;
}

function checkShapes(params: SaeParams): void {
  const { d, width } = params.cfg;
  check(
    params.Wenc.length === width * d && params.Wdec.length === width * d && params.benc.length === width &&
      params.bdec.length === d,
    `SAE params do not match their config [${width}, ${d}]`,
  );
}

function inference(be: Backend, params: SaeParams, useThreshold: boolean): Inference {
  const v = getSae(params.cfg.variant);
  return isModelVariant(v)
    ? new ModelInference(be, v, params, useThreshold)
    : new SaeInference(be, v, params, useThreshold);
}

/** Inference of a tape-based architecture: its `encode` on a no-grad tape. */
class ModelInference implements Inference {
  private readonly tape: Tape;
  private readonly p: Record<string, Var> = {};
  private readonly thr: Tensor;
  private readonly tensors: Tensor[] = [];
  private readonly xs = new Map<number, { x: Tensor; out: Tensor | null }>();
  private readonly Wdec: string;
  private readonly bdec: string;

  constructor(
    private readonly be: Backend,
    private readonly variant: SaeModelVariant,
    private readonly params: SaeParams,
    private readonly useThreshold: boolean,
  ) {
    checkShapes(params);
    this.tape = new Tape(be, false);
    const specs = modelParams(variant, params.cfg);
    this.Wdec = specs.find((s) => s.role === "Wdec")!.name;
    this.bdec = specs.find((s) => s.role === "bdec")!.name;
    for (const s of specs) {
      const a = s.role ? params[s.role] : params.extra?.[s.name];
      if (!a || a.length !== s.shape.reduce((x, y) => x * y, 1)) {
        throw new MonobenchError(`SAE params of ${variant.name} lack parameter ${s.name}`);
      }
      const t = be.tensor(a, s.shape);
      this.tensors.push(t);
      this.p[s.name] = this.tape.input(t, s.name);
    }
    this.thr = be.tensor(new Float32Array([params.threshold]), [1]);
  }

  encode(x: Float32Array, rows: number, withOut: boolean): { codes: Codes; out: Tensor | null } {
    const { be, tape, params: { cfg } } = this;
    let b = this.xs.get(rows);
    if (!b) {
      b = { x: be.zeros([rows, cfg.d]), out: null };
      this.xs.set(rows, b);
    }
    if (withOut && !b.out) b.out = be.zeros([1, rows, cfg.d]);
    tape.reset();
    be.write(b.x, x);
    const r = this.variant.encode({
      tape,
      cfg,
      rows,
      x: tape.input(b.x, "x"),
      p: this.p,
      threshold: tape.input(this.thr, "threshold"),
      useThreshold: this.useThreshold,
    });
    if (r.acts.pattern !== r.codes) {
      throw new MonobenchError(`variant ${this.variant.name}: encode() acts must be entries of its codes`);
    }
    be.copy(r.acts.t, r.codes.codes.val);
    if (withOut) be.decode(r.codes.codes, this.p[this.Wdec].t, this.p[this.bdec].t, [cfg.width], b.out!);
    return { codes: r.codes.codes, out: b.out };
  }

  dispose(): void {
    for (const t of [...this.tensors, this.thr]) this.be.dispose(t);
    for (const b of this.xs.values()) {
      this.be.dispose(b.x);
      if (b.out) this.be.dispose(b.out);
    }
    this.tape.dispose();
  }
}

class SaeInference implements Inference {
  private readonly Wenc: Tensor;
  private readonly benc: Tensor;
  private readonly Wdec: Tensor;
  private readonly bdec: Tensor;
  private readonly thr: Tensor;
  private readonly bufs = new Map<number, Buffers>();

  constructor(
    private readonly be: Backend,
    private readonly variant: FusedSaeVariant,
    private readonly params: SaeParams,
    private readonly useThreshold: boolean,
  ) {
    const { cfg } = params;
    const { d, width } = cfg;
    checkShapes(params);
    this.Wenc = be.tensor(params.Wenc, [width, d]);
    this.benc = be.tensor(params.benc, [width]);
    this.Wdec = be.tensor(params.Wdec, [width, d]);
    this.bdec = be.tensor(params.bdec, [d]);
    this.thr = be.tensor(new Float32Array([params.threshold]), [1]);
  }

  encode(x: Float32Array, rows: number, withOut: boolean): Buffers {
    const { be, params: { cfg } } = this;
    let b = this.bufs.get(rows);
    if (!b) {
      const cap = this.variant.inferenceCapacity(cfg, rows, this.useThreshold);
      b = {
        x: be.zeros([rows, cfg.d]),
        pre: be.zeros([rows, cfg.width]),
        scratch: be.zeros([rows]),
        codes: be.codes(rows, cfg.width, cap),
        out: null,
      };
      this.bufs.set(rows, b);
    }
    if (withOut && !b.out) b.out = be.zeros([1, rows, cfg.d]);
    be.write(b.x, x);
    be.encode(b.x, this.Wenc, this.benc, this.bdec, b.pre);
    this.variant.inferenceActivation({
      backend: be,
      cfg,
      rows,
      pre: b.pre,
      out: b.codes,
      scratch: b.scratch,
      threshold: this.thr,
      useThreshold: this.useThreshold,
    });
    if (withOut) be.decode(b.codes, this.Wdec, this.bdec, [cfg.width], b.out!);
    return b;
  }

  dispose(): void {
    const be = this.be;
    for (const t of [this.Wenc, this.benc, this.Wdec, this.bdec, this.thr]) be.dispose(t);
    for (const b of this.bufs.values()) {
      for (const t of [b.x, b.pre, b.scratch]) be.dispose(t);
      if (b.out) be.dispose(b.out);
      be.disposeCodes(b.codes);
    }
  }
}

function batchRows(opts: EncodeOptions, width: number): number {
  const bs = opts.batchSize ?? Math.max(1, Math.min(4096, Math.floor(2 ** 24 / width)));
  check(Number.isSafeInteger(bs) && bs >= 1, `batchSize must be a positive integer, got ${bs}`);
  return bs;
}

/** Encode every row of `data` (raw activations [n, d]) into CSR codes [n, ω]. */
export async function encodeDataset(
  backend: Backend,
  params: SaeParams,
  data: TrainData,
  opts: EncodeOptions = {},
): Promise<ActMatrix> {
  const src = DataSource.from(data, params.cfg.d, "encode input");
  const bs = batchRows(opts, params.cfg.width);
  const inf = inference(backend, params, opts.useThreshold ?? true);
  try {
    const rowPtr = new Uint32Array(src.n + 1);
    const idxChunks: Uint32Array[] = [], valChunks: Float32Array[] = [];
    let nnz = 0;
    for (let s = 0; s < src.n; s += bs) {
      const rows = Math.min(bs, src.n - s);
      const b = inf.encode(src.rows(s, rows), rows, false);
      const rp = await backend.read(b.codes.rowPtr) as Uint32Array;
      const total = rp[rows];
      idxChunks.push((await backend.read(b.codes.idx) as Uint32Array).slice(0, total));
      valChunks.push((await backend.read(b.codes.val) as Float32Array).slice(0, total));
      for (let r = 0; r < rows; r++) rowPtr[s + r + 1] = nnz + rp[r + 1];
      nnz += total;
    }
    const idx = new Uint32Array(nnz), val = new Float32Array(nnz);
    let o = 0;
    for (let c = 0; c < idxChunks.length; c++) {
      idx.set(idxChunks[c], o);
      val.set(valChunks[c], o);
      o += idxChunks[c].length;
    }
    return { kind: "csr", n: src.n, cols: params.cfg.width, rowPtr, idx, val };
  } finally {
    inf.dispose();
  }
}

/** Reconstruction x̂ = W_decᵀ f + b_dec of every row of `data` (raw units), [n, d]. */
export async function reconstruct(
  backend: Backend,
  params: SaeParams,
  data: TrainData,
  opts: EncodeOptions = {},
): Promise<Float32Array> {
  const src = DataSource.from(data, params.cfg.d, "reconstruct input");
  const d = params.cfg.d;
  const bs = batchRows(opts, params.cfg.width);
  const inf = inference(backend, params, opts.useThreshold ?? true);
  try {
    const out = new Float32Array(src.n * d);
    for (let s = 0; s < src.n; s += bs) {
      const rows = Math.min(bs, src.n - s);
      const b = inf.encode(src.rows(s, rows), rows, true);
      out.set(await backend.read(b.out!) as Float32Array, s * d);
    }
    return out;
  } finally {
    inf.dispose();
  }
}
