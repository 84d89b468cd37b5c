/**
 * Diff a run against the paper's published numbers (fixtures/paper/*.csv).
 *
 * Matching: a case (sae, layer, ε, K) is compared with the fixture rows of one paper model (by
 * default the main model, CLIP ViT-L/14-336; an experiment's, or the one a data manifest names)
 * that have the same sae/layer/expansion/k, optionally only in some tables (an experiment's);
 * the "No SAE" rows are compared with our raw-neuron (LayerResult) numbers. MS rows carry the
 * paper's similarity encoder E ("dinov2", "clip-vit-b32"); an explicit map says which of our
 * similarity sources stands for which E. By default a source named like a paper encoder maps to
 * it, and otherwise our designated primary source ("inceptionv3" in the embedded default) stands
 * for the primary encoder ("dinov2", the encoder of all main-text tables, unless the experiment
 * names another). When several tables hold the same number (Table A5's best = Table 1a, Table
 * A11's K = 20 row = the ×1 cells), the first table of {@link TABLE_PRIORITY} wins.
 *
 * Seed replicates of a case (CaseResults with the same id) are averaged: `ours` is the mean over
 * seeds, with its 95 % t-interval and n on the row; the status compares that mean.
 *
 * The embedded default uses other data, another model and another encoder than the paper, so
 * the diff is informative and never a failure on its own.
 */
import type { CaseResult, LayerResult, MsSummary } from "../types.ts";
import { MonobenchError } from "../util/errors.ts";
import type { FixtureRow } from "./fixtures.ts";
import { stat } from "./stats.ts";
import { DIFF_METRICS, type DiffMetric, type DiffResult, type DiffRow, type Tolerances } from "./types.ts";

/** Default absolute tolerances: MS in score units, R² in percentage points, L0 in latents. */
export const DEFAULT_TOLERANCES: Readonly<Tolerances> = Object.freeze({
  ms_max: 0.15,
  ms_min: 0.1,
  ms_mean: 0.05,
  r2: 5,
  l0: 1,
});

/** The paper's main model (Tables 1a, A2, A3, A5, A6, A9–A11). */
export const PAPER_MODEL = "clip-vit-l14-336";
/** Paper encoders the diff knows about. */
export const PAPER_ENCODERS: readonly string[] = ["dinov2", "clip-vit-b32"];
/** Our similarity source that stands for DINOv2 when no source is named "dinov2" (embedded default). */
export const DEFAULT_PRIMARY_SOURCE = "inceptionv3";

/** Order in which duplicate numbers are attributed to tables (main text first). */
export const TABLE_PRIORITY: readonly string[] = [
  "Table 1a",
  "Table 1b",
  "Table A2",
  "Table A3",
  "Table A5",
  "Table A6",
  "Table A9",
  "Table A10",
  "Table A11",
];

export const DIFF_NOTE =
  "Informative only: the paper trains on CLIP ViT-L/14-336 activations of ImageNet and scores " +
  "MS with DINOv2 (or CLIP ViT-B/32); a run on other data, another model or another similarity source is " +
  "not expected to match, and an 'outside' row is not a failure.";

export interface DiffOptions {
  /**
   * Paper encoder → our similarity source, e.g. `{ dinov2: "inceptionv3", "clip-vit-b32": "labels" }`.
   * Replaces the default mapping entirely when given.
   */
  encoderMap?: Record<string, string>;
  /** Our source standing for DINOv2 in the default mapping (default "inceptionv3"). */
  primarySource?: string;
  /** Per-metric tolerance overrides. */
  tolerances?: Partial<Tolerances>;
  /** Fixture model to compare with (default {@link PAPER_MODEL}). */
  model?: string;
  /** Fixture tables to compare with (default: every table). */
  tables?: readonly string[];
  /** Paper encoders whose MS rows are compared (default: all of {@link PAPER_ENCODERS}). */
  encoders?: readonly string[];
  /** The paper encoder our primary source stands for (default "dinov2"). */
  primaryEncoder?: string;
}

/** A diff, with the model and tables it compared with. */
export interface PaperDiff extends DiffResult {
  /** The fixtures' model whose rows were compared. */
  model: string;
  /** The tables compared with (absent: every table). */
  tables?: string[];
}

/** Sources named by our results (cases and layers), in first-appearance order. */
export function resultSources(cases: readonly CaseResult[], layers: readonly LayerResult[]): string[] {
  const s = new Set<string>();
  for (const c of cases) for (const m of c.ms) s.add(m.encoder);
  for (const l of layers) for (const m of l.ms) s.add(m.encoder);
  return [...s];
}

/**
 * The paper-encoder → our-source map: `opts.encoderMap` if given; otherwise identity for sources
 * named like a paper encoder (of `opts.encoders`), and the primary encoder (default `dinov2`) →
 * the primary source when no source is named like it.
 */
export function resolveEncoderMap(
  sources: readonly string[],
  opts: DiffOptions = {},
): Record<string, string> {
  if (opts.encoderMap) {
    for (const [enc, src] of Object.entries(opts.encoderMap)) {
      if (typeof src !== "string" || src === "") {
        throw new MonobenchError(`encoder map: paper encoder "${enc}" must map to a source name`);
      }
    }
    return { ...opts.encoderMap };
  }
  const map: Record<string, string> = {};
  const encoders = opts.encoders ?? PAPER_ENCODERS;
  for (const e of PAPER_ENCODERS) if (encoders.includes(e) && sources.includes(e)) map[e] = e;
  const primary = opts.primarySource ?? DEFAULT_PRIMARY_SOURCE;
  const enc = opts.primaryEncoder ?? "dinov2";
  if (encoders.includes(enc) && !map[enc] && sources.includes(primary)) map[enc] = primary;
  return map;
}

/** Merge tolerance overrides into the defaults (validated). */
export function mergeTolerances(
  over: Partial<Tolerances> = {},
  base: Tolerances = DEFAULT_TOLERANCES,
): Tolerances {
  const t: Tolerances = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (!(DIFF_METRICS as readonly string[]).includes(k)) {
      throw new MonobenchError(
        `tolerances: unknown metric "${k}"; valid metrics: ${DIFF_METRICS.join(", ")}`,
      );
    }
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new MonobenchError(`tolerances: "${k}" must be a non-negative number, got ${JSON.stringify(v)}`);
    }
    t[k as DiffMetric] = v;
  }
  return t;
}

/** Read tolerance overrides from a JSON file `{"ms_mean": 0.1, ...}` (missing/malformed → MonobenchError). */
export async function loadTolerances(path: string): Promise<Partial<Tolerances>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new MonobenchError(`cannot read tolerance file ${path}: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`tolerance file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new MonobenchError(`tolerance file ${path} must hold a JSON object like {"ms_mean": 0.05}`);
  }
  try {
    mergeTolerances(obj as Partial<Tolerances>);
  } catch (e) {
    throw new MonobenchError(`tolerance file ${path}: ${(e as Error).message}`);
  }
  return obj as Partial<Tolerances>;
}

function priority(table: string): number {
  const i = TABLE_PRIORITY.indexOf(table);
  return i < 0 ? TABLE_PRIORITY.length : i;
}

function msValue(s: MsSummary | undefined, metric: DiffMetric): number | null {
  if (!s) return null;
  const v = metric === "ms_max" ? s.max : metric === "ms_min" ? s.min : metric === "ms_mean" ? s.mean : NaN;
  return Number.isFinite(v) ? v : null;
}

/** The mean over replicates (null when none is finite), n and the 95 % interval for n ≥ 2. */
function overSeeds(
  values: readonly (number | null)[],
): { ours: number | null; n?: number; ci?: [number, number] } {
  const s = stat(values.map((v) => v ?? NaN));
  if (s.n === 0) return { ours: null };
  return s.n >= 2 ? { ours: s.mean, n: s.n, ci: s.ci95 } : { ours: s.mean, n: 1 };
}

function makeRow(
  f: FixtureRow,
  metric: DiffMetric,
  caseId: string,
  source: string,
  seeds: { ours: number | null; n?: number; ci?: [number, number] },
  tol: Tolerances,
): DiffRow {
  const ours = seeds.ours;
  const delta = ours === null ? null : ours - f.value;
  const tolerance = tol[metric];
  const status = delta === null ? "missing" : Math.abs(delta) <= tolerance + 1e-12 ? "within" : "outside";
  return {
    table: f.table,
    ref: f.ref,
    metric,
    caseId,
    paperEncoder: f.similarityEncoder,
    source,
    paper: f.value,
    ours,
    delta,
    tolerance,
    status,
    ...(seeds.n !== undefined ? { n: seeds.n } : {}),
    ...(seeds.ci ? { oursCi95: seeds.ci } : {}),
  };
}

/**
 * Compare our results with the fixtures. Only rows that correspond to a case (or layer) of the
 * run appear; "missing" = the case ran but the number is unavailable (no mapped source, NaN).
 */
export function diffAgainstPaper(
  cases: readonly CaseResult[],
  layers: readonly LayerResult[],
  fixtures: readonly FixtureRow[],
  opts: DiffOptions = {},
): PaperDiff {
  const tol = mergeTolerances(opts.tolerances);
  const model = opts.model ?? PAPER_MODEL;
  const encoderMap = resolveEncoderMap(resultSources(cases, layers), opts);
  const metricSet = new Set<string>(DIFF_METRICS);
  const tables = opts.tables;
  const candidates = fixtures
    .filter((f) =>
      f.model === model && metricSet.has(f.metric) && f.condition === "" &&
      (!tables || tables.includes(f.table))
    )
    .slice()
    .sort((a, b) => priority(a.table) - priority(b.table));
  const isMs = (m: string) => m.startsWith("ms_");
  const rows: DiffRow[] = [];
  const seen = new Set<string>();
  const push = (key: string, row: DiffRow) => {
    if (seen.has(key)) return;
    seen.add(key);
    rows.push(row);
  };

  const replicates = new Map<string, CaseResult[]>();
  for (const c of cases) {
    if (!replicates.has(c.id)) replicates.set(c.id, []);
    replicates.get(c.id)!.push(c);
  }
  for (const reps of replicates.values()) {
    const c = reps[0];
    for (const f of candidates) {
      if (f.sae !== c.sae || f.layer !== c.layer || f.expansion !== c.expansion || f.k !== c.k) continue;
      const metric = f.metric as DiffMetric;
      if (isMs(metric)) {
        if (!f.similarityEncoder || !(f.similarityEncoder in encoderMap)) continue;
        const source = encoderMap[f.similarityEncoder];
        const ours = overSeeds(reps.map((r) => msValue(r.ms.find((m) => m.encoder === source), metric)));
        push(`${c.id}|${metric}|${f.similarityEncoder}`, makeRow(f, metric, c.id, source, ours, tol));
      } else {
        const ours = overSeeds(reps.map((r) => (metric === "r2" ? r.r2 : r.l0)));
        push(`${c.id}|${metric}`, makeRow(f, metric, c.id, "", ours, tol));
      }
    }
  }
  for (const l of layers) {
    const id = `raw-${l.layer}`;
    for (const f of candidates) {
      // Raw R² (100) and L0 (= input dimension) are trivial; only MS is compared.
      if (f.sae !== "none" || f.layer !== l.layer || !isMs(f.metric)) continue;
      if (!f.similarityEncoder || !(f.similarityEncoder in encoderMap)) continue;
      const source = encoderMap[f.similarityEncoder];
      const metric = f.metric as DiffMetric;
      const ours = { ours: msValue(l.ms.find((m) => m.encoder === source), metric) };
      push(`${id}|${metric}|${f.similarityEncoder}`, makeRow(f, metric, id, source, ours, tol));
    }
  }
  const note = model === PAPER_MODEL
    ? DIFF_NOTE
    : `Informative only: compared with the paper's numbers for ${model} on ImageNet; a run on other data, ` +
      "another model or another similarity source is not expected to match, and an 'outside' row is not a failure.";
  return { encoderMap, tolerances: tol, rows, note, model, ...(tables ? { tables: [...tables] } : {}) };
}

/** Counts of diff rows by status. */
export function diffCounts(d: DiffResult): Record<"within" | "outside" | "missing", number> {
  const n = { within: 0, outside: 0, missing: 0 };
  for (const r of d.rows) n[r.status]++;
  return n;
}
