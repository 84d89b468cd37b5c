/**
 * Report types: what a run writes to `report.json` (and what `--baseline` reads back).
 */
import type { CaseResult, LayerResult } from "../types.ts";
import type { MonobenchConfig } from "../run/config.ts";
import type { RunProvenance } from "../run/provenance.ts";
import type { CaseAggregate, Stat } from "./stats.ts";
import type { Comparison } from "./compare.ts";

/** 2: seeds, frozen config and provenance (schema/report.schema.json). */
export const REPORT_VERSION = 2;

/** Metrics compared with the paper's tables. */
export type DiffMetric = "ms_max" | "ms_min" | "ms_mean" | "r2" | "l0";
export const DIFF_METRICS: readonly DiffMetric[] = ["ms_max", "ms_min", "ms_mean", "r2", "l0"];

/** Absolute tolerance per metric (MS in score units, R² in percentage points, L0 in latents). */
export type Tolerances = Record<DiffMetric, number>;

export type DiffStatus = "within" | "outside" | "missing";

/** One of our numbers next to the paper's. */
export interface DiffRow {
  table: string;
  ref: string;
  metric: DiffMetric;
  /** Our case id, or `raw-<layer>` for the "No SAE" rows. */
  caseId: string;
  /** The paper's similarity encoder ("" for R²/L0) and the source of ours it was compared with. */
  paperEncoder: string;
  source: string;
  paper: number;
  /** null when the case ran but the number is unavailable (status "missing"). */
  ours: number | null;
  /** ours − paper (null when missing). */
  delta: number | null;
  tolerance: number;
  status: DiffStatus;
  /** Seeds averaged into `ours`, and the 95 % interval of that mean (absent: one seed). */
  n?: number;
  oursCi95?: [number, number];
}

export interface DiffResult {
  /** Which of our similarity sources stands for which paper encoder. */
  encoderMap: Record<string, string>;
  tolerances: Tolerances;
  rows: DiffRow[];
  /** Always a caveat: the diff is informative, never a failure on its own. */
  note: string;
}

/** "unresolved": the seed interval straddles the criterion (or one seed gives no interval). */
export type ClaimStatus = "pass" | "fail" | "n/a" | "unresolved";

/** A qualitative claim of the paper checked on a run. */
export interface Claim {
  id: string;
  statement: string;
  ref: string;
  status: ClaimStatus;
  evidence: string;
  /** The pass rule with its thresholds, in words. */
  criterion?: string;
  /** The thresholds of the criterion by name. */
  thresholds?: Record<string, number>;
  /** The paper's own figure(s) the criterion is taken from. */
  paper?: string;
  /** Seeds the verdict rests on. */
  seeds?: number;
  /** The claim's statistic over seeds, where it is one number per seed. */
  estimate?: Stat;
  /** The verdict on the seed means alone, ignoring the intervals. */
  pointStatus?: "pass" | "fail" | "n/a";
}

export interface RunInfo {
  id: string;
  startedAt: string;
  finishedAt: string;
  preset: string;
  /** The `--grid` filter expression ("" = whole preset). */
  grid: string;
  backend: string;
  device: string;
  dataset: string;
  denoVersion: string;
  /** The first seed (see `seeds`). */
  seed: number;
  options: Record<string, unknown>;
  /** Every seed of the run; each case is trained once per seed (always present in report.json). */
  seeds?: number[];
  /** The resolved, frozen run config (src/run/config.ts). */
  config?: MonobenchConfig;
  /** sha256 of the config's result-relevant part. */
  configHash?: string;
  /** Software, compute, config and data provenance of the run. */
  provenance?: RunProvenance;
}

export interface Report {
  version: number;
  run: RunInfo;
  layers: LayerResult[];
  cases: CaseResult[];
  diff: DiffResult;
  claims: Claim[];
  /** One entry per case over its seed replicates (report/stats.ts). */
  aggregates?: CaseAggregate[];
  /** How `aggregates` and the claims compute their intervals. */
  stats?: string;
  /** The variant comparison view, when one was asked for (report/compare.ts). */
  comparison?: Comparison;
}
