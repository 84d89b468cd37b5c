/** Formatting helpers shared by the Markdown and HTML writers. */
import type { CaseResult } from "../types.ts";
import { aggregateCases, type CaseAggregate, type Stat, STATS_METHOD } from "./stats.ts";
import type { Claim, DiffRow, Report } from "./types.ts";

/** Similarity sources named by a report's cases and layers, in first-appearance order. */
export function reportSources(r: Pick<Report, "cases" | "layers">): string[] {
  const s = new Set<string>();
  for (const c of r.cases) for (const m of c.ms) s.add(m.encoder);
  for (const l of r.layers) for (const m of l.ms) s.add(m.encoder);
  return [...s];
}

export function fmt(v: number | null | undefined, digits = 3): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  return v.toFixed(digits);
}

/** Index diff rows by `${caseId}|${metric}|${source}` (source "" for R²/L0). */
export function diffIndex(rows: readonly DiffRow[]): Map<string, DiffRow> {
  const m = new Map<string, DiffRow>();
  for (const r of rows) {
    const k = `${r.caseId}|${r.metric}|${r.source}`;
    if (!m.has(k)) m.set(k, r);
  }
  return m;
}

/**
 * A Stat as "mean ± half-width" of its 95 % interval (t-intervals are symmetric), or the mean
 * alone without an interval (one seed).
 */
export function fmtStat(s: Stat | undefined, digits = 3, scale = 1): string {
  if (!s || !Number.isFinite(s.mean)) return "–";
  const m = (s.mean * scale).toFixed(digits);
  if (!(s.n >= 2 && Number.isFinite(s.ci95[0]) && Number.isFinite(s.ci95[1]))) return m;
  return `${m} ± ${(((s.ci95[1] - s.ci95[0]) / 2) * scale).toFixed(digits)}`;
}

/** "ours ± ci (paper)" cell text. */
export function statWithPaper(s: Stat | undefined, d: DiffRow | undefined, digits: number): string {
  const o = fmtStat(s, digits);
  return d ? `${o} (${fmt(d.paper, digits)})` : o;
}

/** The report's per-case aggregates (computed from the cases for reports that lack them). */
export function reportAggregates(r: Pick<Report, "cases" | "aggregates">): CaseAggregate[] {
  return r.aggregates ?? aggregateCases(r.cases);
}

/** Seed counts of a report's cases, e.g. "3" or "1–3", and the distinct seeds. */
export function seedSummary(aggs: readonly CaseAggregate[]): { text: string; seeds: number[] } {
  if (aggs.length === 0) return { text: "0", seeds: [] };
  const ns = aggs.map((a) => a.n);
  const lo = Math.min(...ns), hi = Math.max(...ns);
  const seeds = [...new Set(aggs.flatMap((a) => a.seeds))].sort((a, b) => a - b);
  return { text: lo === hi ? String(lo) : `${lo}–${hi}`, seeds };
}

/** How the intervals were computed, for the report's front matter. */
export function statsNote(r: Pick<Report, "stats">): string {
  return r.stats ?? STATS_METHOD;
}

/** A claim's status in words: "pass", "FAIL", "n/a", "not resolved at N seeds". */
export function claimStatusText(c: Pick<Claim, "status" | "seeds">): string {
  switch (c.status) {
    case "pass":
      return "pass";
    case "fail":
      return "FAIL";
    case "unresolved":
      return c.seeds === undefined
        ? "not resolved"
        : `not resolved at ${c.seeds} seed${c.seeds === 1 ? "" : "s"}`;
    default:
      return c.status;
  }
}

/** "ours (paper)" cell text. */
export function withPaper(ours: number | undefined, d: DiffRow | undefined, digits: number): string {
  const o = fmt(ours, digits);
  return d ? `${o} (${fmt(d.paper, digits)})` : o;
}

/** Run-info key/value pairs for the report front matter. */
export function runInfoPairs(r: Report): [string, string][] {
  const run = r.run;
  return [
    ["run", run.id],
    ["preset", run.preset],
    ["grid", run.grid || "(whole preset)"],
    ["cases", String(r.cases.length)],
    ["backend", run.backend],
    ["device", run.device],
    ["dataset", run.dataset],
    ["started", run.startedAt],
    ["finished", run.finishedAt],
    ["deno", run.denoVersion],
    ["seed", String(run.seed)],
    ["seeds per case", seedSummary(reportAggregates(r)).text],
    ["intervals", statsNote(r)],
    ["options", JSON.stringify(run.options)],
  ];
}

export function caseSortKey(c: Pick<CaseResult, "layer" | "sae" | "expansion" | "k">): string {
  // The order of compareLayers (numbered layers by number, named ones, then "last") as a string.
  const l = c.layer;
  const layer = l === "last" ? "2|" : /^\d+$/.test(l) ? `0|${l.padStart(8, "0")}` : `1|${l}`;
  return `${layer}|${c.sae}|${String(c.expansion).padStart(4, "0")}|${String(c.k).padStart(4, "0")}`;
}
