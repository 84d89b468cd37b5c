/**
 * Report writers: report.json, results.csv (one row per case over its seeds: mean, std, 95 %
 * interval and n of every metric), results_seeds.csv (one row per case and seed), report.md and
 * report.html (see html.ts), all written atomically after every file's content has been rendered.
 */
import { stringify } from "csv-stringify/sync";
import { join } from "node:path";
import type { MsSummary } from "../types.ts";
import { MonobenchError } from "../util/errors.ts";
import { jsonText } from "../util/json.ts";
import { atomicWrite, atomicWriteAll } from "./atomic.ts";
import { type BaselineComparison, type Finding, toleranceNote } from "./baseline.ts";
import { METRIC_LABEL } from "./compare.ts";
import { diffCounts } from "./diff.ts";
import { renderHtml } from "./html.ts";
import {
  caseSortKey,
  claimStatusText,
  diffIndex,
  fmt,
  fmtStat,
  reportAggregates,
  reportSources,
  runInfoPairs,
  statWithPaper,
  withPaper,
} from "./format.ts";
import { seedOf, type Stat } from "./stats.ts";
import type { Report } from "./types.ts";

export const REPORT_FILES = {
  json: "report.json",
  csv: "results.csv",
  seedsCsv: "results_seeds.csv",
  md: "report.md",
  html: "report.html",
} as const;

/** JSON text of a report (NaN/Infinity become null, as JSON has no such numbers). */
export function reportJson(r: Report): string {
  return jsonText(r);
}

function num(v: number | undefined): string | number {
  return v === undefined || !Number.isFinite(v) ? "" : v;
}

const STAT_COLUMNS = ["mean", "std", "ci_lo", "ci_hi", "n"] as const;

function statCells(s: Stat | undefined): (string | number)[] {
  if (!s) return ["", "", "", "", 0];
  return [num(s.mean), num(s.std), num(s.ci95[0]), num(s.ci95[1]), s.n];
}

/**
 * results.csv: one row per case over its seed replicates; every metric as `<metric>_mean`,
 * `_std`, `_ci_lo`, `_ci_hi` (95 % Student-t) and `_n`, MS flattened per similarity source.
 */
export function resultsCsv(r: Report): string {
  const aggs = reportAggregates(r);
  const sources = reportSources(r);
  const fveKeys = [...new Set(aggs.flatMap((a) => Object.keys(a.fve)))];
  const metrics: string[] = [
    "train_seconds",
    "final_loss",
    "r2",
    "l0",
    "dead_count",
    "dead_fraction",
    "dead_train",
    ...fveKeys.map((k) => `fve_${k}`),
  ];
  for (const s of sources) {
    for (const f of ["mean", "std", "min", "max", "nan_count"]) metrics.push(`ms_${s}_${f}`);
    metrics.push(`frac_above_raw_${s}`);
  }
  const header = [
    "id",
    "layer",
    "source_layer",
    "sae",
    "expansion",
    "k",
    "d",
    "width",
    "steps",
    "batch_size",
    "lr",
    "backend",
    "seeds",
    "n",
    ...metrics.flatMap((m) => STAT_COLUMNS.map((c) => `${m}_${c}`)),
  ];
  const rows = aggs.map((a) => {
    const stats: (Stat | undefined)[] = [
      a.trainSeconds,
      a.finalLoss,
      a.r2,
      a.l0,
      a.deadCount,
      a.deadFraction,
      a.deadTrain,
      ...fveKeys.map((k) => a.fve[k]),
    ];
    for (const s of sources) {
      const m = a.ms.find((x) => x.encoder === s);
      stats.push(m?.mean, m?.std, m?.min, m?.max, m?.nanCount, a.fracAboveRaw[s]);
    }
    return [
      a.id,
      a.layer,
      a.sourceLayer,
      a.sae,
      a.expansion,
      a.k,
      a.d,
      a.width,
      a.steps,
      a.batchSize,
      num(a.lr),
      a.backend,
      a.seeds.join(";"),
      a.n,
      ...stats.flatMap(statCells),
    ];
  });
  return stringify([header, ...rows]);
}

/** results_seeds.csv: one row per case and seed, MS summaries flattened per similarity source. */
export function seedsCsv(r: Report): string {
  const sources = reportSources(r);
  const fveKeys = [...new Set(r.cases.flatMap((c) => Object.keys(c.fve ?? {})))];
  const header = [
    "id",
    "seed",
    "layer",
    "source_layer",
    "sae",
    "expansion",
    "k",
    "d",
    "width",
    "steps",
    "batch_size",
    "lr",
    "backend",
    "train_seconds",
    "final_loss",
    "r2",
    "l0",
    "dead_count",
    "dead_fraction",
    "dead_train",
    ...fveKeys.map((k) => `fve_${k}`),
  ];
  for (const s of sources) {
    for (const f of ["mean", "std", "min", "max", "nan_count", "count"]) header.push(`ms_${s}_${f}`);
    header.push(`frac_above_raw_${s}`);
  }
  header.push("checkpoint");
  const cases = [...r.cases].sort((a, b) =>
    caseSortKey(a).localeCompare(caseSortKey(b)) || a.id.localeCompare(b.id) || seedOf(a) - seedOf(b)
  );
  const rows = cases.map((c) => {
    const row: (string | number)[] = [
      c.id,
      seedOf(c),
      c.layer,
      c.sourceLayer,
      c.sae,
      c.expansion,
      c.k,
      c.d,
      c.width,
      c.steps,
      c.batchSize,
      num(c.lr),
      c.backend,
      num(c.trainSeconds),
      num(c.finalLoss),
      num(c.r2),
      num(c.l0),
      c.deadCount,
      num(c.deadFraction),
      c.deadTrain,
      ...fveKeys.map((k) => num(c.fve?.[k])),
    ];
    for (const s of sources) {
      const m = c.ms.find((x) => x.encoder === s);
      row.push(num(m?.mean), num(m?.std), num(m?.min), num(m?.max), num(m?.nanCount), num(m?.count));
      row.push(num(c.fracAboveRaw?.[s]));
    }
    row.push(c.checkpoint);
    return row;
  });
  return stringify([header, ...rows]);
}

// ---- markdown ------------------------------------------------------------------------------------

/** Escape text for a Markdown table cell. */
export function mdCell(s: unknown): string {
  return String(s).replace(/\r?\n/g, " ").replaceAll("|", "\\|").replaceAll("<", "&lt;").replaceAll(
    ">",
    "&gt;",
  );
}

function msOf(x: { ms: MsSummary[] }, s: string): MsSummary | undefined {
  return x.ms.find((m) => m.encoder === s);
}

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** The diff row's "ours" with its interval: "0.245 ± 0.012 (n=3)". */
function diffOurs(d: Report["diff"]["rows"][number]): string {
  if (d.ours === null) return "–";
  if (d.oursCi95) return `${fmt(d.ours, 4)} ± ${fmt((d.oursCi95[1] - d.oursCi95[0]) / 2, 4)} (n=${d.n})`;
  return fmt(d.ours, 4);
}

/** The claims as a Markdown table (report.md and the summary). */
export function claimsTable(r: Pick<Report, "claims">): string {
  return table(
    ["claim", "status", "criterion", "evidence", "paper"],
    r.claims.map((c) => {
      const st = claimStatusText(c);
      return [
        `${mdCell(c.id)}: ${mdCell(c.statement)}`,
        c.status === "pass" || c.status === "fail" ? `**${st}**` : mdCell(st),
        mdCell(c.criterion ?? ""),
        mdCell(c.evidence),
        mdCell(c.paper ? `${c.ref}; ${c.paper}` : c.ref),
      ];
    }),
  );
}

/** report.md: run info, claims, our numbers next to the paper's, comparison, raw neurons, diff. */
export function renderMarkdown(r: Report): string {
  const sources = reportSources(r);
  const idx = diffIndex(r.diff.rows);
  const out: string[] = [];
  out.push(`# monobench report: ${mdCell(r.run.id)}`, "");
  out.push(table(["", ""], runInfoPairs(r).map(([k, v]) => [k, mdCell(v)])), "");

  out.push("## Claims", "");
  out.push(claimsTable(r), "");

  out.push("## Cases", "");
  const mapText = Object.entries(r.diff.encoderMap).map(([e, s]) => `${s} ↔ paper ${e}`).join(", ") || "none";
  out.push(
    `Mean over seeds ± half-width of the 95 % interval (no ± with one seed), n = seeds; the paper's ` +
      `number in parentheses where one corresponds (source mapping: ${mdCell(mapText)}).`,
    "",
  );
  const hdr = ["case", "n", "R² %", "L0", "dead %", "train s"];
  for (const s of sources) hdr.push(`MS mean ${mdCell(s)}`, `MS max ${mdCell(s)}`, `> raw ${mdCell(s)}`);
  const aggs = [...reportAggregates(r)].sort((a, b) => caseSortKey(a).localeCompare(caseSortKey(b)));
  out.push(
    table(
      hdr,
      aggs.map((c) => {
        const row = [
          mdCell(c.id),
          String(c.n),
          statWithPaper(c.r2, idx.get(`${c.id}|r2|`), 1),
          statWithPaper(c.l0, idx.get(`${c.id}|l0|`), 1),
          fmtStat(c.deadFraction, 1, 100),
          fmtStat(c.trainSeconds, 1),
        ];
        for (const s of sources) {
          const m = c.ms.find((x) => x.encoder === s);
          row.push(
            statWithPaper(m?.mean, idx.get(`${c.id}|ms_mean|${s}`), 3),
            statWithPaper(m?.max, idx.get(`${c.id}|ms_max|${s}`), 3),
            fmtStat(c.fracAboveRaw[s], 2),
          );
        }
        return row;
      }),
    ),
    "",
  );

  if (r.comparison) out.push(...comparisonMarkdown(r.comparison), "");

  out.push("## Raw neurons (No SAE)", "");
  const lh = ["layer", "source layer", "d"];
  for (const s of sources) lh.push(`MS mean ${mdCell(s)}`, `MS max ${mdCell(s)}`);
  out.push(
    table(
      lh,
      r.layers.map((l) => {
        const row = [mdCell(l.layer), mdCell(l.sourceLayer), String(l.d)];
        for (const s of sources) {
          const m = msOf(l, s);
          row.push(
            withPaper(m?.mean, idx.get(`raw-${l.layer}|ms_mean|${s}`), 4),
            withPaper(m?.max, idx.get(`raw-${l.layer}|ms_max|${s}`), 3),
          );
        }
        return row;
      }),
    ),
    "",
  );

  const n = diffCounts(r.diff);
  out.push("## Diff against the paper", "");
  out.push(mdCell(r.diff.note), "");
  out.push(`${n.within} within tolerance, ${n.outside} outside, ${n.missing} missing.`, "");
  if (r.diff.rows.length) {
    out.push(
      table(
        ["case", "metric", "source", "paper", "ours", "delta", "tol", "status", "table"],
        r.diff.rows.map((d) => [
          mdCell(d.caseId),
          d.metric,
          mdCell(d.source ? `${d.source} (${d.paperEncoder})` : ""),
          fmt(d.paper, 4),
          diffOurs(d),
          fmt(d.delta, 4),
          String(d.tolerance),
          d.status,
          mdCell(d.ref),
        ]),
      ),
      "",
    );
  }
  return out.join("\n");
}

/** Markdown of the comparison view: the verdict counts, then every row. */
function comparisonMarkdown(cmp: NonNullable<Report["comparison"]>): string[] {
  const out: string[] = [];
  const lvl = `${Math.round(cmp.level * 1000) / 10} %`;
  out.push(`## Comparison: ${mdCell(cmp.variant)} vs ${mdCell(cmp.references.join(", ") || "none")}`, "");
  out.push(`${mdCell(cmp.method)}; level ${lvl}.`, "");
  if (cmp.unmatched.length) {
    out.push(`No reference at the same layer, ε and K for: ${mdCell(cmp.unmatched.join(", "))}.`, "");
  }
  out.push(
    table(
      ["reference", "metric", "source", "better", "worse", "indistinguishable", "higher", "lower"],
      cmp.summary.map((s) => [
        mdCell(s.reference),
        METRIC_LABEL[s.metric],
        mdCell(s.source),
        String(s.counts.better),
        String(s.counts.worse),
        String(s.counts.indistinguishable),
        String(s.counts.higher),
        String(s.counts.lower),
      ]),
    ),
    "",
  );
  if (cmp.rows.length) {
    out.push(
      table(
        [
          "reference",
          "layer",
          "ε",
          "K",
          "metric",
          "source",
          "variant",
          "reference value",
          "difference",
          "n",
          "verdict",
        ],
        cmp.rows.map((x) => [
          mdCell(x.reference),
          x.layer,
          String(x.expansion),
          String(x.k),
          METRIC_LABEL[x.metric],
          mdCell(x.source),
          fmtStat(x.variantStat, 3),
          fmtStat(x.referenceStat, 3),
          Number.isFinite(x.diff.lo)
            ? `${fmt(x.diff.mean, 3)} [${fmt(x.diff.lo, 3)}, ${fmt(x.diff.hi, 3)}] (${x.diff.method})`
            : `${fmt(x.diff.mean, 3)} (no interval)`,
          String(x.diff.n),
          x.verdict,
        ]),
      ),
    );
  }
  return out;
}

// ---- summary (e.g. a CI step summary) ----------------------------------------------------------

export interface SummaryOptions {
  /** The regression check, when there was one, and the baseline it was run against. */
  baseline?: { path: string; comparison: BaselineComparison };
  /** Extra lines shown under the heading (e.g. what a merge combined). */
  notes?: readonly string[];
  /** Findings listed per kind at most (default 50). */
  maxFindings?: number;
}

function findingRows(fs: readonly Finding[], max: number): string[][] {
  const v = (x: number | string | null) => (x === null ? "–" : typeof x === "number" ? fmt(x, 4) : mdCell(x));
  const rows = fs.slice(0, max).map((x) => [
    mdCell(x.caseId),
    mdCell(x.metric),
    v(x.baseline),
    v(x.current),
    x.delta === null ? "–" : `${x.delta >= 0 ? "+" : ""}${fmt(x.delta, 4)}`,
    x.tolerance === null ? "–" : `±${fmt(x.tolerance, 4)}${x.basis === "seed-spread" ? " (seeds)" : ""}`,
  ]);
  if (fs.length > max) rows.push([`… and ${fs.length - max} more`, "", "", "", "", ""]);
  return rows;
}

/**
 * A short Markdown summary of a run for a CI step summary: the verdict of the regression check
 * with its regressions and improvements, the claims table and the paper-diff counts.
 */
export function renderSummary(r: Report, o: SummaryOptions = {}): string {
  const out: string[] = [];
  const max = o.maxFindings ?? 50;
  const run = r.run;
  const seeds = run.seeds ?? [run.seed];
  out.push(`## monobench: ${mdCell(run.id)}`, "");
  const nCases = r.aggregates?.length ?? new Set(r.cases.map((c) => c.id)).size;
  const grid = run.grid ? `, grid \`${mdCell(run.grid)}\`` : "";
  const hash = mdCell((run.configHash ?? "").slice(0, 12));
  out.push(
    `${nCases} case(s) × ${seeds.length} seed(s) (${r.cases.length} results), ` +
      `preset ${mdCell(run.preset)}${grid}; backend ${mdCell(run.backend)} (${
        mdCell(run.device)
      }); config ${hash}`,
    "",
  );
  for (const n of o.notes ?? []) out.push(`- ${mdCell(n)}`);
  if (o.notes?.length) out.push("");
  if (o.baseline) {
    const c = o.baseline.comparison;
    const failed = c.regressions.length + c.improvements.length > 0;
    out.push(`### Regression check: ${failed ? "**FAILED**" : "passed"}`, "");
    const against = mdCell(o.baseline.path);
    out.push(
      `Against \`${against}\`: ${c.compared} comparisons, ${c.regressions.length} regression(s), ` +
        `${c.improvements.length} improvement(s) outside the tolerance (either fails the check).`,
      "",
      mdCell(toleranceNote(c)),
      "",
    );
    for (const w of c.warnings) out.push(`- warning: ${mdCell(w)}`);
    if (c.warnings.length) out.push("");
    const head = ["case", "metric", "baseline", "current", "delta", "tolerance"];
    if (c.regressions.length) {
      out.push("#### Regressions (worse)", "", table(head, findingRows(c.regressions, max)), "");
    }
    if (c.improvements.length) {
      out.push(
        "#### Improvements (better, outside the tolerance all the same)",
        "",
        table(head, findingRows(c.improvements, max)),
        "",
      );
    }
  }
  const counts = { pass: 0, fail: 0, other: 0 };
  for (const c of r.claims) {
    if (c.status === "pass") counts.pass++;
    else if (c.status === "fail") counts.fail++;
    else counts.other++;
  }
  out.push(`### Claims: ${counts.pass} pass, ${counts.fail} fail, ${counts.other} other`, "");
  out.push(claimsTable(r), "");
  const n = diffCounts(r.diff);
  out.push(
    `### Paper diff`,
    "",
    `${n.within} within tolerance, ${n.outside} outside, ${n.missing} missing (informative: ` +
      `${mdCell(r.diff.note)})`,
    "",
  );
  return out.join("\n");
}

/** Write {@link renderSummary} to `path` atomically. */
export async function writeSummary(path: string, r: Report, o: SummaryOptions = {}): Promise<void> {
  await atomicWrite(path, renderSummary(r, o));
}

export interface WriteOptions {
  /** Which files to write (default all). */
  formats?: (keyof typeof REPORT_FILES)[];
}

/**
 * Render and write a report to `dir` (created if missing). Every file is rendered first and
 * then written atomically, so an error leaves the previous files intact. Returns the paths.
 */
export async function writeReport(dir: string, r: Report, opts: WriteOptions = {}): Promise<string[]> {
  const formats = opts.formats ?? (Object.keys(REPORT_FILES) as (keyof typeof REPORT_FILES)[]);
  const render: Record<keyof typeof REPORT_FILES, () => string> = {
    json: () => reportJson(r),
    csv: () => resultsCsv(r),
    seedsCsv: () => seedsCsv(r),
    md: () => renderMarkdown(r),
    html: () => renderHtml(r),
  };
  const files = formats.map((f) => {
    if (!(f in REPORT_FILES)) throw new MonobenchError(`unknown report format "${f}"`);
    return { path: join(dir, REPORT_FILES[f]), data: render[f]() };
  });
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new MonobenchError(`cannot create report directory ${dir}: ${(e as Error).message}`);
  }
  await atomicWriteAll(files);
  return files.map((f) => f.path);
}
