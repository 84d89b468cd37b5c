/**
 * Report writers: report.json, results.csv, report.md and report.html (see html.ts), all written
 * atomically after every file's content has been rendered.
 */
import { stringify } from "csv-stringify/sync";
import { join } from "node:path";
import type { MsSummary } from "../types.ts";
import { MonobenchError } from "../util/errors.ts";
import { jsonText } from "../util/json.ts";
import { atomicWriteAll } from "./atomic.ts";
import { diffCounts } from "./diff.ts";
import { renderHtml } from "./html.ts";
import { caseSortKey, diffIndex, fmt, reportSources, runInfoPairs, withPaper } from "./format.ts";
import type { Report } from "./types.ts";

export const REPORT_FILES = {
  json: "report.json",
  csv: "results.csv",
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

/** results.csv: one row per case, MS summaries flattened per similarity source. */
export function resultsCsv(r: Report): string {
  const sources = reportSources(r);
  const fveKeys = [...new Set(r.cases.flatMap((c) => Object.keys(c.fve ?? {})))];
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
  const rows = r.cases.map((c) => {
    const row: (string | number)[] = [
      c.id,
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

/** report.md: run info, claims, our numbers next to the paper's, raw neurons, the diff. */
export function renderMarkdown(r: Report): string {
  const sources = reportSources(r);
  const idx = diffIndex(r.diff.rows);
  const out: string[] = [];
  out.push(`# monobench report: ${mdCell(r.run.id)}`, "");
  out.push(table(["", ""], runInfoPairs(r).map(([k, v]) => [k, mdCell(v)])), "");

  out.push("## Claims", "");
  out.push(
    table(
      ["claim", "status", "evidence", "paper"],
      r.claims.map((c) => [
        `${mdCell(c.id)}: ${mdCell(c.statement)}`,
        c.status === "pass" ? "**pass**" : c.status === "fail" ? "**FAIL**" : "n/a",
        mdCell(c.evidence),
        mdCell(c.ref),
      ]),
    ),
    "",
  );

  out.push("## Cases", "");
  const mapText = Object.entries(r.diff.encoderMap).map(([e, s]) => `${s} ↔ paper ${e}`).join(", ") || "none";
  out.push(
    `Ours, with the paper's number in parentheses where one corresponds (source mapping: ${
      mdCell(mapText)
    }).`,
    "",
  );
  const hdr = ["case", "R² %", "L0", "dead %", "train s"];
  for (const s of sources) hdr.push(`MS mean ${mdCell(s)}`, `MS max ${mdCell(s)}`, `> raw ${mdCell(s)}`);
  const cases = [...r.cases].sort((a, b) => caseSortKey(a).localeCompare(caseSortKey(b)));
  out.push(
    table(
      hdr,
      cases.map((c) => {
        const row = [
          mdCell(c.id),
          withPaper(c.r2, idx.get(`${c.id}|r2|`), 1),
          withPaper(c.l0, idx.get(`${c.id}|l0|`), 1),
          fmt(c.deadFraction * 100, 1),
          fmt(c.trainSeconds, 1),
        ];
        for (const s of sources) {
          const m = msOf(c, s);
          row.push(
            withPaper(m?.mean, idx.get(`${c.id}|ms_mean|${s}`), 3),
            withPaper(m?.max, idx.get(`${c.id}|ms_max|${s}`), 3),
            fmt(c.fracAboveRaw?.[s], 2),
          );
        }
        return row;
      }),
    ),
    "",
  );

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
          fmt(d.ours, 4),
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

export interface WriteOptions {
  /** Which files to write (default all four). */
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
