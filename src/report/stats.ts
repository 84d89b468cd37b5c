/**
 * Statistics over seed replicates: a {@link Stat} (mean, sample std, 95 % interval, n) per metric,
 * per-case aggregates of replicated {@link CaseResult}s, and differences between two sets of
 * replicates (paired by seed, or Welch) with a verdict.
 *
 * Interval method: Student-t for the mean, mean ± t_{(1+level)/2, n−1} · s/√n with s the sample
 * standard deviation (n − 1). Seeds are few (3–10), so the t-interval, not a bootstrap (which
 * cannot reach the tails from 3 values), is the honest choice. With n = 1 there is no interval:
 * std and both bounds are NaN (null in report.json), and anything judged on it is "not resolved";
 * a degenerate [x, x] would read as certainty to any consumer that tests the bounds.
 * Non-finite values (a NaN MS mean when no latent scored) are left out, and n counts the rest.
 */
import type { CaseResult, MsSummary, PaperLayer } from "../types.ts";
import { MonobenchError } from "../util/errors.ts";
import { studentTQuantile } from "../util/tdist.ts";

/** One metric over seed replicates. */
export interface Stat {
  mean: number;
  /** Sample standard deviation over seeds (NaN for n < 2). */
  std: number;
  /** Student-t 95 % interval for the mean ([NaN, NaN] for n < 2). */
  ci95: [number, number];
  /** Number of finite replicates. */
  n: number;
}

export const STATS_METHOD =
  "mean over seeds ± Student-t 95 % interval for the mean (t_{0.975, n−1} · s/√n, s = sample std); " +
  "n = 1 gives no interval and is reported as not resolved";

const quantileCache = new Map<string, number>();

/** Student-t quantile, memoised: reports ask for the same few (level, df) pairs many times. */
export function tQuantile(p: number, df: number): number {
  const key = `${p}|${df}`;
  let t = quantileCache.get(key);
  if (t === undefined) {
    t = studentTQuantile(p, df);
    if (quantileCache.size < 4096) quantileCache.set(key, t);
  }
  return t;
}

// ---- Stat ---------------------------------------------------------------------------------------

function checkLevel(level: number): void {
  if (!(level > 0 && level < 1)) {
    throw new MonobenchError(`confidence level must be between 0 and 1 (exclusive), got ${level}`);
  }
}

/** Mean, sample std and Student-t interval at `level` of the finite values. */
export function meanInterval(
  values: readonly number[],
  level = 0.95,
): { mean: number; std: number; lo: number; hi: number; n: number } {
  checkLevel(level);
  const v = values.filter((x) => Number.isFinite(x));
  const n = v.length;
  if (n === 0) return { mean: NaN, std: NaN, lo: NaN, hi: NaN, n };
  const mean = v.reduce((s, x) => s + x, 0) / n;
  if (n === 1) return { mean, std: NaN, lo: NaN, hi: NaN, n };
  const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) * (x - mean), 0) / (n - 1));
  const half = tQuantile((1 + level) / 2, n - 1) * std / Math.sqrt(n);
  return { mean, std, lo: mean - half, hi: mean + half, n };
}

/** A {@link Stat} of the finite values (see the module doc for the method). */
export function stat(values: readonly number[]): Stat {
  const m = meanInterval(values, 0.95);
  return { mean: m.mean, std: m.std, ci95: [m.lo, m.hi], n: m.n };
}

/** True when the Stat has an interval (n ≥ 2 and finite bounds). */
export function resolved(s: Pick<Stat, "ci95">): boolean {
  return Number.isFinite(s.ci95[0]) && Number.isFinite(s.ci95[1]);
}

/**
 * Where an interval lies against a threshold: "above" (lo > t), "below" (hi < t), or "straddles"
 * (contains t, or there is no interval).
 */
export function sideOf(lo: number, hi: number, t: number): "above" | "below" | "straddles" {
  if (!(Number.isFinite(lo) && Number.isFinite(hi))) return "straddles";
  if (lo > t) return "above";
  if (hi < t) return "below";
  return "straddles";
}

// ---- differences between two replicate sets -----------------------------------------------------

/** A value of one seed replicate. */
export interface SeedValue {
  seed: number;
  value: number;
}

/** Difference a − b of the means of two replicate sets, with an interval at `level`. */
export interface DiffStat {
  mean: number;
  /** Standard error of the difference. */
  se: number;
  lo: number;
  hi: number;
  level: number;
  /** Pairs (paired) or min(nA, nB) (Welch). */
  n: number;
  df: number;
  /**
   * "paired": both sides have the same seeds, t-interval of the per-seed differences;
   * "welch": unequal seed sets, Welch's t with Satterthwaite's df; "none": too few replicates.
   */
  method: "paired" | "welch" | "none";
}

/**
 * a − b over seed replicates. Pairs by seed when both sides have the same set of seeds with
 * finite values (≥ 2 of them): the same seed shares initialisation and data order, so pairing
 * removes that shared noise. Otherwise Welch's unequal-variance t (each side ≥ 2 values).
 */
export function diffStat(a: readonly SeedValue[], b: readonly SeedValue[], level = 0.95): DiffStat {
  checkLevel(level);
  const fa = a.filter((x) => Number.isFinite(x.value));
  const fb = b.filter((x) => Number.isFinite(x.value));
  const none = (m: number, n: number): DiffStat => ({
    mean: m,
    se: NaN,
    lo: NaN,
    hi: NaN,
    level,
    n,
    df: NaN,
    method: "none",
  });
  if (fa.length === 0 || fb.length === 0) return none(NaN, 0);
  const sa = new Map(fa.map((x) => [x.seed, x.value]));
  const sb = new Map(fb.map((x) => [x.seed, x.value]));
  if (sa.size !== fa.length || sb.size !== fb.length) {
    throw new MonobenchError("diffStat: a seed appears twice on one side");
  }
  const sameSeeds = sa.size === sb.size && [...sa.keys()].every((s) => sb.has(s));
  if (sameSeeds) {
    const d = [...sa].map(([s, v]) => v - sb.get(s)!);
    const m = meanInterval(d, level);
    if (m.n < 2) return none(m.mean, m.n);
    return {
      mean: m.mean,
      se: m.std / Math.sqrt(m.n),
      lo: m.lo,
      hi: m.hi,
      level,
      n: m.n,
      df: m.n - 1,
      method: "paired",
    };
  }
  const ma = meanInterval(fa.map((x) => x.value), level);
  const mb = meanInterval(fb.map((x) => x.value), level);
  const dm = ma.mean - mb.mean;
  if (ma.n < 2 || mb.n < 2) return none(dm, Math.min(ma.n, mb.n));
  const va = (ma.std * ma.std) / ma.n;
  const vb = (mb.std * mb.std) / mb.n;
  const se = Math.sqrt(va + vb);
  if (se === 0) {
    return { mean: dm, se, lo: dm, hi: dm, level, n: Math.min(ma.n, mb.n), df: Infinity, method: "welch" };
  }
  const df = (va + vb) ** 2 / ((va * va) / (ma.n - 1) + (vb * vb) / (mb.n - 1));
  const half = tQuantile((1 + level) / 2, df) * se;
  return { mean: dm, se, lo: dm - half, hi: dm + half, level, n: Math.min(ma.n, mb.n), df, method: "welch" };
}

// ---- per-case aggregates ------------------------------------------------------------------------

/** Pointwise band of sorted-MS curves across seeds, on a common grid of fractional ranks. */
export interface CurveBand {
  /** Fractional rank of each point (0 = best latent, 1 = worst). */
  x: number[];
  mean: number[];
  /** Pointwise 95 % t-interval across seeds (NaN with one seed). */
  lo: number[];
  hi: number[];
}

export interface MsAggregate {
  encoder: string;
  mean: Stat;
  /** Each seed's std over latents, as a Stat over seeds. */
  std: Stat;
  min: Stat;
  max: Stat;
  nanCount: Stat;
  /** Latents scored per seed (the same for every seed). */
  count: number;
  curve: CurveBand;
}

/** One benchmark case over its seed replicates. */
export interface CaseAggregate {
  id: string;
  layer: PaperLayer;
  sourceLayer: string;
  sae: string;
  expansion: number;
  d: number;
  width: number;
  k: number;
  steps: number;
  batchSize: number;
  lr: number;
  /** Backends of the replicates, distinct, comma-separated. */
  backend: string;
  /** Seeds of the replicates, ascending. */
  seeds: number[];
  n: number;
  ms: MsAggregate[];
  fracAboveRaw: Record<string, Stat>;
  r2: Stat;
  fve: Record<string, Stat>;
  l0: Stat;
  deadCount: Stat;
  deadFraction: Stat;
  deadTrain: Stat;
  finalLoss: Stat;
  trainSeconds: Stat;
}

/** A replicate's seed (reports written before seeds existed have none: 0). */
export function seedOf(c: CaseResult): number {
  const s = (c as CaseResult & { seed?: unknown }).seed;
  return typeof s === "number" && Number.isFinite(s) ? s : 0;
}

const CONFIG_KEYS = [
  "layer",
  "sourceLayer",
  "sae",
  "expansion",
  "d",
  "width",
  "k",
  "steps",
  "batchSize",
  "lr",
] as const;

/** Resample a descending curve onto `P` evenly spaced fractional ranks (linear interpolation). */
export function resampleCurve(curve: readonly number[], P: number): number[] {
  const n = curve.length;
  if (n === 0) return new Array(P).fill(NaN);
  if (n === 1 || P === 1) return new Array(P).fill(curve[0]);
  const out: number[] = [];
  for (let i = 0; i < P; i++) {
    const pos = (i * (n - 1)) / (P - 1);
    const j = Math.min(n - 2, Math.floor(pos));
    const f = pos - j;
    out.push(curve[j] * (1 - f) + curve[j + 1] * f);
  }
  return out;
}

/** Pointwise mean and 95 % band of several sorted-MS curves. */
export function curveBand(curves: readonly (readonly number[])[]): CurveBand {
  const live = curves.filter((c) => c.length > 0);
  const P = live.reduce((m, c) => Math.max(m, c.length), 0);
  const band: CurveBand = { x: [], mean: [], lo: [], hi: [] };
  if (P === 0) return band;
  const rs = live.map((c) => resampleCurve(c, P));
  for (let i = 0; i < P; i++) {
    const m = meanInterval(rs.map((r) => r[i]));
    band.x.push(P === 1 ? 0 : i / (P - 1));
    band.mean.push(m.mean);
    band.lo.push(m.lo);
    band.hi.push(m.hi);
  }
  return band;
}

function msAggregate(encoder: string, ms: MsSummary[]): MsAggregate {
  const counts = [...new Set(ms.map((m) => m.count))];
  return {
    encoder,
    mean: stat(ms.map((m) => m.mean)),
    std: stat(ms.map((m) => m.std)),
    min: stat(ms.map((m) => m.min)),
    max: stat(ms.map((m) => m.max)),
    nanCount: stat(ms.map((m) => m.nanCount)),
    count: counts.length === 1 ? counts[0] : NaN,
    curve: curveBand(ms.map((m) => m.curve ?? [])),
  };
}

/**
 * Group replicated CaseResults (same `id`, different `seed`; a missing seed counts as 0) into one
 * {@link CaseAggregate} per case, in first-appearance order, with one {@link Stat} per metric.
 * A metric missing from some replicates (a similarity source, an FVE variant) is aggregated over
 * the replicates that have it. Throws MonobenchError when two replicates of a case share a seed
 * or disagree on the case's configuration (layer, SAE, ε, K, d, width, steps, batch size, lr) —
 * results of different setups must never be averaged together.
 */
export function aggregateCases(cases: readonly CaseResult[]): CaseAggregate[] {
  const groups = new Map<string, CaseResult[]>();
  for (const c of cases) {
    if (!groups.has(c.id)) groups.set(c.id, []);
    groups.get(c.id)!.push(c);
  }
  const out: CaseAggregate[] = [];
  for (const [id, reps0] of groups) {
    const reps = [...reps0].sort((a, b) => seedOf(a) - seedOf(b));
    const first = reps[0];
    const seeds = reps.map(seedOf);
    for (let i = 1; i < seeds.length; i++) {
      if (seeds[i] === seeds[i - 1]) {
        throw new MonobenchError(`case ${id}: two results for seed ${seeds[i]}; a run must not mix results`);
      }
    }
    for (const r of reps) {
      for (const key of CONFIG_KEYS) {
        if (!Object.is(r[key], first[key])) {
          throw new MonobenchError(
            `case ${id}: seed ${seedOf(r)} has ${key} ${JSON.stringify(r[key])}, seed ${seedOf(first)} has ` +
              `${JSON.stringify(first[key])}; replicates of one case must share its configuration`,
          );
        }
      }
    }
    const sources: string[] = [];
    for (const r of reps) {
      for (const m of r.ms ?? []) if (!sources.includes(m.encoder)) sources.push(m.encoder);
    }
    const fracKeys = [...new Set(reps.flatMap((r) => Object.keys(r.fracAboveRaw ?? {})))];
    const fveKeys = [...new Set(reps.flatMap((r) => Object.keys(r.fve ?? {})))];
    const pick = (f: (r: CaseResult) => number | undefined) => stat(reps.map((r) => f(r) ?? NaN));
    out.push({
      id,
      layer: first.layer,
      sourceLayer: first.sourceLayer,
      sae: first.sae,
      expansion: first.expansion,
      d: first.d,
      width: first.width,
      k: first.k,
      steps: first.steps,
      batchSize: first.batchSize,
      lr: first.lr,
      backend: [...new Set(reps.map((r) => r.backend))].join(","),
      seeds,
      n: reps.length,
      ms: sources.map((s) =>
        msAggregate(s, reps.flatMap((r) => (r.ms ?? []).filter((m) => m.encoder === s)))
      ),
      fracAboveRaw: Object.fromEntries(fracKeys.map((s) => [s, pick((r) => r.fracAboveRaw?.[s])])),
      r2: pick((r) => r.r2),
      fve: Object.fromEntries(fveKeys.map((k) => [k, pick((r) => r.fve?.[k])])),
      l0: pick((r) => r.l0),
      deadCount: pick((r) => r.deadCount),
      deadFraction: pick((r) => r.deadFraction),
      deadTrain: pick((r) => r.deadTrain),
      finalLoss: pick((r) => r.finalLoss),
      trainSeconds: pick((r) => r.trainSeconds),
    });
  }
  return out;
}
