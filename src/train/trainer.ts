/**
 * Generic SAE trainer (docs/REFERENCE.md): input normalisation, geometric-median b_dec init, the
 * variant's activation, AuxK, decoder constraint, clipping, Adam with warmup/decay, reference
 * batching, periodic host syncs, atomic checkpoints and bit-identical resume (CPU backend).
 *
 * Host syncs: scalars (loss, AuxK, dead count, grad norm) stay on the device and are read every
 * `syncEvery` steps (and at checkpoints and the end); only then are progress reported and
 * divergence (non-finite loss or gradient norm) detected. Nothing on the training path needs a
 * sync: k_aux = min(d/2, #dead) is evaluated on the device (see SaeEngine), and the AuxK path is
 * only skipped while fewer than `deadAfterTokens` samples have been seen, when no latent can be
 * dead, so the dead count never lags behind the step that uses it.
 */
import type { Backend } from "../backend/types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { getSae } from "../sae/registry.ts";
import { isModelVariant, type SaeParams } from "../sae/types.ts";
import { initModelWeights } from "./model_engine.ts";
import { rawExtra } from "./model_io.ts";
import { BatchOrder, computeNormFactor, DataSource, STREAM_INIT, subRng, type TrainData } from "./data.ts";
import { type HostWeights, initialWeights, SaeEngine, type StepStats } from "./engine.ts";
import { geometricMedian } from "./geomedian.ts";
import { lrFactor, resolveLr } from "./lr.ts";
import { resolveRunConfig, type RunConfig, type TrainInput } from "./config.ts";
import {
  checkpointLocation,
  type HistoryEntry,
  loadTrainCheckpoint,
  type SaeOrigin,
  saveTrainCheckpoint,
  toRawParams,
  type TrainCheckpoint,
} from "./checkpoint.ts";

export interface TrainProgress {
  /** Completed updates. */
  step: number;
  steps: number;
  /** Weighted reconstruction loss of the last step (normalised units). */
  loss: number;
  /** α · AuxK of the last step (0 when no latent is dead). */
  auxLoss: number;
  /** Sparsity penalty of the last step (λ·mean ||f||₁ for relu, else 0). */
  penalty: number;
  /** Dead latents (no firing for deadAfterTokens samples) after the last step. */
  dead: number;
  /** Learning rate of the last update. */
  lr: number;
  /** Seconds of training so far (across resumes). */
  elapsed: number;
}

export interface TrainOptions {
  /** Read device scalars every this many steps (default 25). */
  syncEvery?: number;
  /** Directory for checkpoints (cfg.json, sae_weights.safetensors, state.*). */
  checkpointDir?: string;
  /** Save a resumable checkpoint every this many steps (0/undefined: only at the end). */
  checkpointEvery?: number;
  /** Resume from the training checkpoint in this directory (checkpointDir defaults to it). */
  resumeDir?: string;
  /** Allow overwriting an existing checkpoint in checkpointDir that we are not resuming from. */
  overwrite?: boolean;
  /** Called at every sync. Throwing aborts training (the last checkpoint stays). */
  onProgress?: (p: TrainProgress) => void;
  /** Where the training activations came from, for the SAELens fields of cfg.json. */
  origin?: SaeOrigin;
}

export interface TrainResult {
  /** Trained SAE for raw activations. */
  params: SaeParams;
  config: RunConfig;
  /** Base learning rate (before the schedule). */
  lr: number;
  normFactor: number;
  /** One entry per sync. */
  history: HistoryEntry[];
  /** Mean loss over the history entries of the last 1 % of steps (at least the last entry). */
  finalLoss: number;
  /** Dead latents at the end of training (trainer bookkeeping). */
  deadTrain: number;
  /** Training seconds (across resumes). */
  seconds: number;
  /** Step the run started from (> 0 when resumed). */
  resumedFrom: number;
}

function describeDiff(a: unknown, b: unknown, path = ""): string[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  if (typeof a === "object" && a && typeof b === "object" && b && !Array.isArray(a)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) =>
      describeDiff(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        path ? `${path}.${k}` : k,
      )
    );
  }
  return [`${path}: checkpoint ${JSON.stringify(b)} vs requested ${JSON.stringify(a)}`];
}

/** Train an SAE on `data` (Float32Array [n, d] with cfg.d, or a row source). */
export async function trainSae(
  backend: Backend,
  data: TrainData,
  input: TrainInput,
  opts: TrainOptions = {},
): Promise<TrainResult> {
  const src = DataSource.from(data, input?.d);
  const config = resolveRunConfig(input, src.d);
  const { sae: cfg, train: tc } = config;
  const variant = getSae(cfg.variant);
  const syncEvery = opts.syncEvery ?? 25;
  check(Number.isSafeInteger(syncEvery) && syncEvery >= 1, `syncEvery must be a positive integer`);
  const ckEvery = opts.checkpointEvery ?? 0;
  check(Number.isSafeInteger(ckEvery) && ckEvery >= 0, `checkpointEvery must be an integer >= 0`);
  const ckDir = opts.checkpointDir ?? opts.resumeDir;
  const fingerprint = src.fingerprint();
  const baseLr = resolveLr(tc.lr, cfg.width);

  let start = 0, samplesSeen = 0, normFactor: number, elapsed0 = 0;
  let history: HistoryEntry[] = [];
  let engine: SaeEngine;
  if (opts.resumeDir) {
    const ck = await loadTrainCheckpoint(opts.resumeDir);
    const diff = describeDiff(config, ck.config);
    if (diff.length) {
      throw new MonobenchError(
        `cannot resume from ${opts.resumeDir}: the config differs (${diff.join("; ")})`,
        "resume with the same config, or start a fresh run in a new checkpoint directory",
      );
    }
    if (ck.dataFingerprint !== fingerprint) {
      throw new MonobenchError(
        `cannot resume from ${opts.resumeDir}: it was trained on different data (${ck.dataFingerprint} vs ${fingerprint})`,
      );
    }
    start = ck.step;
    samplesSeen = ck.samplesSeen;
    normFactor = ck.normFactor;
    history = ck.history;
    elapsed0 = ck.elapsedSeconds;
    engine = new SaeEngine(backend, variant, cfg, ck.weights, ck.opt);
  } else {
    if (ckDir && !opts.overwrite && await checkpointLocation(ckDir)) {
      throw new MonobenchError(
        `checkpoint directory ${ckDir} already holds a checkpoint`,
        "pass resumeDir to continue it, overwrite: true to replace it, or use another directory",
      );
    }
    normFactor = tc.normalize ? computeNormFactor(src, tc.batchSize, tc.seed, tc.normBatches) : 1;
    let w: HostWeights;
    if (isModelVariant(variant)) w = initModelWeights(variant, cfg, subRng(tc.seed, STREAM_INIT));
    else w = initialWeights(variant, cfg, subRng(tc.seed, STREAM_INIT));
    engine = new SaeEngine(backend, variant, cfg, w);
  }

  const order = new BatchOrder(src.n, tc.batchSize, tc.seed, tc.reshuffle);
  const xBuf = new Float32Array(Math.min(tc.batchSize, src.n) * cfg.d);
  const t0 = performance.now();
  const elapsed = () => elapsed0 + (performance.now() - t0) / 1000;
  let lastCkStep = start, lastSync = start;
  let lr = 0;

  const sync = async (step: number): Promise<StepStats> => {
    const s = await engine.readStats();
    if (!Number.isFinite(s.loss) || !Number.isFinite(s.gradNormSq) || !Number.isFinite(s.aux)) {
      throw new MonobenchError(
        `training diverged: non-finite loss (loss ${s.loss}, AuxK ${s.aux}, grad norm² ${s.gradNormSq}) ` +
          `at step ${step} (the last finite sync was at step ${lastSync})`,
        ckDir && lastCkStep > 0
          ? `the last good checkpoint (step ${lastCkStep}) is kept in ${ckDir}; try a smaller lr`
          : "try a smaller lr",
      );
    }
    if (s.dead === 0) s.aux = 0; // AuxK is defined as 0 without dead latents
    history.push({ step, loss: s.loss, auxLoss: s.aux, penalty: s.penalty, dead: s.dead });
    lastSync = step;
    opts.onProgress?.({
      step,
      steps: tc.steps,
      loss: s.loss,
      auxLoss: s.aux,
      penalty: s.penalty,
      dead: s.dead,
      lr,
      elapsed: elapsed(),
    });
    return s;
  };

  const checkpoint = async (step: number): Promise<TrainCheckpoint> => {
    const ck: TrainCheckpoint = {
      config,
      step,
      samplesSeen,
      normFactor,
      dataFingerprint: fingerprint,
      weights: await engine.readWeights(),
      opt: await engine.readOptState(),
      history,
      elapsedSeconds: elapsed(),
      ...(opts.origin ? { origin: opts.origin } : {}),
    };
    const { extra, ...core } = ck.weights;
    for (const [n, a] of [...Object.entries(core), ...Object.entries(extra ?? {})]) {
      if (!(a as Float32Array).every(Number.isFinite)) {
        throw new MonobenchError(
          `training diverged: non-finite ${n} at step ${step}`,
          ckDir && lastCkStep > 0
            ? `the last good checkpoint (step ${lastCkStep}) is kept in ${ckDir}`
            : undefined,
        );
      }
    }
    return ck;
  };

  try {
    for (let step = start; step < tc.steps; step++) {
      const { indices } = order.batch(step);
      const rows = indices.length;
      const x = xBuf.subarray(0, rows * cfg.d);
      src.gather(indices, x, normFactor);
      if (step === 0 && tc.initBdec === "geomedian") {
        engine.setBdec(Float32Array.from(geometricMedian(x, rows, cfg.d)));
      }
      samplesSeen += rows;
      engine.forwardBackward(x, rows, {
        updateThreshold: step > cfg.thresholdStartStep,
        // No latent can be dead before deadAfterTokens samples: AuxK is exactly 0 then.
        auxk: samplesSeen >= cfg.deadAfterTokens,
        step,
        steps: tc.steps,
      });
      lr = baseLr * lrFactor(step, tc.steps, tc.warmupSteps, tc.decayStart);
      engine.optimizerStep({
        lr,
        step: step + 1,
        beta1: tc.beta1,
        beta2: tc.beta2,
        eps: tc.eps,
        maxNorm: tc.gradClip,
      });
      const done = step + 1;
      const isCk = ckDir !== undefined && ckEvery > 0 && done % ckEvery === 0 && done < tc.steps;
      if (done % syncEvery === 0 || done === tc.steps || isCk) await sync(done);
      if (isCk) {
        await saveTrainCheckpoint(ckDir!, await checkpoint(done));
        lastCkStep = done;
      }
    }
    const final = await checkpoint(tc.steps);
    if (ckDir) await saveTrainCheckpoint(ckDir, final);
    const params = toRawParams(cfg, final.weights, final.opt.threshold, normFactor);
    const extra = rawExtra(cfg, final.weights.extra, normFactor);
    if (extra) params.extra = extra;
    const tail = history.filter((h) => h.step > tc.steps - Math.max(1, Math.ceil(tc.steps / 100)));
    const use = tail.length ? tail : history.slice(-1);
    const finalLoss = use.length ? use.reduce((a, h) => a + h.loss, 0) / use.length : NaN;
    return {
      params,
      config,
      lr: baseLr,
      normFactor,
      history,
      finalLoss,
      deadTrain: history.length ? history[history.length - 1].dead : 0,
      seconds: elapsed(),
      resumedFrom: start,
    };
  } finally {
    engine.dispose();
  }
}
