/**
 * Reconstruction metrics of an SAE on an evaluation set, computed on the host in float64 from
 * the inputs x [n, d], the SAE's sparse codes a [n, ω] (the thresholded encode), the decoder
 * Wdec [ω, d] (row j = decoder direction of latent j) and bias bdec [d]:
 *   x̂_n = bdec + Σ_j a_nj Wdec[j],   e_n = x_n − x̂_n.
 *
 * FVE / R² variants (all fractions; 1 = perfect), reported under these names in `fve`:
 * - "fve_batchmean": the reference `dictionary_learning/training.py: validation`
 *   (ExplainableML/sae-for-vlm): the validation set is cut into consecutive batches of 4096
 *   rows (`DataLoader(batch_size=4096, shuffle=False)`, last batch partial), and per batch
 *     FVE_b = 1 − Σ_d Var_b(e_·d) / Σ_d Var_b(x_·d)
 *   with per-dimension variances over the batch rows (`t.var(·, dim=0)`, unbiased N−1 there;
 *   the N−1 cancels in the ratio, so population sums of squares are used here), then the
 *   unweighted mean of the FVE_b (`t.mean(t.tensor(fracs))`). This is the paper's R²
 *   (Tables A9/A11, inferred; docs/REFERENCE.md "Validation metric"); `r2 = 100·fve_batchmean`.
 *   As in torch, a batch of a single row has 0/0 variance ratio, so its FVE_b (and the mean)
 *   is NaN; avoid n ≡ 1 (mod batchSize). The reference computes it in float32 on inputs
 *   divided by the norm factor; FVE is scale invariant, so raw inputs with the saved (scaled)
 *   biases give the same value.
 * - "r2_global": 1 − Σ_n ‖x_n − x̂_n‖² / Σ_n ‖x_n − x̄‖² over the whole set (x̄ = set mean): the
 *   usual coefficient of determination (sklearn-style `variance_weighted` R²).
 * - "fve_uncentered": 1 − Σ_n ‖x_n − x̂_n‖² / Σ_n ‖x_n‖² (explained fraction of the raw second
 *   moment, no centering; used by some SAE papers).
 *
 * Sparsity: `l0` = mean number of nonzero latents per sample (`(f != 0).sum(-1).mean()` in the
 * reference; explicit zeros stored in CSR do not count); dead latents = latents never nonzero
 * on the evaluation set.
 *
 * Variances use Welford updates per batch and Chan's merge across batches (no catastrophic
 * cancellation for dimensions with a large mean, common in ViT residual streams).
 */
import type { ActMatrix } from "../types.ts";
import { check, checkFinite, MonobenchError } from "../util/errors.ts";
import { checkActMatrix } from "./actmatrix.ts";

/** The reference's validation batch size (`--batch_size 4096` in the scripts). */
export const DEFAULT_RECON_BATCH = 4096;

export interface ReconOptions {
  /** Rows per batch for "fve_batchmean" (default 4096, as the reference). */
  batchSize?: number;
}

export interface ReconMetrics {
  /** Named FVE / R² variants as fractions: fve_batchmean, r2_global, fve_uncentered. */
  fve: Record<string, number>;
  /** The paper's R² in percent: 100 · fve.fve_batchmean. */
  r2: number;
  /** Mean number of nonzero latents per sample. */
  l0: number;
  /** Latents never nonzero on the evaluation set. */
  deadCount: number;
  /** deadCount / ω. */
  deadFraction: number;
  /** Mean squared reconstruction error per sample, Σ_n ‖x_n − x̂_n‖² / n (input scale). */
  mse: number;
  /** Number of samples. */
  n: number;
  /** The per-batch FVE_b values averaged into fve_batchmean. */
  batchFve: number[];
}

/**
 * Streaming version of {@link reconMetrics}: feed consecutive row chunks with {@link add}
 * (any chunk sizes; batch boundaries are at multiples of `batchSize` of the global row index,
 * so the result does not depend on the chunking) and read {@link result} at any time.
 */
export class ReconAccumulator {
  readonly d: number;
  readonly width: number;
  readonly batchSize: number;
  private readonly Wdec: Float32Array;
  private readonly bdec: Float32Array;
  private readonly xh: Float64Array;
  private readonly active: Uint8Array;
  private rows = 0;
  private nnzTotal = 0;
  private sumE2 = 0;
  private sumX2 = 0;
  // current batch: Welford stats of x and e per dimension
  private bn = 0;
  private readonly bMeanX: Float64Array;
  private readonly bM2X: Float64Array;
  private readonly bMeanE: Float64Array;
  private readonly bM2E: Float64Array;
  // finished batches
  private readonly fves: number[] = [];
  private gn = 0;
  private readonly gMeanX: Float64Array;
  private readonly gM2X: Float64Array;

  constructor(d: number, Wdec: Float32Array, bdec: Float32Array, opts: ReconOptions = {}) {
    check(Number.isInteger(d) && d >= 1, `reconMetrics: d must be a positive integer (got ${d})`);
    check(Wdec instanceof Float32Array, "reconMetrics: Wdec must be a Float32Array");
    check(bdec instanceof Float32Array, "reconMetrics: bdec must be a Float32Array");
    check(
      Wdec.length % d === 0 && Wdec.length > 0,
      `reconMetrics: Wdec has ${Wdec.length} values, not a positive multiple of d = ${d} ([ω, d] expected)`,
    );
    check(bdec.length === d, `reconMetrics: bdec has ${bdec.length} values, expected d = ${d}`);
    const batchSize = opts.batchSize ?? DEFAULT_RECON_BATCH;
    check(
      Number.isInteger(batchSize) && batchSize >= 1,
      `reconMetrics: batchSize must be a positive integer (got ${batchSize})`,
    );
    checkFinite(Wdec, "reconMetrics: Wdec");
    checkFinite(bdec, "reconMetrics: bdec");
    this.d = d;
    this.width = Wdec.length / d;
    this.batchSize = batchSize;
    this.Wdec = Wdec;
    this.bdec = bdec;
    this.xh = new Float64Array(d);
    this.active = new Uint8Array(this.width);
    this.bMeanX = new Float64Array(d);
    this.bM2X = new Float64Array(d);
    this.bMeanE = new Float64Array(d);
    this.bM2E = new Float64Array(d);
    this.gMeanX = new Float64Array(d);
    this.gM2X = new Float64Array(d);
  }

  /** Add `codes.n` rows: x [codes.n, d] row-major and their codes [codes.n, ω]. */
  add(x: Float32Array, codes: ActMatrix): void {
    checkActMatrix(codes, "reconMetrics codes");
    const { d, width } = this;
    check(
      codes.cols === width,
      `reconMetrics: codes have ${codes.cols} columns but Wdec has ω = ${width} rows`,
    );
    check(x instanceof Float32Array, "reconMetrics: x must be a Float32Array");
    check(
      x.length === codes.n * d,
      `reconMetrics: x has ${x.length} values, expected n·d = ${codes.n}·${d} = ${codes.n * d}`,
    );
    checkFinite(x, "reconMetrics: x");
    const { bdec, xh } = this;
    for (let r = 0; r < codes.n; r++) {
      for (let t = 0; t < d; t++) xh[t] = bdec[t];
      if (codes.kind === "csr") {
        for (let p = codes.rowPtr[r], pe = codes.rowPtr[r + 1]; p < pe; p++) {
          const a = codes.val[p];
          if (a === 0) continue;
          this.addLatent(codes.idx[p], a);
        }
      } else {
        for (let j = 0, o = r * width; j < width; j++) {
          const a = codes.data[o + j];
          if (a !== 0) this.addLatent(j, a);
        }
      }
      // Row statistics (Welford for the current batch).
      const c = ++this.bn;
      const ic = 1 / c;
      const { bMeanX, bM2X, bMeanE, bM2E } = this;
      let e2 = 0, x2 = 0;
      for (let t = 0, o = r * d; t < d; t++, o++) {
        const xv = x[o];
        const ev = xv - xh[t];
        e2 += ev * ev;
        x2 += xv * xv;
        const dx = xv - bMeanX[t];
        bMeanX[t] += dx * ic;
        bM2X[t] += dx * (xv - bMeanX[t]);
        const de = ev - bMeanE[t];
        bMeanE[t] += de * ic;
        bM2E[t] += de * (ev - bMeanE[t]);
      }
      this.sumE2 += e2;
      this.sumX2 += x2;
      this.rows++;
      if (this.bn === this.batchSize) this.closeBatch();
    }
  }

  private addLatent(j: number, a: number): void {
    const { d, Wdec, xh } = this;
    this.active[j] = 1;
    this.nnzTotal++;
    for (let t = 0, o = j * d; t < d; t++, o++) xh[t] += a * Wdec[o];
  }

  private batchFve(): number {
    let se = 0, sx = 0;
    for (let t = 0; t < this.d; t++) {
      se += this.bM2E[t];
      sx += this.bM2X[t];
    }
    return 1 - se / sx;
  }

  /** Merge the current batch's x stats into (gn, gMean, gM2) given as arrays; returns new gn. */
  private mergeInto(gn: number, gMean: Float64Array, gM2: Float64Array): number {
    const bn = this.bn;
    if (bn === 0) return gn;
    const tot = gn + bn;
    const fb = bn / tot, cross = (gn * bn) / tot;
    for (let t = 0; t < this.d; t++) {
      const delta = this.bMeanX[t] - gMean[t];
      gMean[t] += delta * fb;
      gM2[t] += this.bM2X[t] + delta * delta * cross;
    }
    return tot;
  }

  private closeBatch(): void {
    this.fves.push(this.batchFve());
    this.gn = this.mergeInto(this.gn, this.gMeanX, this.gM2X);
    this.bn = 0;
    this.bMeanX.fill(0);
    this.bM2X.fill(0);
    this.bMeanE.fill(0);
    this.bM2E.fill(0);
  }

  /** Rows added so far. */
  get count(): number {
    return this.rows;
  }

  /** Metrics over all rows added so far (a trailing partial batch counts as a batch). */
  result(): ReconMetrics {
    if (this.rows === 0) throw new MonobenchError("reconMetrics: empty evaluation set (no rows added)");
    const fves = this.fves.slice();
    const gMean = this.gMeanX.slice();
    const gM2 = this.gM2X.slice();
    if (this.bn > 0) {
      fves.push(this.batchFve());
      this.mergeInto(this.gn, gMean, gM2);
    }
    let fveBatchmean = 0;
    for (const f of fves) fveBatchmean += f;
    fveBatchmean /= fves.length;
    let ssTot = 0;
    for (let t = 0; t < this.d; t++) ssTot += gM2[t];
    let dead = 0;
    for (let j = 0; j < this.width; j++) if (!this.active[j]) dead++;
    return {
      fve: {
        fve_batchmean: fveBatchmean,
        r2_global: 1 - this.sumE2 / ssTot,
        fve_uncentered: 1 - this.sumE2 / this.sumX2,
      },
      r2: 100 * fveBatchmean,
      l0: this.nnzTotal / this.rows,
      deadCount: dead,
      deadFraction: dead / this.width,
      mse: this.sumE2 / this.rows,
      n: this.rows,
      batchFve: fves,
    };
  }
}

/**
 * Reconstruction metrics of codes [n, ω] (CSR or dense) decoding x [n, d] through Wdec [ω, d]
 * and bdec [d]; see the module doc for the variants. Throws MonobenchError on shape mismatches,
 * non-finite values or an empty set.
 */
export function reconMetrics(
  x: Float32Array,
  n: number,
  d: number,
  codes: ActMatrix,
  Wdec: Float32Array,
  bdec: Float32Array,
  opts: ReconOptions = {},
): ReconMetrics {
  check(Number.isInteger(n) && n >= 1, `reconMetrics: n must be a positive integer (got ${n})`);
  check(codes?.n === n, `reconMetrics: codes have ${codes?.n} rows, expected n = ${n}`);
  const acc = new ReconAccumulator(d, Wdec, bdec, opts);
  acc.add(x, codes);
  return acc.result();
}
