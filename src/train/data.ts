/**
 * Training-data access: a Float32Array [n, d] or any row source `{n, d, rows(start, count)}`
 * (e.g. the activation store of src/data/store.ts), batch order as the reference DataLoader
 * (one shuffle, cycled; last partial batch kept), and the input normalisation factor.
 */
import { check, MonobenchError } from "../util/errors.ts";
import { Rng } from "../util/rng.ts";

/** Anything that can hand out contiguous rows of an [n, d] f32 matrix. */
export interface RowSource {
  readonly n: number;
  readonly d: number;
  rows(start: number, count: number): Float32Array;
}

/** Accepted data: a row-major Float32Array [n, d] (give `d` in the config) or a {@link RowSource}. */
export type TrainData = Float32Array | RowSource;

/** Validated access to the data. */
export class DataSource {
  private constructor(
    readonly n: number,
    readonly d: number,
    private readonly dense: Float32Array | null,
    private readonly src: RowSource | null,
    readonly what: string,
  ) {}

  /**
   * Wrap `data`. For a Float32Array, `d` is required and the whole array is checked for
   * NaN/Inf up front; a row source is checked batch by batch as it is read.
   */
  static from(data: TrainData, d: number | undefined, what = "training data"): DataSource {
    if (data instanceof Float32Array) {
      check(d !== undefined, `${what}: a Float32Array needs the row length d in the config`);
      check(Number.isSafeInteger(d) && d >= 1, `${what}: d must be a positive integer, got ${d}`);
      check(
        data.length > 0 && data.length % d === 0,
        `${what}: ${data.length} values are not a non-empty [n, ${d}] matrix`,
      );
      for (let i = 0; i < data.length; i++) {
        if (!Number.isFinite(data[i])) {
          throw new MonobenchError(
            `${what}: non-finite value ${data[i]} at row ${Math.floor(i / d)}, column ${i % d}`,
          );
        }
      }
      return new DataSource(data.length / d, d, data, null, what);
    }
    check(
      typeof data === "object" && data !== null && typeof (data as RowSource).rows === "function",
      `${what}: expected a Float32Array or an object with n, d and rows(start, count)`,
    );
    const { n, d: dd } = data;
    check(Number.isSafeInteger(n) && n >= 1, `${what}: n must be a positive integer, got ${n}`);
    check(Number.isSafeInteger(dd) && dd >= 1, `${what}: d must be a positive integer, got ${dd}`);
    check(d === undefined || d === dd, `${what}: config d=${d} but the data has d=${dd}`);
    return new DataSource(n, dd, null, data, what);
  }

  /** Rows start..start+count−1 (a view for dense data). */
  rows(start: number, count: number): Float32Array {
    if (this.dense) return this.dense.subarray(start * this.d, (start + count) * this.d);
    const r = this.src!.rows(start, count);
    check(
      r instanceof Float32Array && r.length === count * this.d,
      `${this.what}: rows(${start}, ${count}) returned ${r?.length} values, expected ${count * this.d}`,
    );
    this.checkRows(r, start);
    return r;
  }

  /** out[r, :] = x[indices[r], :] / scale for r < indices.length (NaN/Inf → MonobenchError). */
  gather(indices: Uint32Array, out: Float32Array, scale: number): void {
    const d = this.d;
    for (let r = 0; r < indices.length; r++) {
      const row = this.dense
        ? this.dense.subarray(indices[r] * d, indices[r] * d + d)
        : this.rows(indices[r], 1);
      const o = r * d;
      if (scale === 1) out.set(row, o);
      else for (let i = 0; i < d; i++) out[o + i] = row[i] / scale;
    }
  }

  private checkRows(r: Float32Array, start: number): void {
    for (let i = 0; i < r.length; i++) {
      if (!Number.isFinite(r[i])) {
        throw new MonobenchError(
          `${this.what}: non-finite value ${r[i]} at row ${start + Math.floor(i / this.d)}, column ${
            i % this.d
          }`,
        );
      }
    }
  }

  /** Cheap identity of the data (n, d and up to 32 evenly spaced rows), for resume checks. */
  fingerprint(): string {
    let h = 0x811c9dc5;
    const mix = (b: number) => {
      h = Math.imul(h ^ b, 0x01000193) >>> 0;
    };
    for (const v of [this.n, this.d]) for (let s = 0; s < 32; s += 8) mix((v / 2 ** s) & 0xff);
    const m = Math.min(32, this.n);
    for (let k = 0; k < m; k++) {
      const r = Math.floor((k * this.n) / m);
      const row = this.rows(r, 1);
      const b = new Uint8Array(row.buffer, row.byteOffset, row.byteLength);
      for (let i = 0; i < b.length; i++) mix(b[i]);
    }
    return `${this.n}x${this.d}:${h.toString(16).padStart(8, "0")}`;
  }
}

/** Independent, reproducible RNG stream `stream` of `seed`. */
export function subRng(seed: number, stream: number): Rng {
  return new Rng((seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0);
}

/** RNG streams used by the trainer. */
export const STREAM_INIT = 0, STREAM_NORM = 1, STREAM_ORDER = 2;

function permutation(n: number, rng: Rng): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  return rng.shuffle(p);
}

/**
 * Batch order as the reference `cycle(DataLoader(shuffle=True))`: one permutation, cut into
 * ceil(n/B) batches (last one partial), replayed every epoch. With `reshuffle`, epoch e uses its
 * own permutation (epoch 0's is the same as without reshuffling). Stateless given (seed, step),
 * so a resumed run sees exactly the same batches.
 */
export class BatchOrder {
  readonly numBatches: number;
  private permEpoch = -1;
  private perm: Uint32Array | null = null;

  constructor(
    readonly n: number,
    readonly batchSize: number,
    readonly seed: number,
    readonly reshuffle: boolean,
  ) {
    this.numBatches = Math.ceil(n / batchSize);
  }

  /** Sample indices of the batch used at 0-based update `step`. */
  batch(step: number): { epoch: number; index: number; indices: Uint32Array } {
    const epoch = Math.floor(step / this.numBatches), index = step % this.numBatches;
    const pe = this.reshuffle ? epoch : 0;
    if (pe !== this.permEpoch) {
      this.perm = permutation(this.n, subRng(this.seed, STREAM_ORDER + 16 * pe));
      this.permEpoch = pe;
    }
    const s = index * this.batchSize;
    return { epoch, index, indices: this.perm!.subarray(s, Math.min(this.n, s + this.batchSize)) };
  }

  /** Rows of the batch at `step`. */
  rowsAt(step: number): number {
    const index = step % this.numBatches;
    return Math.min(this.n, (index + 1) * this.batchSize) - index * this.batchSize;
  }

  /** Samples seen after `steps` updates. */
  samplesAfter(steps: number): number {
    const full = Math.floor(steps / this.numBatches);
    let s = full * this.n;
    for (let i = 0; i < steps % this.numBatches; i++) s += this.rowsAt(i);
    return s;
  }
}

/**
 * Reference `get_norm_factor`: sqrt of the mean over ≈`maxBatches` shuffled batches (its own
 * shuffle, stream STREAM_NORM) of mean_b ||x_b||²; fewer batches if the data has fewer.
 */
export function computeNormFactor(
  src: DataSource,
  batchSize: number,
  seed: number,
  maxBatches = 101,
): number {
  const perm = permutation(src.n, subRng(seed, STREAM_NORM));
  const nb = Math.min(maxBatches, Math.ceil(src.n / batchSize));
  let total = 0;
  const d = src.d;
  const buf = new Float32Array(Math.min(batchSize, src.n) * d);
  for (let b = 0; b < nb; b++) {
    const idx = perm.subarray(b * batchSize, Math.min(src.n, (b + 1) * batchSize));
    src.gather(idx, buf, 1);
    let s = 0;
    for (let i = 0; i < idx.length * d; i++) s += buf[i] * buf[i];
    total += s / idx.length;
  }
  const f = Math.sqrt(total / nb);
  check(f > 0 && Number.isFinite(f), `${src.what}: cannot normalise (mean squared norm ${total / nb})`);
  return f;
}
