/**
 * Report types: what a run writes to `report.json` (and what `--baseline` reads back).
 */
import type { CaseResult, LayerResult } from "../types.ts";

export const REPORT_VERSION = 1;

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
}

export interface DiffResult {
  /** Which of our similarity sources stands for which paper encoder. */
  encoderMap: Record<string, string>;
  tolerances: Tolerances;
  rows: DiffRow[];
  /** Always a caveat: the diff is informative, never a failure on its own. */
  note: string;
}

export type ClaimStatus = "pass" | "fail" | "n/a";

/** A qualitative claim of the paper checked on a run. */
export interface Claim {
  id: string;
  statement: string;
  ref: string;
  status: ClaimStatus;
  evidence: string;
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
  seed: number;
  options: Record<string, unknown>;
}

export interface Report {
  version: number;
  run: RunInfo;
  layers: LayerResult[];
  cases: CaseResult[];
  diff: DiffResult;
  claims: Claim[];
}
