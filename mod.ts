/**
 * monobench public API.
 *
 * ```ts
 * import { getPreset, prepareEmbedded, runPipeline, selectBackend } from "./mod.ts";
 * ```
 *
 * - Backends: {@link selectBackend}, the {@link Backend} contract, the CPU oracle and the
 *   OpenBLAS-accelerated CPU backend.
 * - SAEs: the variant registry ({@link registerSae} to add your own), {@link trainSae},
 *   checkpoints ({@link saveSae}/{@link loadSae}, SAELens-compatible), {@link encodeDataset}.
 * - Metrics: {@link msScores} (exact, O(N·D·ω)), {@link msBrute}, {@link reconMetrics}.
 * - Data: activation stores, the embedded default, ONNX extraction, image loading.
 * - Grid and report: presets, grid filters, paper fixtures, diff, claims, writers, baseline.
 */

// Shared types and errors
export type { ActMatrix, CaseResult, LayerName, LayerResult, MsSummary, PaperLayer } from "./src/types.ts";
export { LAYER_NAME_PATTERN, PAPER_LAYERS } from "./src/types.ts";
export { check, checkFinite, MonobenchError } from "./src/util/errors.ts";
export { Rng } from "./src/util/rng.ts";

// Backends
export type {
  AdamParams,
  Backend,
  Bcast,
  ClipParams,
  Codes,
  CodesT,
  DType,
  EwArg,
  EwSpace,
  MatmulOptions,
  ReduceTo,
  Tensor,
  Threshold,
} from "./src/backend/types.ts";
export { CpuBackend } from "./src/backend/cpu.ts";
export { BlasBackend, openBlas } from "./src/backend/blas.ts";
export type { GemmProvider } from "./src/backend/blas.ts";
export { CpuMtBackend, gemmProvider } from "./src/backend/mt.ts";
export type { CpuMtOptions, GemmChoice } from "./src/backend/mt.ts";
export { BACKEND_NAMES, selectBackend } from "./src/backend/select.ts";
export type { BackendName } from "./src/backend/select.ts";

// Compute layer: element-wise expressions and the reverse-mode tape
export { derivative, evaluate, expr } from "./src/compute/expr.ts";
export type { Expr } from "./src/compute/expr.ts";
export { col, row, Tape, Var } from "./src/compute/tape.ts";
export type { Bcasted, EwArgs, EwOptions, Pattern } from "./src/compute/tape.ts";

// SAE variants and training
export * from "./src/sae/mod.ts";
export * from "./src/train/mod.ts";

// Metrics
export { fracAbove, msBrute, msScores, oneHotEmbeddings, summarizeMs } from "./src/metrics/ms.ts";
export { ReconAccumulator, reconMetrics } from "./src/metrics/recon.ts";
export type { ReconMetrics } from "./src/metrics/recon.ts";

// Data
export { ActivationStore, cachedStore, writeStore } from "./src/data/store.ts";
export { EMBEDDED_DEFAULTS, EMBEDDED_LAYERS, prepareEmbedded } from "./src/data/embedded.ts";
export type { EmbeddedData, EmbeddedOptions } from "./src/data/embedded.ts";
export { clipPreprocess, loadImageFolder } from "./src/data/images.ts";
export { nsfwjsOnnx, OnnxRunner } from "./src/data/onnx.ts";

// Bring your own data and checkpoints: torch.save files, dictionary_learning SAEs, the
// reference's checkpoint folders, streaming store writes
export { openPt, ptEntries, ptMatrix, readPtFloat, readPtInts, streamPtRows } from "./src/io/pt.ts";
export type { PtDType, PtFile, PtTensor } from "./src/io/pt.ts";
export { loadDictLearningFile, loadDictLearningSae, trainerCheckpoint } from "./src/io/dictlearn.ts";
export type { DictLearnClass, DictLearnSae } from "./src/io/dictlearn.ts";
export { parseActsName, walkReferenceLayout } from "./src/io/reference_layout.ts";
export type { ReferenceSae, WalkResult } from "./src/io/reference_layout.ts";
export { StoreWriter } from "./src/io/store_writer.ts";
export type { SaeOrigin } from "./src/train/checkpoint.ts";

// Grid, pipeline and report
export * from "./src/grid/cases.ts";
export {
  DEFAULT_EXPERIMENT_NAMES,
  defaultExperiments,
  listExperimentNames,
  loadExperiment,
  parseExperiment,
} from "./src/grid/experiments.ts";
export type { Experiment } from "./src/grid/experiments.ts";
export { embeddedData, manifestData } from "./src/run/data.ts";
export { dataForExperiments, embeddedForExperiments, manifestEvalData } from "./src/run/data.ts";
export type { EvalData, EvalLayer, RunData, RunLayer } from "./src/run/data.ts";
export { planReference, runReference } from "./src/run/measure_reference.ts";
export type { ReferenceEntry, ReferencePlan } from "./src/run/measure_reference.ts";
export { dataHashes, verifyRunData } from "./src/run/data.ts";
export { measureLayer, measureSaeOnLayer, runCase, runPipeline } from "./src/run/pipeline.ts";
export type { PipelineOptions } from "./src/run/pipeline.ts";
export { cliLayer, configHash, parseSeeds, resolveConfig, trainInput } from "./src/run/config.ts";
export type { MonobenchConfig, ResolvedConfig, RunTrain } from "./src/run/config.ts";
export { caseProvenance, diffProvenance, softwareInfo } from "./src/run/provenance.ts";
export type { RunProvenance } from "./src/run/provenance.ts";
export type { Provenance } from "./src/types.ts";
export { acquireRunLock } from "./src/run/lock.ts";
export { openRunDir } from "./src/run/rundir.ts";
export { parseShardSpec, planShards, shardRecord, unitsOfShard } from "./src/run/shard.ts";
export type { ShardInfo, ShardPlan, ShardRecord, ShardSpec } from "./src/run/shard.ts";
export { mergeRuns, planMerge, readShardDir } from "./src/run/merge.ts";
export type { MergeInfo, MergeOptions, MergeResult } from "./src/run/merge.ts";
export { checkSchema, REPORT_SCHEMA, RESULT_SCHEMA } from "./src/run/schemas.ts";
export { buildReport } from "./src/report/build.ts";
export { loadFixtures } from "./src/report/fixtures.ts";
export { diffAgainstPaper } from "./src/report/diff.ts";
export { checkClaims, PAPER_FIGURES, paperFigures } from "./src/report/claims.ts";
export type { ClaimOptions, PaperFigures } from "./src/report/claims.ts";
export { aggregateCases, diffStat, stat, STATS_METHOD } from "./src/report/stats.ts";
export type { CaseAggregate, DiffStat, MsAggregate, Stat } from "./src/report/stats.ts";
export { compareVariants, paretoFront } from "./src/report/compare.ts";
export type { CompareOptions, Comparison, ComparisonRow, Verdict } from "./src/report/compare.ts";
export { renderSummary, writeReport, writeSummary } from "./src/report/writers.ts";
export {
  baselineFailed,
  checkBaselineConfig,
  checkBaselineData,
  compareWithBaseline,
  formatBaselineSummary,
  loadBaseline,
} from "./src/report/baseline.ts";
export { Progress } from "./src/report/progress.ts";
export type { Claim, DiffResult, DiffRow, Report, RunInfo, Tolerances } from "./src/report/types.ts";
