/**
 * Regression mode (`--baseline FILE`): compare a run's report with a stored baseline report.json.
 * Per case and metric, a change beyond the tolerance in the bad direction is a regression (MS
 * mean/max down, R² down, L0 drifting further from K, dead fraction up), one in the good
 * direction an improvement; a claim that passed and now fails and a baseline case missing from
 * the run are regressions too. The CLI exits 1 when `regressions` is non-empty.
 */
import { MonobenchError } from "../util/errors.ts";
import type { CaseResult } from "../types.ts";
import type { Report } from "./types.ts";

export interface BaselineTolerances {
  /** MS mean (score units) may drop by this much. */
  msMean: number;
  /** MS max may drop by this much. */
  msMax: number;
  /** R² (percentage points) may drop by this much. */
  r2: number;
  /** |L0 − K| may grow by this much (latents). */
  l0: number;
  /** Dead fraction may grow by this much. */
  deadFraction: number;
}

export const DEFAULT_BASELINE_TOLERANCES: Readonly<BaselineTolerances> = Object.freeze({
  msMean: 0.02,
  msMax: 0.05,
  r2: 1.0,
  l0: 1.0,
  deadFraction: 0.05,
});

export type FindingKind = "metric" | "claim" | "missing-case";

export interface Finding {
  kind: FindingKind;
  /** Case id, or the claim id for claim findings. */
  caseId: string;
  /** e.g. "ms_mean/labels", "r2", "l0_drift", "dead_fraction", "claim", "case". */
  metric: string;
  baseline: number | string | null;
  current: number | string | null;
  /** current − baseline for numeric metrics (for l0_drift: change of |L0 − K|). */
  delta: number | null;
  tolerance: number | null;
  message: string;
}

export interface BaselineComparison {
  regressions: Finding[];
  improvements: Finding[];
  /** Number of (case, metric) and claim comparisons made. */
  compared: number;
  /** Non-fatal remarks (different dataset or preset, new cases not in the baseline). */
  warnings: string[];
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** Check the shape of a parsed report.json enough for comparison (throws MonobenchError). */
export function validateReport(obj: unknown, what: string): Report {
  if (!isObj(obj)) throw new MonobenchError(`${what}: not a JSON object`);
  if (typeof obj.version !== "number") {
    throw new MonobenchError(`${what}: missing "version" (not a monobench report?)`);
  }
  if (!isObj(obj.run)) throw new MonobenchError(`${what}: missing "run"`);
  if (!Array.isArray(obj.cases)) throw new MonobenchError(`${what}: missing "cases" array`);
  obj.cases.forEach((c, i) => {
    if (!isObj(c) || typeof c.id !== "string" || !Array.isArray(c.ms)) {
      throw new MonobenchError(`${what}: cases[${i}] is malformed (needs "id" and "ms")`);
    }
  });
  if (obj.claims !== undefined && !Array.isArray(obj.claims)) {
    throw new MonobenchError(`${what}: "claims" is not an array`);
  }
  if (obj.layers !== undefined && !Array.isArray(obj.layers)) {
    throw new MonobenchError(`${what}: "layers" is not an array`);
  }
  return {
    layers: [],
    claims: [],
    diff: {
      encoderMap: {},
      tolerances: { ms_max: 0, ms_min: 0, ms_mean: 0, r2: 0, l0: 0 },
      rows: [],
      note: "",
    },
    ...obj,
  } as unknown as Report;
}

/** Load a stored baseline report.json (missing or malformed → MonobenchError). */
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

/** JSON stores NaN as null; treat both as "no number". */
function n(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

const f = (x: number | null, d = 4) => (x === null ? "–" : x.toFixed(d));

/** Compare a run with a baseline report. */
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
  const regressions: Finding[] = [];
  const improvements: Finding[] = [];
  const warnings: string[] = [];
  let compared = 0;

  if (baseline.run?.dataset && current.run?.dataset && baseline.run.dataset !== current.run.dataset) {
    warnings.push(`dataset differs: baseline "${baseline.run.dataset}", current "${current.run.dataset}"`);
  }
  if (baseline.run?.preset && current.run?.preset && baseline.run.preset !== current.run.preset) {
    warnings.push(`preset differs: baseline "${baseline.run.preset}", current "${current.run.preset}"`);
  }

  const cur = new Map<string, CaseResult>(current.cases.map((c) => [c.id, c]));
  const base = new Map<string, CaseResult>(baseline.cases.map((c) => [c.id, c]));

  /** higherIsBetter: a drop beyond tol regresses; otherwise a rise beyond tol regresses. */
  const cmp = (
    id: string,
    metric: string,
    b: number | null,
    c: number | null,
    tolerance: number,
    higherIsBetter: boolean,
    label: string,
  ) => {
    if (b === null) return;
    compared++;
    if (c === null) {
      regressions.push({
        kind: "metric",
        caseId: id,
        metric,
        baseline: b,
        current: null,
        delta: null,
        tolerance,
        message: `${id}: ${label} is missing (baseline ${f(b)})`,
      });
      return;
    }
    const delta = c - b;
    const worse = higherIsBetter ? -delta : delta;
    const finding: Finding = {
      kind: "metric",
      caseId: id,
      metric,
      baseline: b,
      current: c,
      delta,
      tolerance,
      message: `${id}: ${label} ${f(b)} → ${f(c)} (${delta >= 0 ? "+" : ""}${
        f(delta)
      }, tolerance ${tolerance})`,
    };
    if (worse > tolerance + 1e-12) regressions.push(finding);
    else if (-worse > tolerance + 1e-12) improvements.push(finding);
  };

  for (const [id, b] of base) {
    const c = cur.get(id);
    if (!c) {
      compared++;
      regressions.push({
        kind: "missing-case",
        caseId: id,
        metric: "case",
        baseline: id,
        current: null,
        delta: null,
        tolerance: null,
        message: `${id}: case is in the baseline but missing from this run`,
      });
      continue;
    }
    for (const bm of b.ms) {
      const cm = c.ms.find((m) => m.encoder === bm.encoder);
      cmp(id, `ms_mean/${bm.encoder}`, n(bm.mean), n(cm?.mean), t.msMean, true, `MS mean (${bm.encoder})`);
      cmp(id, `ms_max/${bm.encoder}`, n(bm.max), n(cm?.max), t.msMax, true, `MS max (${bm.encoder})`);
    }
    cmp(id, "r2", n(b.r2), n(c.r2), t.r2, true, "R² %");
    const bl0 = n(b.l0);
    const cl0 = n(c.l0);
    cmp(
      id,
      "l0_drift",
      bl0 === null ? null : Math.abs(bl0 - b.k),
      cl0 === null ? null : Math.abs(cl0 - c.k),
      t.l0,
      false,
      `|L0 − K| (K=${b.k})`,
    );
    cmp(id, "dead_fraction", n(b.deadFraction), n(c.deadFraction), t.deadFraction, false, "dead fraction");
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
    const finding: Finding = {
      kind: "claim",
      caseId: bc.id,
      metric: "claim",
      baseline: bc.status,
      current: cc.status,
      delta: null,
      tolerance: null,
      message: `claim ${bc.id}: ${bc.status} → ${cc.status} (${cc.evidence})`,
    };
    if (bc.status === "pass" && cc.status === "fail") regressions.push(finding);
    else if (bc.status === "fail" && cc.status === "pass") improvements.push(finding);
  }
  return { regressions, improvements, compared, warnings };
}

/** A short text summary for the terminal. */
export function formatBaselineSummary(r: BaselineComparison, maxLines = 20): string {
  const lines: string[] = [];
  lines.push(
    `baseline: ${r.compared} comparisons, ${r.regressions.length} regression(s), ${r.improvements.length} improvement(s)`,
  );
  for (const w of r.warnings) lines.push(`  warning: ${w}`);
  const list = (title: string, fs: Finding[]) => {
    if (!fs.length) return;
    lines.push(`${title}:`);
    for (const x of fs.slice(0, maxLines)) lines.push(`  - ${x.message}`);
    if (fs.length > maxLines) lines.push(`  … and ${fs.length - maxLines} more`);
  };
  list("regressions", r.regressions);
  list("improvements", r.improvements);
  return lines.join("\n");
}
