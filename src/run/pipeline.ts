/**
 * The end-to-end benchmark: for each layer the raw-neuron MS ("No SAE"), for each case and seed
 * train an SAE (resumable), encode the evaluation split with the thresholded encoder, and measure
 * MS of every latent for every similarity source, R²/FVE, L0 and dead latents. Every finished unit
 * of work is written to the run directory at once (atomically), so an interrupted run loses at
 * most the case in flight, and that one resumes from its last training checkpoint.
 *
 * Run directory:
 *   run.json                          the frozen config (src/run/rundir.ts)
 *   run.lock                          held while a run works in the directory
 *   layers/<layer>.json               {provenance, result: LayerResult}
 *   cases/<id>/seed-<s>/result.json   CaseResult, with its provenance
 *   cases/<id>/seed-<s>/provenance.json  provenance of the training in progress
 *   cases/<id>/seed-<s>/sae/          SAELens-compatible checkpoint (+ training state for resume)
 *   report.{json,csv,md,html}
 *
 * A stored result or checkpoint is used only when its provenance equals the current run's
 * (software, backend and device, config hash, data store hashes, seed). Before anything is
 * trained every (case, seed) of the run is checked; a mismatch is refused naming the field, or,
 * with `retrainMismatched`, the stale result is deleted and retrained.
 */
import { join } from "node:path";
import type { Backend } from "../backend/types.ts";
import type { BenchCase } from "../grid/cases.ts";
import { fracAbove, msScores, summarizeMs } from "../metrics/ms.ts";
import { reconMetrics } from "../metrics/recon.ts";
import type { Progress } from "../report/progress.ts";
import { type LaneBackend, runInLanes } from "./lanes.ts";
import { atomicWrite } from "../report/atomic.ts";
import { checkpointLocation, trainSae } from "../train/mod.ts";
import { encodeDataset } from "../train/encode.ts";
import type { CaseResult, LayerResult, MsSummary, Provenance } from "../types.ts";
import { asIoError, check, MonobenchError } from "../util/errors.ts";
import { jsonText, nullAsNaN } from "../util/json.ts";
import type { MonobenchConfig } from "./config.ts";
import { trainInput } from "./config.ts";
import { type EvalData, type EvalLayer, layerDataHashes, type RunData } from "./data.ts";
import type { SaeParams } from "../sae/types.ts";
import {
  caseProvenance,
  describeProvenanceDiff,
  diffProvenance,
  type ProvenanceDifference,
  type SoftwareInfo,
} from "./provenance.ts";
import { checkSchema, LAYER_SCHEMA, PROVENANCE_SCHEMA, RESULT_SCHEMA } from "./schemas.ts";

/** The part of {@link Progress} a unit reports to (a lane forwards it to the run's). */
export type CaseProgress = Pick<Progress, "log" | "beginCase" | "setPhase" | "step" | "endCase" | "skipCase">;

export interface PipelineOptions {
  /** The backend units train on; with lanes, one like each lane's (its provenance is theirs). */
  backend: Backend;
  data: RunData;
  outDir: string;
  /** The frozen run config: training settings, seeds, `retrainMismatched`. */
  config: Readonly<MonobenchConfig>;
  configHash: string;
  software: SoftwareInfo;
  progress?: CaseProgress;
  /**
   * Train this many units at a time, each lane on its own `backend` (src/run/lanes.ts); default
   * one, on `backend` itself.
   */
  lanes?: { count: number; backend: LaneBackend };
  /** Run only these (case id, seed) units, e.g. one shard's (src/run/shard.ts); default: every case × seed. */
  units?: readonly { id: string; seed: number }[];
  /** Called after each finished case and seed with the results so far (e.g. to refresh the report). */
  onCase?: (cases: readonly CaseResult[], layers: readonly LayerResult[]) => Promise<void> | void;
}

/** Directory of one case and seed, relative to the run directory. */
export function caseSeedDir(id: string, seed: number): string {
  return join("cases", id, `seed-${seed}`);
}

/** The (case, seed) units of a run in run order: seed by seed, cases in order, restricted to `opts.units`. */
export function runUnits(
  cases: readonly BenchCase[],
  opts: Pick<PipelineOptions, "config" | "units">,
): { c: BenchCase; seed: number }[] {
  const only = opts.units ? new Set(opts.units.map((u) => `${u.id}|${u.seed}`)) : null;
  const out: { c: BenchCase; seed: number }[] = [];
  for (const seed of opts.config.seeds) {
    for (const c of cases) if (!only || only.has(`${c.id}|${seed}`)) out.push({ c, seed });
  }
  return out;
}

/** A case's provenance in this run. */
export function provenanceOf(c: BenchCase, seed: number, opts: PipelineOptions): Provenance {
  return caseProvenance(
    opts.software,
    opts.backend,
    opts.configHash,
    layerDataHashes(opts.data, c.layer),
    seed,
  );
}

/** Parse a stored JSON file: null when absent; raw value (nulls kept) otherwise; MonobenchError when malformed. */
async function readStoredJson(path: string): Promise<unknown | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw asIoError(e, `cannot read ${path}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** JSON's null back to NaN (results write NaN as null). */
function revive<T>(raw: unknown): T {
  return JSON.parse(JSON.stringify(raw), nullAsNaN) as T;
}

/** What a (case, seed) directory holds, judged against the current provenance. */
export type CaseState =
  | { state: "done"; result: CaseResult }
  | { state: "partial" }
  | { state: "fresh" }
  | { state: "mismatch"; reason: string; diffs: ProvenanceDifference[] };

/** Inspect a (case, seed) directory of the run. */
export async function inspectCase(c: BenchCase, seed: number, opts: PipelineOptions): Promise<CaseState> {
  const dir = join(opts.outDir, caseSeedDir(c.id, seed));
  const current = provenanceOf(c, seed, opts);
  const resultPath = join(dir, "result.json");
  let raw: unknown;
  try {
    raw = await readStoredJson(resultPath);
    if (raw !== null) {
      checkSchema(RESULT_SCHEMA, raw, resultPath);
      const r = raw as { id: string; seed: number };
      if (r.id !== c.id || r.seed !== seed) {
        throw new MonobenchError(`${resultPath} holds case ${r.id} seed ${r.seed}, not ${c.id} seed ${seed}`);
      }
    }
  } catch (e) {
    if (!(e instanceof MonobenchError)) throw e;
    return { state: "mismatch", reason: e.message, diffs: [] };
  }
  if (raw !== null) {
    const result = revive<CaseResult>(raw);
    const diffs = diffProvenance(result.provenance, current);
    if (diffs.length === 0) return { state: "done", result };
    return {
      state: "mismatch",
      reason: `${resultPath} was made with another ${describeProvenanceDiff(diffs[0])}`,
      diffs,
    };
  }
  if ((await checkpointLocation(join(dir, "sae"))) === null) return { state: "fresh" };
  const provPath = join(dir, "provenance.json");
  let stored: unknown;
  try {
    stored = await readStoredJson(provPath);
    if (stored === null) throw new MonobenchError(`${dir} holds a checkpoint without ${provPath}`);
    checkSchema(PROVENANCE_SCHEMA, stored, provPath);
  } catch (e) {
    if (!(e instanceof MonobenchError)) throw e;
    return { state: "mismatch", reason: e.message, diffs: [] };
  }
  const diffs = diffProvenance(stored as Provenance, current);
  if (diffs.length === 0) return { state: "partial" };
  return {
    state: "mismatch",
    reason: `the checkpoint in ${dir} was trained with another ${describeProvenanceDiff(diffs[0])}`,
    diffs,
  };
}

/** Move a directory out of the way, then delete it (a crash in between leaves a `.tmp` the next run removes). */
async function removeDir(dir: string): Promise<void> {
  const aside = `${dir}.stale-${Deno.pid}.tmp`;
  try {
    await Deno.rename(dir, aside);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw asIoError(e, `cannot remove ${dir}`);
  }
  await Deno.remove(aside, { recursive: true });
}

/**
 * Check every (case, seed) of the run before any work: refuse mismatching stored results (or
 * delete them when `retrainMismatched`); returns the finished results by `id|seed`.
 */
export async function precheckCases(
  cases: readonly BenchCase[],
  opts: PipelineOptions,
): Promise<Map<string, CaseResult>> {
  const done = new Map<string, CaseResult>();
  const bad: { c: BenchCase; seed: number; reason: string; fields: string[] }[] = [];
  for (const { c, seed } of runUnits(cases, opts)) {
    const s = await inspectCase(c, seed, opts);
    if (s.state === "done") done.set(`${c.id}|${seed}`, s.result);
    if (s.state === "mismatch") {
      bad.push({
        c,
        seed,
        reason: s.reason,
        fields: s.diffs.map((d) => d.field),
      });
    }
  }
  if (bad.length === 0) return done;
  const fields = [...new Set(bad.flatMap((b) => b.fields))];
  const more = bad.length > 1
    ? ` (and ${bad.length - 1} more case/seed(s)${
      fields.length ? `; fields that differ: ${fields.join(", ")}` : ""
    })`
    : "";
  if (!opts.config.retrainMismatched) {
    throw new MonobenchError(
      `cannot reuse ${opts.outDir}: ${bad[0].reason}${more}`,
      "repeat the original setup to resume, choose another --out, or pass --retrain-mismatched to retrain " +
        "the mismatching cases",
    );
  }
  for (const b of bad) {
    opts.progress?.log(`--retrain-mismatched: retraining ${b.c.id} seed ${b.seed} (${b.reason})`);
    await removeDir(join(opts.outDir, caseSeedDir(b.c.id, b.seed)));
  }
  return done;
}

/** Raw-neuron ("No SAE") MS of one layer for every similarity source (reused when its data is unchanged). */
export async function measureLayer(
  layer: EvalLayer,
  opts: Pick<PipelineOptions, "outDir" | "software" | "progress"> & { data: EvalData },
): Promise<LayerResult> {
  const { data, outDir, progress } = opts;
  const path = join(outDir, "layers", `${layer.layer}.json`);
  const provenance = {
    monobench: opts.software.monobench,
    gitCommit: opts.software.gitCommit,
    data: layerDataHashes(data, layer.layer, false),
  };
  type LayerFile = { provenance?: unknown; result?: unknown };
  let cached: LayerFile | null = null;
  try {
    cached = (await readStoredJson(path)) as LayerFile | null;
    if (cached !== null) checkSchema(LAYER_SCHEMA, cached.result, `${path} (result)`);
  } catch (e) {
    if (!(e instanceof MonobenchError)) throw e;
    progress?.log(`layer ${layer.layer}: recomputing the raw-neuron MS (${e.message})`);
    cached = null;
  }
  if (cached && JSON.stringify(cached.provenance) === JSON.stringify(provenance)) {
    return revive<LayerResult>(cached.result);
  }
  const x = layer.eval.all();
  const acts = { kind: "dense" as const, n: layer.eval.n, cols: layer.d, data: x };
  const ms: MsSummary[] = [];
  for (const s of data.similarity) {
    progress?.log(`layer ${layer.layer}: raw-neuron MS (${layer.d} neurons, similarity ${s.name})`);
    ms.push(summarizeMs(msScores(acts, s.eval.all(), s.eval.d), s.name));
  }
  const r: LayerResult = { layer: layer.layer, sourceLayer: layer.sourceLayer, d: layer.d, ms };
  await Deno.mkdir(join(outDir, "layers"), { recursive: true }).catch((e) => {
    throw asIoError(e, `cannot write in ${outDir}`);
  });
  await atomicWrite(path, jsonText({ provenance, result: r }));
  return r;
}

/** What is measured on an SAE: MS per similarity source, share above the raw neurons, R²/FVE, L0, dead latents. */
export interface SaeMeasurement {
  ms: MsSummary[];
  fracAboveRaw: Record<string, number>;
  rec: { r2: number; fve: Record<string, number>; l0: number; deadCount: number; deadFraction: number };
}

/**
 * The evaluation of one SAE on a layer's eval split, for a trained case and for a measured
 * reference checkpoint alike: thresholded encode, R²/FVE, L0 and dead latents, and MS of every
 * latent for every similarity source (with the share above the layer's raw-neuron mean MS).
 */
export async function measureSaeOnLayer(
  backend: Backend,
  params: SaeParams,
  layer: EvalLayer,
  data: Pick<EvalData, "similarity">,
  layerResult: LayerResult,
  progress?: CaseProgress,
): Promise<SaeMeasurement> {
  progress?.setPhase("eval", 2 + data.similarity.length);
  const codes = await encodeDataset(backend, params, layer.eval);
  progress?.step(1);
  const x = layer.eval.all();
  const rec = reconMetrics(x, layer.eval.n, layer.d, codes, params.Wdec, params.bdec);
  progress?.step(2);
  const ms: MsSummary[] = [];
  const fracAboveRaw: Record<string, number> = {};
  for (const [i, s] of data.similarity.entries()) {
    const scores = msScores(codes, s.eval.all(), s.eval.d);
    ms.push(summarizeMs(scores, s.name));
    const raw = layerResult.ms.find((m) => m.encoder === s.name);
    fracAboveRaw[s.name] = raw ? fracAbove(scores, raw.mean) : NaN;
    progress?.step(3 + i);
  }
  return { ms, fracAboveRaw, rec };
}

/** Train (or resume) and measure one case with one seed. */
export async function runCase(
  c: BenchCase,
  seed: number,
  index: number,
  total: number,
  layerResult: LayerResult,
  opts: PipelineOptions,
): Promise<CaseResult> {
  const { backend, data, config, progress } = opts;
  const layer = data.layers.find((l) => l.layer === c.layer);
  if (!layer) throw new MonobenchError(`case ${c.id}: layer ${c.layer} is not in the data`);
  const rel = caseSeedDir(c.id, seed);
  const dir = join(opts.outDir, rel);
  const label = config.seeds.length > 1 ? `${c.id} seed ${seed}` : c.id;
  const state = await inspectCase(c, seed, opts);
  if (state.state === "done") {
    progress?.log(`case ${index}/${total} ${label}: already measured, reusing ${join(dir, "result.json")}`);
    progress?.skipCase(index);
    return state.result;
  }
  if (state.state === "mismatch") {
    // precheckCases has refused or cleared these; a change since then is a concurrent edit.
    throw new MonobenchError(`cannot reuse ${dir}: ${state.reason}`);
  }
  const provenance = provenanceOf(c, seed, opts);
  const saeDir = join(dir, "sae");
  const resume = state.state === "partial";
  try {
    await Deno.mkdir(dir, { recursive: true });
    if (!resume) await atomicWrite(join(dir, "provenance.json"), jsonText(provenance));
  } catch (e) {
    throw asIoError(e, `case ${label}: cannot write in ${dir}`);
  }

  progress?.beginCase(index, label, config.train.steps, resume ? "train (resumed)" : "train");
  let trained;
  try {
    trained = await trainSae(backend, layer.train, trainInput(config, c, seed), {
      checkpointDir: saeDir,
      checkpointEvery: config.train.checkpointEvery,
      resumeDir: resume ? saeDir : undefined,
      // A fresh start in a directory with a stale partial checkpoint (no provenance.json before)
      // cannot happen: inspectCase calls that a mismatch.
      onProgress: (p) => progress?.step(p.step),
      origin: {
        modelName: data.origin?.modelName,
        datasetPath: data.origin?.datasetPath,
        hookName: layer.sourceLayer,
        // The reference's --layer: the block index, or −1 (the final projection, or not known).
        hookLayer: data.origin?.layerIndices && /^\d+$/.test(layer.layer) ? Number(layer.layer) : -1,
        contextSize: 1,
      },
    });
  } catch (e) {
    throw asIoError(e, `case ${label}: cannot write its checkpoint in ${saeDir}`);
  }
  const params = trained.params;

  const { ms, fracAboveRaw, rec } = await measureSaeOnLayer(
    backend,
    params,
    layer,
    data,
    layerResult,
    progress,
  );

  const result: CaseResult = {
    id: c.id,
    seed,
    layer: c.layer,
    sourceLayer: layer.sourceLayer,
    sae: c.sae,
    expansion: c.expansion,
    d: layer.d,
    width: params.cfg.width,
    k: c.k,
    steps: config.train.steps,
    batchSize: config.train.batchSize,
    lr: trained.lr,
    backend: backend.name,
    trainSeconds: trained.seconds,
    finalLoss: trained.finalLoss,
    ms,
    fracAboveRaw,
    r2: rec.r2,
    fve: rec.fve,
    l0: rec.l0,
    deadCount: rec.deadCount,
    deadFraction: rec.deadFraction,
    deadTrain: trained.deadTrain,
    checkpoint: join(rel, "sae"),
    provenance,
  };
  await atomicWrite(join(dir, "result.json"), jsonText(result));
  const main = ms[0];
  progress?.endCase(
    `R² ${rec.r2.toFixed(1)}%, L0 ${rec.l0.toFixed(1)}, MS(${main.encoder}) mean ${
      main.mean.toFixed(3)
    } max ${main.max.toFixed(3)}, dead ${rec.deadCount}`,
  );
  return result;
}

/** Refuse settings the data cannot run: a missing layer, a batch larger than the training split. */
export function checkRunnable(
  cases: readonly BenchCase[],
  config: Readonly<MonobenchConfig>,
  data: RunData,
): void {
  check(cases.length > 0, "nothing to run: the grid selection is empty");
  const have = data.layers.map((x) => x.layer);
  for (const l of new Set(cases.map((c) => c.layer))) {
    const layer = data.layers.find((x) => x.layer === l);
    if (!layer) {
      throw new MonobenchError(
        `the grid needs layer ${l} but the data has only ${have.join(", ")}`,
        `filter the grid, e.g. --grid "layers=${have.join(",")}"`,
      );
    }
    if (config.train.batchSize > layer.train.n) {
      throw new MonobenchError(
        `batch size ${config.train.batchSize} is larger than the training data of layer ${l} (${layer.train.n} rows)`,
        `use --batch ${layer.train.n} or less, or more training data`,
      );
    }
  }
}

/**
 * Run every case for every seed (layers first; seed by seed, so that an interrupted run has a
 * complete grid for its first seeds; with lanes, units start in that order). Returns the layer
 * results and one result per case and seed, in run order.
 */
export async function runPipeline(
  cases: readonly BenchCase[],
  opts: PipelineOptions,
): Promise<{ layers: LayerResult[]; cases: CaseResult[] }> {
  checkRunnable(cases, opts.config, opts.data);
  await precheckCases(cases, opts);
  const units = runUnits(cases, opts);
  const layers: LayerResult[] = [];
  for (const l of [...new Set(units.map((u) => u.c.layer))]) {
    layers.push(await measureLayer(opts.data.layers.find((x) => x.layer === l)!, opts));
  }
  const total = units.length;
  const layerOf = (c: BenchCase) => layers.find((l) => l.layer === c.layer)!;
  if (opts.lanes && opts.lanes.count > 1) {
    // Results in run order, whatever order the lanes finish them in.
    const slots: (CaseResult | undefined)[] = new Array(total);
    await runInLanes(
      units.map((u, i) => ({ ...u, index: i + 1, layer: layerOf(u.c) })),
      total,
      { ...opts, lanes: opts.lanes.count, backend: opts.lanes.backend },
      async (index, result) => {
        slots[index - 1] = result;
        await opts.onCase?.(slots.filter((r): r is CaseResult => r !== undefined), layers);
      },
    );
    return { layers, cases: slots as CaseResult[] };
  }
  const results: CaseResult[] = [];
  let i = 0;
  for (const { c, seed } of units) {
    results.push(await runCase(c, seed, ++i, total, layerOf(c), opts));
    await opts.onCase?.(results, layers);
  }
  return { layers, cases: results };
}
