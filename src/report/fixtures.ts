/**
 * Loader for the paper's published tables (`fixtures/paper/*.csv`, see its README): one number
 * per row with the table reference. Malformed CSV, unknown or missing columns and non-numeric
 * values throw a MonobenchError naming the file and line.
 */
import { parse } from "csv-parse/sync";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MonobenchError } from "../util/errors.ts";

export const FIXTURE_COLUMNS = [
  "table",
  "ref",
  "model",
  "similarity_encoder",
  "metric",
  "sae",
  "layer",
  "expansion",
  "k",
  "condition",
  "value",
  "std",
  "note",
] as const;

export interface FixtureRow {
  table: string;
  ref: string;
  model: string;
  similarityEncoder: string;
  metric: string;
  /** "batchtopk", "matryoshka", "none" (No SAE) or "" (not applicable). */
  sae: string;
  layer: string;
  expansion: number | null;
  k: number | null;
  condition: string;
  value: number;
  std: number | null;
  note: string;
  /** Source file name and 1-based line, for messages. */
  file: string;
  line: number;
}

/** The repository's fixture directory (`fixtures/paper/`). */
export function fixturesDir(): string {
  return fileURLToPath(new URL("../../fixtures/paper/", import.meta.url));
}

const NUM_RE = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function parseNum(s: string, col: string, file: string, line: number, required: boolean): number | null {
  const t = s.trim();
  if (t === "") {
    if (required) {
      throw new MonobenchError(`${file}:${line}: column "${col}" is empty (a number is required)`);
    }
    return null;
  }
  const n = Number(t);
  if (!NUM_RE.test(t) || !Number.isFinite(n)) {
    throw new MonobenchError(`${file}:${line}: column "${col}": "${s}" is not a number`);
  }
  return n;
}

/** Parse one fixture CSV text; `file` is used in messages. */
export function parseFixtureCsv(text: string, file: string): FixtureRow[] {
  let records: { record: string[]; info: { lines: number } }[];
  try {
    records = parse(text, { info: true, skip_empty_lines: true, bom: true }) as unknown as {
      record: string[];
      info: { lines: number };
    }[];
  } catch (e) {
    const line = (e as { lines?: number }).lines;
    throw new MonobenchError(
      `${file}${line ? `:${line}` : ""}: malformed CSV: ${(e as Error).message}`,
    );
  }
  if (records.length === 0) throw new MonobenchError(`${file}: empty fixture file (no header)`);
  const header = records[0].record.map((h) => h.trim());
  const known = FIXTURE_COLUMNS as readonly string[];
  for (const h of header) {
    if (!known.includes(h)) {
      throw new MonobenchError(`${file}:1: unknown column "${h}"; expected columns: ${known.join(", ")}`);
    }
  }
  for (const c of known) {
    if (!header.includes(c)) throw new MonobenchError(`${file}:1: missing column "${c}"`);
  }
  if (new Set(header).size !== header.length) {
    throw new MonobenchError(`${file}:1: duplicate column in header`);
  }
  const col = (name: string) => header.indexOf(name);
  const rows: FixtureRow[] = [];
  for (const { record, info } of records.slice(1)) {
    const line = info.lines;
    const get = (name: string) => (record[col(name)] ?? "").trim();
    for (const req of ["table", "ref", "metric"]) {
      if (get(req) === "") throw new MonobenchError(`${file}:${line}: column "${req}" is empty`);
    }
    rows.push({
      table: get("table"),
      ref: get("ref"),
      model: get("model"),
      similarityEncoder: get("similarity_encoder"),
      metric: get("metric"),
      sae: get("sae"),
      layer: get("layer"),
      expansion: parseNum(get("expansion"), "expansion", file, line, false),
      k: parseNum(get("k"), "k", file, line, false),
      condition: get("condition"),
      value: parseNum(get("value"), "value", file, line, true)!,
      std: parseNum(get("std"), "std", file, line, false),
      note: get("note"),
      file,
      line,
    });
  }
  return rows;
}

/** Load and validate every `*.csv` in `dir` (default: the repository's `fixtures/paper/`), sorted by file name. */
export async function loadFixtures(dir: string = fixturesDir()): Promise<FixtureRow[]> {
  let names: string[];
  try {
    names = [];
    for await (const e of Deno.readDir(dir)) if (e.isFile && e.name.endsWith(".csv")) names.push(e.name);
  } catch (e) {
    throw new MonobenchError(`cannot read fixture directory ${dir}: ${(e as Error).message}`);
  }
  if (names.length === 0) throw new MonobenchError(`no fixture CSV files in ${dir}`);
  names.sort();
  const out: FixtureRow[] = [];
  for (const n of names) {
    const text = await Deno.readTextFile(join(dir, n));
    out.push(...parseFixtureCsv(text, basename(n)));
  }
  return out;
}
