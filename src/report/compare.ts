/**
 * Comparison view: one SAE variant against reference variants (BatchTopK and Matryoshka by
 * default) at equal layer, ε and K, metric by metric, as differences over seed replicates with an
 * interval and a verdict; and the Pareto fronts of R² against MS and against L0 for the plots.
 *
 * Differences are variant − reference: paired by seed when both cases have the same seeds (same
 * seed = same data order), else Welch's t (see {@link diffStat}). Verdict at the chosen level:
 * "better" / "worse" when the interval lies entirely on one side of 0 (in the metric's good
 * direction), else "indistinguishable" — which includes one-seed runs, whose interval is
 * unbounded. L0 has no good direction at a fixed K (that trade-off is what the Pareto plot shows),
 * so its verdict is "higher" / "lower" / "indistinguishable". Intervals are per row; with many
 * rows, some at 95 % will exclude 0 by chance — read the summary counts with that in mind.
 */
import type { CaseResult, PaperLayer } from "../types.ts";
import { MonobenchError } from "../util/errors.ts";
import { aggregateCases, type CaseAggregate, type DiffStat, diffStat, seedOf, type Stat } from "./stats.ts";

export type CompareMetric = "ms_mean" | "ms_max" | "frac_above_raw" | "r2" | "l0" | "dead_fraction";
export const COMPARE_METRICS: readonly CompareMetric[] = [
  "ms_mean",
  "ms_max",
  "frac_above_raw",
  "r2",
  "l0",
  "dead_fraction",
];

/** Which direction of a metric is better. */
export const METRIC_DIRECTION: Readonly<Record<CompareMetric, "higher" | "lower" | "none">> = {
  ms_mean: "higher",
  ms_max: "higher",
  frac_above_raw: "higher",
  r2: "higher",
  l0: "none",
  dead_fraction: "lower",
};

export const METRIC_LABEL: Readonly<Record<CompareMetric, string>> = {
  ms_mean: "MS mean",
  ms_max: "MS max",
  frac_above_raw: "fraction above raw",
  r2: "R² %",
  l0: "L0",
  dead_fraction: "dead fraction",
};

export type Verdict = "better" | "worse" | "indistinguishable" | "higher" | "lower";

export const DEFAULT_REFERENCES: readonly string[] = ["batchtopk", "matryoshka"];

export interface ComparisonRow {
  reference: string;
  layer: PaperLayer;
  expansion: number;
  k: number;
  metric: CompareMetric;
  /** Similarity source for the MS metrics, "" otherwise. */
  source: string;
  variantCase: string;
  referenceCase: string;
  /** The variant's and the reference's metric over their seeds. */
  variantStat: Stat;
  referenceStat: Stat;
  /** variant − reference. */
  diff: DiffStat;
  verdict: Verdict;
}

export interface ComparisonSummary {
  reference: string;
  metric: CompareMetric;
  source: string;
  total: number;
  counts: Record<Verdict, number>;
}

export interface Comparison {
  variant: string;
  references: string[];
  level: number;
  method: string;
  rows: ComparisonRow[];
  summary: ComparisonSummary[];
  /** Variant cases with no reference case at the same layer, ε and K. */
  unmatched: string[];
}

export interface CompareOptions {
  /** The SAE variant to compare (a `sae` name of the cases). */
  variant: string;
  /** Reference variants (default batchtopk and matryoshka, minus the variant itself). */
  references?: string[];
  /** Confidence level of the intervals and verdicts (default 0.95). */
  level?: number;
}

const METHOD = "variant − reference over seeds: paired t-interval when both have the same seeds, " +
  "else Welch t; better/worse when the interval excludes 0";

function metricValues(c: CaseResult, metric: CompareMetric, source: string): number {
  switch (metric) {
    case "ms_mean":
      return c.ms.find((m) => m.encoder === source)?.mean ?? NaN;
    case "ms_max":
      return c.ms.find((m) => m.encoder === source)?.max ?? NaN;
    case "frac_above_raw":
      return c.fracAboveRaw?.[source] ?? NaN;
    case "r2":
      return c.r2;
    case "l0":
      return c.l0;
    case "dead_fraction":
      return c.deadFraction;
  }
}

function aggStat(a: CaseAggregate, metric: CompareMetric, source: string): Stat {
  const none: Stat = { mean: NaN, std: NaN, ci95: [NaN, NaN], n: 0 };
  switch (metric) {
    case "ms_mean":
      return a.ms.find((m) => m.encoder === source)?.mean ?? none;
    case "ms_max":
      return a.ms.find((m) => m.encoder === source)?.max ?? none;
    case "frac_above_raw":
      return a.fracAboveRaw[source] ?? none;
    case "r2":
      return a.r2;
    case "l0":
      return a.l0;
    case "dead_fraction":
      return a.deadFraction;
  }
}

/** The verdict for a difference variant − reference of a metric. */
export function verdictOf(d: Pick<DiffStat, "lo" | "hi">, metric: CompareMetric): Verdict {
  const up = d.lo > 0, down = d.hi < 0; // false for NaN bounds (no interval)
  const dir = METRIC_DIRECTION[metric];
  if (dir === "none") return up ? "higher" : down ? "lower" : "indistinguishable";
  if (!up && !down) return "indistinguishable";
  return up === (dir === "higher") ? "better" : "worse";
}

/**
 * Compare `opts.variant` with each reference at equal layer, ε and K on MS mean and max and the
 * fraction above raw (per similarity source both cases have), R², L0 and the dead fraction.
 * Pure; `cases` are the run's CaseResults, replicates included. Throws MonobenchError for an
 * unknown variant or reference name, or a level outside (0, 1).
 */
export function compareVariants(cases: readonly CaseResult[], opts: CompareOptions): Comparison {
  const level = opts.level ?? 0.95;
  if (!(level > 0 && level < 1)) {
    throw new MonobenchError(`comparison level must be between 0 and 1 (exclusive), got ${level}`);
  }
  const saes = [...new Set(cases.map((c) => c.sae))];
  if (!saes.includes(opts.variant)) {
    throw new MonobenchError(
      `comparison: no case of variant "${opts.variant}" in the run; variants present: ${
        saes.join(", ") || "none"
      }`,
    );
  }
  const references = (opts.references ?? DEFAULT_REFERENCES.filter((r) => r !== opts.variant)).filter(
    (r, i, a) => a.indexOf(r) === i,
  );
  if (opts.references) {
    for (const r of references) {
      if (r === opts.variant) {
        throw new MonobenchError(`comparison: "${r}" is both the variant and a reference`);
      }
      if (!saes.includes(r)) {
        throw new MonobenchError(
          `comparison: no case of reference "${r}" in the run; variants present: ${saes.join(", ")}`,
        );
      }
    }
  }
  const aggs = aggregateCases(cases);
  const reps = new Map<string, CaseResult[]>();
  for (const c of cases) {
    if (!reps.has(c.id)) reps.set(c.id, []);
    reps.get(c.id)!.push(c);
  }
  const key = (a: CaseAggregate) => `${a.layer}|${a.expansion}|${a.k}`;
  const bySae = new Map<string, Map<string, CaseAggregate>>();
  for (const a of aggs) {
    if (!bySae.has(a.sae)) bySae.set(a.sae, new Map());
    bySae.get(a.sae)!.set(key(a), a);
  }
  const rows: ComparisonRow[] = [];
  const unmatched: string[] = [];
  for (const v of aggs.filter((a) => a.sae === opts.variant)) {
    let matched = false;
    for (const ref of references) {
      const r = bySae.get(ref)?.get(key(v));
      if (!r) continue;
      matched = true;
      const sources = v.ms.map((m) => m.encoder).filter((s) => r.ms.some((m) => m.encoder === s));
      const fracSources = Object.keys(v.fracAboveRaw).filter((s) => s in r.fracAboveRaw);
      const items: [CompareMetric, string][] = [
        ...sources.map((s) => ["ms_mean", s] as [CompareMetric, string]),
        ...sources.map((s) => ["ms_max", s] as [CompareMetric, string]),
        ...fracSources.map((s) => ["frac_above_raw", s] as [CompareMetric, string]),
        ["r2", ""],
        ["l0", ""],
        ["dead_fraction", ""],
      ];
      for (const [metric, source] of items) {
        const sv = (id: string) =>
          reps.get(id)!.map((c) => ({ seed: seedOf(c), value: metricValues(c, metric, source) }));
        const diff = diffStat(sv(v.id), sv(r.id), level);
        rows.push({
          reference: ref,
          layer: v.layer,
          expansion: v.expansion,
          k: v.k,
          metric,
          source,
          variantCase: v.id,
          referenceCase: r.id,
          variantStat: aggStat(v, metric, source),
          referenceStat: aggStat(r, metric, source),
          diff,
          verdict: verdictOf(diff, metric),
        });
      }
    }
    if (!matched) unmatched.push(v.id);
  }
  const summary: ComparisonSummary[] = [];
  for (const row of rows) {
    let s = summary.find((x) =>
      x.reference === row.reference && x.metric === row.metric && x.source === row.source
    );
    if (!s) {
      s = {
        reference: row.reference,
        metric: row.metric,
        source: row.source,
        total: 0,
        counts: { better: 0, worse: 0, indistinguishable: 0, higher: 0, lower: 0 },
      };
      summary.push(s);
    }
    s.total++;
    s.counts[row.verdict]++;
  }
  return { variant: opts.variant, references, level, method: METHOD, rows, summary, unmatched };
}

/**
 * Indices of the Pareto-optimal points (no other point at least as good on both axes and better
 * on one), `x` better when higher or lower as given, `y` better when higher. Non-finite points
 * are never optimal.
 */
export function paretoFront(
  points: readonly { x: number; y: number }[],
  xBetter: "higher" | "lower",
): number[] {
  const sx = xBetter === "higher" ? 1 : -1;
  const out: number[] = [];
  points.forEach((p, i) => {
    if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) return;
    const dominated = points.some((q, j) =>
      j !== i && Number.isFinite(q.x) && Number.isFinite(q.y) && sx * q.x >= sx * p.x && q.y >= p.y &&
      (sx * q.x > sx * p.x || q.y > p.y)
    );
    if (!dominated) out.push(i);
  });
  return out;
}
