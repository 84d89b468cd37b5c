/**
 * Regression mode (`--baseline FILE`): compare a run's report with a stored baseline report.json.
 *
 * - Refusals (MonobenchError, exit 2), not warnings: a baseline of another report version, one
 *   that fails the schema, one made with another config (training settings, data sizes: named
 *   field by field) or on other data (store hashes).
 * - Two-sided: per case and metric, a change outside the tolerance in either direction is
 *   reported — worse (MS mean/max or fraction above raw down, R² down, L0 further from K, dead
 *   fraction up) and better alike, since a bug can look like an improvement. Either fails the
 *   check (the CLI exits 1); after an intended change, regenerate the baseline.
 * - Seed-aware: when the baseline holds ≥ 2 seeds of a case, the tolerance is the 95 %
 *   Student-t half-width of the difference of means, t₀.₉₇₅,ₙ₋₁ · s · √(1/n_baseline + 1/n_run),
 *   with s the baseline's seed standard deviation (and at least a tenth of the fixed tolerance,
 *   so that a metric with no spread, e.g. no dead latents on any seed, is not held to exactly
 *   zero). With one seed the fixed tolerances apply, and the output says so.
 * - A claim that changes between pass and fail is a change too; a baseline case missing from the
 *   run is a worse finding.
 */
import { compareSketches } from "../data/sketch.ts";
import type { MonobenchConfig } from "../run/config.ts";
import { describeDifferences, diffConfigs } from "../run/config.ts";
import { checkSchema, REPORT_SCHEMA } from "../run/schemas.ts";
import type { CaseResult } from "../types.ts";
import { MonobenchError } from "../util/errors.ts";
import { nullAsNaN } from "../util/json.ts";
import { stat, tQuantile } from "./stats.ts";
import { type Report, REPORT_VERSION } from "./types.ts";

export interface BaselineTolerances {
  /** MS mean (score units). */
  msMean: number;
  /** MS max. */
  msMax: number;
  /** Fraction of latents above the raw-neuron mean MS. */
  fracAboveRaw: number;
  /** R² (percentage points). */
  r2: number;
  /** L0 (latents). */
  l0: number;
  /** Dead fraction. */
  deadFraction: number;
}

/** Fixed tolerances, used for single-seed baselines (and a tenth of them as the floor otherwise). */
export const DEFAULT_BASELINE_TOLERANCES: Readonly<BaselineTolerances> = Object.freeze({
  msMean: 0.02,
  msMax: 0.05,
  fracAboveRaw: 0.05,
  r2: 1.0,
  l0: 1.0,
  deadFraction: 0.05,
});

/** Share of the fixed tolerance a seed-derived tolerance never goes below. */
export const SPREAD_FLOOR = 0.1;

export type FindingKind = "metric" | "claim" | "missing-case";
export type Direction = "worse" | "better";

export interface Finding {
  kind: FindingKind;
  /** Case id, or the claim id for claim findings. */
  caseId: string;
  /** e.g. "ms_mean/labels", "r2", "l0", "dead_fraction", "claim", "case". */
  metric: string;
  direction: Direction;
  /** Baseline and current value (the mean over seeds for metrics). */
  baseline: number | string | null;
  current: number | string | null;
  /** current − baseline for numeric metrics. */
  delta: number | null;
  tolerance: number | null;
  /** How the tolerance was set. */
  basis: "seed-spread" | "fixed" | null;
  message: string;
}

export interface BaselineComparison {
  /** Changes for the worse. */
  regressions: Finding[];
  /** Changes for the better (outside the interval all the same: they fail the check too). */
  improvements: Finding[];
  /** Number of (case, metric) and claim comparisons made. */
  compared: number;
  /** Non-fatal remarks (cases not in the baseline, other seeds, unresolved claims). */
  warnings: string[];
  /** Cases whose tolerance came from the baseline's seed spread, and cases with fixed tolerances. */
  spreadCases: number;
  fixedCases: number;
  /** Baseline seeds per case (largest). */
  baselineSeeds: number;
}

/** Whether the comparison found any change outside its tolerance (the CLI then exits 1). */
export function baselineFailed(c: BaselineComparison): boolean {
  return c.regressions.length + c.improvements.length > 0;
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/**
 * Check a parsed report.json (nulls as written) against the version and schema/report.schema.json;
 * returns it with null read back as NaN.
 */
export function validateReport(obj: unknown, what: string): Report {
  if (!isObj(obj)) throw new MonobenchError(`${what}: not a JSON object`);
  if (obj.version !== REPORT_VERSION) {
    throw new MonobenchError(
      `${what} has report version ${
        JSON.stringify(obj.version)
      }; this monobench reads version ${REPORT_VERSION}`,
      typeof obj.version === "number" && obj.version < REPORT_VERSION
        ? "regenerate the baseline with this version (results/README.md)"
        : "use the monobench version that wrote it, or regenerate it",
    );
  }
  checkSchema(REPORT_SCHEMA, obj, what);
  return JSON.parse(JSON.stringify(obj), nullAsNaN) as Report;
}

/** Load a stored baseline report.json (missing, malformed or of another version → MonobenchError). */
export async function loadBaseline(path: string): Promise<Report> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new MonobenchError(
      `cannot read baseline ${path}: ${(e as Error).message}`,
      "pass the report.json of an earlier run (e.g. results/baseline/report.json)",
    );
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`baseline ${path} is not valid JSON: ${(e as Error).message}`);
  }
  return validateReport(obj, `baseline ${path}`);
}

/** Refuse a baseline made with another config (checked before any work is done). */
export function checkBaselineConfig(baseline: Report, config: Readonly<MonobenchConfig>, hash: string): void {
  const b = baseline.run;
  if (!b.config || !b.configHash) {
    throw new MonobenchError("the baseline has no config (report version < 2?)");
  }
  if (b.configHash === hash) return;
  const diffs = diffConfigs(b.config, config as MonobenchConfig);
  throw new MonobenchError(
    `the baseline was made with another config: ${
      diffs.length ? describeDifferences(diffs, "in the baseline") : "(another config format)"
    }`,
    "run with the baseline's settings (see its run.config), or regenerate the baseline (results/README.md)",
  );
}

/**
 * Refuse a baseline made on other data: every store role both know must have the same content
 * hash, or, where both runs recorded row sketches, the same rows up to float32 rounding (the
 * same data computed on another CPU). Returns one note per store accepted by its sketch.
 */
export function checkBaselineData(
  baseline: Report,
  data: Record<string, string>,
  sketches?: Record<string, number[]>,
): string[] {
  const b = baseline.run.provenance?.data ?? {};
  const bs = baseline.run.provenance?.dataSketch ?? {};
  const notes: string[] = [];
  const common = Object.keys(b).filter((k) => k in data);
  if (common.length === 0) {
    throw new MonobenchError(
      "the baseline was made on other data: no activation store in common " +
        `(baseline: ${Object.keys(b).join(", ") || "none"}; this run: ${Object.keys(data).join(", ")})`,
    );
  }
  for (const k of common) {
    if (b[k] === data[k]) continue;
    const sa = bs[k], sb = sketches?.[k];
    const cmp = sa && sb ? compareSketches(sa, sb) : undefined;
    if (cmp?.same) {
      notes.push(
        `data store ${k} hashes otherwise than the baseline's (${b[k].slice(0, 12)}… there, ` +
          `${data[k].slice(0, 12)}… now) but its rows agree to ${cmp.deviation.toExponential(1)} ` +
          `(floating point of another CPU): compared`,
      );
      continue;
    }
    throw new MonobenchError(
      `the baseline was made on other data: store ${k} has hash ${b[k].slice(0, 12)}… in the baseline, ` +
        `${data[k].slice(0, 12)}… now` +
        (cmp ? `, and its rows differ (relative ${cmp.deviation.toExponential(1)})` : ""),
      "use the baseline's data, or regenerate the baseline (results/README.md)",
    );
  }
  return notes;
}

const f = (x: number | null, d = 4) => (x === null || !Number.isFinite(x) ? "–" : x.toFixed(d));

function group(cases: readonly CaseResult[]): Map<string, CaseResult[]> {
  const m = new Map<string, CaseResult[]>();
  for (const c of cases) {
    if (!m.has(c.id)) m.set(c.id, []);
    m.get(c.id)!.push(c);
  }
  return m;
}

interface MetricDef {
  metric: string;
  label: string;
  value: (c: CaseResult) => number | undefined;
  tol: number;
  /** Which direction is better; for "l0", closer to K. */
  better: "higher" | "lower" | "closer-to-k";
}

function metricsOf(reps: readonly CaseResult[], t: BaselineTolerances): MetricDef[] {
  const sources = [...new Set(reps.flatMap((c) => c.ms.map((m) => m.encoder)))];
  const defs: MetricDef[] = [];
  for (const s of sources) {
    defs.push({
      metric: `ms_mean/${s}`,
      label: `MS mean (${s})`,
      value: (c) => c.ms.find((m) => m.encoder === s)?.mean,
      tol: t.msMean,
      better: "higher",
    });
    defs.push({
      metric: `ms_max/${s}`,
      label: `MS max (${s})`,
      value: (c) => c.ms.find((m) => m.encoder === s)?.max,
      tol: t.msMax,
      better: "higher",
    });
    defs.push({
      metric: `frac_above_raw/${s}`,
      label: `fraction above raw (${s})`,
      value: (c) => c.fracAboveRaw?.[s],
      tol: t.fracAboveRaw,
      better: "higher",
    });
  }
  defs.push({ metric: "r2", label: "R² %", value: (c) => c.r2, tol: t.r2, better: "higher" });
  defs.push({ metric: "l0", label: "L0", value: (c) => c.l0, tol: t.l0, better: "closer-to-k" });
  defs.push({
    metric: "dead_fraction",
    label: "dead fraction",
    value: (c) => c.deadFraction,
    tol: t.deadFraction,
    better: "lower",
  });
  return defs;
}

const finite = (xs: (number | undefined)[]) =>
  xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x));

/** Compare a run with a baseline report (see the module doc). */
export function compareWithBaseline(
  current: Report,
  baseline: Report,
  tol: Partial<BaselineTolerances> = {},
): BaselineComparison {
  const t: BaselineTolerances = { ...DEFAULT_BASELINE_TOLERANCES, ...tol };
  for (const [k, v] of Object.entries(t)) {
    if (typeof v !== "number" || !(v >= 0)) {
      throw new MonobenchError(`baseline tolerance "${k}" must be a non-negative number`);
    }
  }
  if (current.run.configHash && baseline.run.configHash && current.run.config) {
    checkBaselineConfig(baseline, current.run.config, current.run.configHash);
  }
  const warnings: string[] = [];
  if (current.run.provenance?.data && baseline.run.provenance?.data) {
    warnings.push(
      ...checkBaselineData(baseline, current.run.provenance.data, current.run.provenance.dataSketch),
    );
  }
  const regressions: Finding[] = [];
  const improvements: Finding[] = [];
  let compared = 0, spreadCases = 0, fixedCases = 0, baselineSeeds = 0;
  const push = (x: Finding) => (x.direction === "worse" ? regressions : improvements).push(x);

  const cur = group(current.cases);
  const base = group(baseline.cases);
  for (const [id, breps] of base) {
    const creps = cur.get(id);
    if (!creps) {
      compared++;
      push({
        kind: "missing-case",
        caseId: id,
        metric: "case",
        direction: "worse",
        baseline: id,
        current: null,
        delta: null,
        tolerance: null,
        basis: null,
        message: `${id}: case is in the baseline but missing from this run`,
      });
      continue;
    }
    const k = breps[0].k;
    const nbMax = breps.length;
    baselineSeeds = Math.max(baselineSeeds, nbMax);
    if (nbMax >= 2) spreadCases++;
    else fixedCases++;
    for (const m of metricsOf(breps, t)) {
      const bv = finite(breps.map(m.value));
      if (bv.length === 0) continue;
      compared++;
      const cv = finite(creps.map(m.value));
      const bs = stat(bv);
      if (cv.length === 0) {
        push({
          kind: "metric",
          caseId: id,
          metric: m.metric,
          direction: "worse",
          baseline: bs.mean,
          current: null,
          delta: null,
          tolerance: null,
          basis: null,
          message: `${id}: ${m.label} is missing (baseline ${f(bs.mean)})`,
        });
        continue;
      }
      const cs = stat(cv);
      const spread = bv.length >= 2;
      const tolerance = spread
        ? Math.max(
          tQuantile(0.975, bv.length - 1) * bs.std * Math.sqrt(1 / bv.length + 1 / cv.length),
          SPREAD_FLOOR * m.tol,
        )
        : m.tol;
      const delta = cs.mean - bs.mean;
      if (!(Math.abs(delta) > tolerance + 1e-12)) continue;
      let direction: Direction;
      if (m.better === "higher") direction = delta > 0 ? "better" : "worse";
      else if (m.better === "lower") direction = delta < 0 ? "better" : "worse";
      else direction = Math.abs(cs.mean - k) < Math.abs(bs.mean - k) ? "better" : "worse";
      const basis = spread ? "seed-spread" : "fixed";
      const seeds = spread ? `, from the seed spread of ${bv.length} baseline seeds` : ", fixed";
      push({
        kind: "metric",
        caseId: id,
        metric: m.metric,
        direction,
        baseline: bs.mean,
        current: cs.mean,
        delta,
        tolerance,
        basis,
        message: `${id}: ${m.label} ${f(bs.mean)} → ${f(cs.mean)} (${delta >= 0 ? "+" : ""}${f(delta)}, ` +
          `${direction}; tolerance ±${f(tolerance)}${seeds}${m.metric === "l0" ? `; K=${k}` : ""})`,
      });
    }
    const bseeds = breps.map((c) => c.seed).sort((a, b) => a - b).join(",");
    const cseeds = creps.map((c) => c.seed).sort((a, b) => a - b).join(",");
    if (bseeds !== cseeds && warnings.length < 50 && !warnings.some((w) => w.startsWith("seeds differ"))) {
      warnings.push(`seeds differ (e.g. ${id}: baseline ${bseeds}, this run ${cseeds}): means are compared`);
    }
  }
  const newCases = [...cur.keys()].filter((id) => !base.has(id));
  if (newCases.length) {
    warnings.push(
      `${newCases.length} case(s) not in the baseline (not compared): ${newCases.slice(0, 5).join(", ")}${
        newCases.length > 5 ? ", …" : ""
      }`,
    );
  }

  for (const bc of baseline.claims ?? []) {
    const cc = (current.claims ?? []).find((x) => x.id === bc.id);
    if (!cc) continue;
    compared++;
    if (bc.status === cc.status) continue;
    const pf = (s: string) => s === "pass" || s === "fail";
    if (!pf(bc.status) || !pf(cc.status)) {
      warnings.push(`claim ${bc.id}: ${bc.status} → ${cc.status}`);
      continue;
    }
    push({
      kind: "claim",
      caseId: bc.id,
      metric: "claim",
      direction: cc.status === "fail" ? "worse" : "better",
      baseline: bc.status,
      current: cc.status,
      delta: null,
      tolerance: null,
      basis: null,
      message: `claim ${bc.id}: ${bc.status} → ${cc.status} (${cc.evidence})`,
    });
  }
  return { regressions, improvements, compared, warnings, spreadCases, fixedCases, baselineSeeds };
}

/** How the tolerances were set, in one line. */
export function toleranceNote(r: BaselineComparison): string {
  const t = DEFAULT_BASELINE_TOLERANCES;
  const fixed = `fixed (MS mean ±${t.msMean}, MS max ±${t.msMax}, fraction above raw ±${t.fracAboveRaw}, ` +
    `R² ±${t.r2} pt, L0 ±${t.l0}, dead fraction ±${t.deadFraction})`;
  if (r.spreadCases === 0) return `tolerances: ${fixed}: the baseline has one seed per case`;
  const spread = `from the baseline's seed spread (95 % t-interval of the difference of means, up to ` +
    `${r.baselineSeeds} seeds per case; at least ${SPREAD_FLOOR * 100} % of the fixed tolerance)`;
  if (r.fixedCases === 0) return `tolerances: ${spread}`;
  return `tolerances: ${spread} for ${r.spreadCases} case(s); ${fixed} for ${r.fixedCases} single-seed case(s)`;
}

/** A short text summary for the terminal. */
export function formatBaselineSummary(r: BaselineComparison, maxLines = 20): string {
  const lines: string[] = [];
  const n = r.regressions.length + r.improvements.length;
  lines.push(
    `baseline: ${r.compared} comparisons, ${n} change(s) outside tolerance: ` +
      `${r.regressions.length} regression(s) (worse), ${r.improvements.length} improvement(s) (better)`,
  );
  lines.push(`  ${toleranceNote(r)}`);
  for (const w of r.warnings) lines.push(`  warning: ${w}`);
  const list = (title: string, fs: Finding[]) => {
    if (!fs.length) return;
    lines.push(`${title}:`);
    for (const x of fs.slice(0, maxLines)) lines.push(`  - ${x.message}`);
    if (fs.length > maxLines) lines.push(`  … and ${fs.length - maxLines} more`);
  };
  list("regressions", r.regressions);
  list("improvements (outside the tolerance too: if intended, regenerate the baseline)", r.improvements);
  return lines.join("\n");
}
