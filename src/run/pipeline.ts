/**
 * The end-to-end benchmark: for each layer the raw-neuron MS ("No SAE"), for each case train an
 * SAE (resumable), encode the evaluation split with the thresholded encoder, and measure MS of
 * every latent for every similarity source, R²/FVE, L0 and dead latents. Every finished unit of
 * work is written to the run directory at once (atomically), so an interrupted run loses at most
 * the case in flight, and that one resumes from its last training checkpoint.
 *
 * Run directory:
 *   run.json                 options + data fingerprint (a resumed run must match)
 *   layers/<layer>.json      LayerResult
 *   cases/<id>/result.json   CaseResult
 *   cases/<id>/sae/          SAELens-compatible checkpoint (+ training state for resume)
 *   report.{json,csv,md,html}
 */
import { join } from "node:path";
import type { Backend } from "../backend/types.ts";
import type { BenchCase, TrainHyper } from "../grid/cases.ts";
import { fracAbove, msScores, summarizeMs } from "../metrics/ms.ts";
import { reconMetrics } from "../metrics/recon.ts";
import type { Progress } from "../report/progress.ts";
import { atomicWrite } from "../report/atomic.ts";
import { checkpointLocation, trainSae } from "../train/mod.ts";
import { encodeDataset } from "../train/encode.ts";
import type { CaseResult, LayerResult, MsSummary } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { jsonText, nullAsNaN } from "../util/json.ts";
import type { RunData, RunLayer } from "./data.ts";

export interface PipelineOptions {
  backend: Backend;
  data: RunData;
  outDir: string;
  hyper: TrainHyper;
  seed: number;
  /** Learning rate override (number) — otherwise the preset's rule. */
  lr?: number;
  progress?: Progress;
  /** Called after each finished case with the results so far (e.g. to refresh the report). */
  onCase?: (cases: readonly CaseResult[], layers: readonly LayerResult[]) => Promise<void> | void;
}

async function readJsonIf<T>(path: string): Promise<T | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    return JSON.parse(text, nullAsNaN) as T;
  } catch {
    // A damaged partial result is recomputed rather than trusted. (null = a NaN we wrote.)
    return null;
  }
}

/** Raw-neuron ("No SAE") MS of one layer for every similarity source. */
export async function measureLayer(
  layer: RunLayer,
  data: RunData,
  outDir: string,
  progress?: Progress,
): Promise<LayerResult> {
  const path = join(outDir, "layers", `${layer.layer}.json`);
  const cached = await readJsonIf<LayerResult>(path);
  if (cached && cached.d === layer.d && cached.ms?.length === data.similarity.length) return cached;
  const x = layer.eval.all();
  const acts = { kind: "dense" as const, n: layer.eval.n, cols: layer.d, data: x };
  const ms: MsSummary[] = [];
  for (const s of data.similarity) {
    progress?.log(`layer ${layer.layer}: raw-neuron MS (${layer.d} neurons, similarity ${s.name})`);
    ms.push(summarizeMs(msScores(acts, s.eval.all(), s.eval.d), s.name));
  }
  const r: LayerResult = { layer: layer.layer, sourceLayer: layer.sourceLayer, d: layer.d, ms };
  await Deno.mkdir(join(outDir, "layers"), { recursive: true });
  await atomicWrite(path, jsonText(r));
  return r;
}

/** Train (or resume) and measure one case. */
export async function runCase(
  c: BenchCase,
  index: number,
  total: number,
  layerResult: LayerResult,
  opts: PipelineOptions,
): Promise<CaseResult> {
  const { backend, data, hyper, progress } = opts;
  const layer = data.layers.find((l) => l.layer === c.layer);
  if (!layer) throw new MonobenchError(`case ${c.id}: layer ${c.layer} is not in the data`);
  const caseDir = join(opts.outDir, "cases", c.id);
  const resultPath = join(caseDir, "result.json");
  const done = await readJsonIf<CaseResult>(resultPath);
  if (done && done.id === c.id) {
    progress?.log(`case ${index}/${total} ${c.id}: already measured, reusing ${resultPath}`);
    return done;
  }
  await Deno.mkdir(caseDir, { recursive: true });
  const saeDir = join(caseDir, "sae");
  const resume = (await checkpointLocation(saeDir)) !== null;

  progress?.beginCase(index, c.id, hyper.steps, resume ? "train (resumed)" : "train");
  const trained = await trainSae(backend, layer.train, {
    variant: c.sae,
    expansion: c.expansion,
    k: c.k,
    auxkAlpha: hyper.auxkAlpha,
    deadAfterTokens: hyper.deadAfterTokens,
    thresholdStartStep: hyper.thresholdStartStep,
    thresholdBeta: hyper.thresholdBeta,
    steps: hyper.steps,
    batchSize: hyper.batchSize,
    warmupSteps: hyper.warmupSteps,
    lr: opts.lr ?? hyper.lrRule,
    seed: opts.seed,
  }, {
    checkpointDir: saeDir,
    checkpointEvery: hyper.checkpointEvery,
    resumeDir: resume ? saeDir : undefined,
    onProgress: (p) => progress?.step(p.step),
  });
  const params = trained.params;

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

  const result: CaseResult = {
    id: c.id,
    layer: c.layer,
    sourceLayer: layer.sourceLayer,
    sae: c.sae,
    expansion: c.expansion,
    d: layer.d,
    width: params.cfg.width,
    k: c.k,
    steps: hyper.steps,
    batchSize: hyper.batchSize,
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
    checkpoint: join("cases", c.id, "sae"),
  };
  await atomicWrite(resultPath, jsonText(result));
  const main = ms[0];
  progress?.endCase(
    `R² ${rec.r2.toFixed(1)}%, L0 ${rec.l0.toFixed(1)}, MS(${main.encoder}) mean ${
      main.mean.toFixed(3)
    } max ${main.max.toFixed(3)}, dead ${rec.deadCount}`,
  );
  return result;
}

/** Run every case (layers first). Returns the layer and case results in case order. */
export async function runPipeline(
  cases: readonly BenchCase[],
  opts: PipelineOptions,
): Promise<{ layers: LayerResult[]; cases: CaseResult[] }> {
  check(cases.length > 0, "nothing to run: the grid selection is empty");
  const needed = [...new Set(cases.map((c) => c.layer))];
  const layers: LayerResult[] = [];
  for (const l of needed) {
    const layer = opts.data.layers.find((x) => x.layer === l);
    if (!layer) {
      throw new MonobenchError(
        `the grid needs layer ${l} but the data has only ${opts.data.layers.map((x) => x.layer).join(", ")}`,
        `filter the grid, e.g. --grid "layers=${opts.data.layers.map((x) => x.layer).join(",")}"`,
      );
    }
    layers.push(await measureLayer(layer, opts.data, opts.outDir, opts.progress));
  }
  const results: CaseResult[] = [];
  for (const [i, c] of cases.entries()) {
    const lr = layers.find((l) => l.layer === c.layer)!;
    const r = await runCase(c, i + 1, cases.length, lr, opts);
    results.push(r);
    await opts.onCase?.(results, layers);
  }
  return { layers, cases: results };
}
