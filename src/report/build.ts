/**
 * The one place a report is assembled from results: the run info (frozen config, provenance),
 * the per-case aggregates over seeds, the paper diff, the claims and (when asked for) the
 * variant comparison. `reproduce` calls it after every case and at the end; anything that merges
 * results (sharded runs) should call it too, so that reports never differ by who built them.
 */
import { defaultExperiments, experimentDiffOptions, runModel } from "../grid/experiments.ts";
import { type MonobenchConfig, portableConfig } from "../run/config.ts";
import type { RunProvenance } from "../run/provenance.ts";
import type { CaseResult, LayerResult } from "../types.ts";
import { checkClaims, paperFigures } from "./claims.ts";
import { type CompareOptions, compareVariants } from "./compare.ts";
import { diffAgainstPaper } from "./diff.ts";
import type { FixtureRow } from "./fixtures.ts";
import { aggregateCases, STATS_METHOD } from "./stats.ts";
import { type Report, REPORT_VERSION, type Tolerances } from "./types.ts";

export interface BuildReportInput {
  config: Readonly<MonobenchConfig>;
  configHash: string;
  provenance: RunProvenance;
  /** Run id (the run directory's name). */
  runId: string;
  startedAt: string;
  /** "" while the run is in progress. */
  finishedAt: string;
  /** One line describing the data. */
  dataset: string;
  /** The command line as given (informative). */
  argv?: readonly string[];
  layers: readonly LayerResult[];
  /** One CaseResult per case and seed. */
  cases: readonly CaseResult[];
  fixtures: readonly FixtureRow[];
  tolerances?: Partial<Tolerances>;
  /** The variant comparison view, when asked for. */
  compare?: CompareOptions;
  /** The paper model the data comes from (a manifest's "model"); default: the experiments' first model. */
  model?: string | null;
}

/** Assemble a report (pure: no I/O). */
export function buildReport(i: BuildReportInput): Report {
  const cases = [...i.cases];
  const layers = [...i.layers];
  const primary = i.config.primary ?? undefined;
  // The diff compares the experiments' tables, for the data's model (configs older than experiments: the default ones).
  const experiments = i.config.experiment?.length ? i.config.experiment : defaultExperiments();
  const paper = experimentDiffOptions(experiments, runModel(experiments, i.model ?? null));
  const report: Report = {
    version: REPORT_VERSION,
    run: {
      id: i.runId,
      startedAt: i.startedAt,
      finishedAt: i.finishedAt,
      preset: i.config.preset,
      grid: i.config.grid,
      backend: i.provenance.backend,
      device: i.provenance.device,
      dataset: i.dataset,
      denoVersion: i.provenance.deno,
      seed: i.config.seeds[0],
      seeds: [...i.config.seeds],
      options: { argv: [...(i.argv ?? [])] },
      config: portableConfig(i.config),
      configHash: i.configHash,
      provenance: i.provenance,
    },
    layers,
    cases,
    diff: diffAgainstPaper(cases, layers, i.fixtures, {
      ...paper,
      primarySource: primary,
      tolerances: i.tolerances,
    }),
    claims: checkClaims(cases, layers, { paper: paperFigures(i.fixtures) }),
    aggregates: aggregateCases(cases),
    stats: STATS_METHOD,
  };
  if (i.compare) report.comparison = compareVariants(cases, i.compare);
  return report;
}
