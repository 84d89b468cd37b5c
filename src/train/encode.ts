/**
 * Inference helpers for the metrics: encode a dataset with a trained SAE (the reference
 * `sae.encode`, thresholded by default) into a host CSR {@link ActMatrix}, and reconstruct it.
 * Params take raw activations (see SaeParams), so data is fed unnormalised.
 */
import type { Backend, Codes, Tensor } from "../backend/types.ts";
import type { ActMatrix } from "../types.ts";
import { check } from "../util/errors.ts";
import { getSae } from "../sae/registry.ts";
import type { SaeParams, SaeVariant } from "../sae/types.ts";
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

class SaeInference {
  private readonly variant: SaeVariant;
  private readonly Wenc: Tensor;
  private readonly benc: Tensor;
  private readonly Wdec: Tensor;
  private readonly bdec: Tensor;
  private readonly thr: Tensor;
  private readonly bufs = new Map<number, Buffers>();

  constructor(
    private readonly be: Backend,
    private readonly params: SaeParams,
    private readonly useThreshold: boolean,
  ) {
    const { cfg } = params;
    this.variant = getSae(cfg.variant);
    const { d, width } = cfg;
    check(
      params.Wenc.length === width * d && params.Wdec.length === width * d && params.benc.length === width &&
        params.bdec.length === d,
      `SAE params do not match their config [${width}, ${d}]`,
    );
    this.Wenc = be.tensor(params.Wenc, [width, d]);
    this.benc = be.tensor(params.benc, [width]);
    this.Wdec = be.tensor(params.Wdec, [width, d]);
    this.bdec = be.tensor(params.bdec, [d]);
    this.thr = be.tensor(new Float32Array([params.threshold]), [1]);
  }

  /** Enqueue encode of `x` [rows, d]; returns the codes (valid until the next call). */
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
  const inf = new SaeInference(backend, params, opts.useThreshold ?? true);
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
  const inf = new SaeInference(backend, params, opts.useThreshold ?? true);
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
