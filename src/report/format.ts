/** Formatting helpers shared by the Markdown and HTML writers. */
import type { CaseResult } from "../types.ts";
import type { DiffRow, Report } from "./types.ts";

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
    ["options", JSON.stringify(run.options)],
  ];
}

export function caseSortKey(c: CaseResult): string {
  const layerIdx = ["11", "17", "22", "23", "last"].indexOf(c.layer);
  return `${String(layerIdx < 0 ? 9 : layerIdx)}|${c.sae}|${String(c.expansion).padStart(4, "0")}|${
    String(c.k).padStart(4, "0")
  }`;
}
