/** Training config: defaults (docs/REFERENCE.md "Training step" / the public scripts) and validation. */
import { check } from "../util/errors.ts";
import { getSae } from "../sae/registry.ts";
import { resolveSaeConfig, SAE_CONFIG_KEYS } from "../sae/config.ts";
import type { SaeConfig } from "../sae/types.ts";
import { checkSchedule, type LrSpec, resolveLr } from "./lr.ts";

/** Optimisation / data settings. Everything that influences the result lives here or in SaeConfig. */
export interface TrainConfig {
  /** Number of updates (the paper: 1e5). */
  steps: number;
  /** Batch size (the scripts: 4096). */
  batchSize: number;
  /** Learning-rate formula or value (see src/train/lr.ts); "code" is what the scripts produce. */
  lr: LrSpec;
  /** Linear warmup steps (reference default 1000). */
  warmupSteps: number;
  /** Step at which a linear decay to 0 starts (null: constant after warmup). */
  decayStart: number | null;
  /** Seed of the init and the shuffles. */
  seed: number;
  /** false (reference): replay the first epoch's batch order; true: new shuffle every epoch. */
  reshuffle: boolean;
  /** Divide inputs by the norm factor (reference `normalize_activations=True`). */
  normalize: boolean;
  /** Batches averaged for the norm factor (reference: 101). */
  normBatches: number;
  /** "geomedian" (reference): b_dec = geometric median of the first batch; "zero": keep 0. */
  initBdec: "geomedian" | "zero";
  /** Global gradient-norm clip (reference 1.0; 0 disables). */
  gradClip: number;
  beta1: number;
  beta2: number;
  eps: number;
}

export const TRAIN_DEFAULTS: TrainConfig = {
  steps: 100_000,
  batchSize: 4096,
  lr: "code",
  warmupSteps: 1000,
  decayStart: null,
  seed: 0,
  reshuffle: false,
  normalize: true,
  normBatches: 101,
  initBdec: "geomedian",
  gradClip: 1.0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
};

/** Resolved config of a training run. */
export interface RunConfig {
  sae: SaeConfig;
  train: TrainConfig;
}

/**
 * What `trainSae` accepts: a flat object with `variant` and `width` (or `expansion`: width =
 * d·expansion), any SaeConfig / TrainConfig field, and `d` (required for Float32Array data).
 */
export type TrainInput =
  & Partial<Omit<SaeConfig, "variant">>
  & Partial<TrainConfig>
  & { variant: string; expansion?: number };

const TRAIN_KEYS = Object.keys(TRAIN_DEFAULTS);

/** Split, default and validate a {@link TrainInput} for data of row length `d`. */
export function resolveRunConfig(input: TrainInput, d: number): RunConfig {
  check(typeof input === "object" && input !== null, "training config must be an object");
  check(typeof input.variant === "string", `training config needs a "variant" (e.g. "batchtopk")`);
  const variant = getSae(input.variant);
  const sae: Record<string, unknown> = {}, train: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) {
    if (v === undefined || k === "expansion") continue;
    if (SAE_CONFIG_KEYS.includes(k)) sae[k] = v;
    else if (TRAIN_KEYS.includes(k)) train[k] = v;
    else {
      check(
        false,
        `unknown training config key "${k}" (known: ${[...SAE_CONFIG_KEYS, ...TRAIN_KEYS, "expansion"]})`,
      );
    }
  }
  check(sae.d === undefined || sae.d === d, `config d=${sae.d} but the data has d=${d}`);
  sae.d = d;
  if (input.expansion !== undefined) {
    const w = d * input.expansion;
    check(
      Number.isSafeInteger(w) && w > 0,
      `expansion ${input.expansion} × d=${d} is not a positive integer`,
    );
    check(sae.width === undefined || sae.width === w, `width ${sae.width} != d·expansion = ${w}`);
    sae.width = w;
  }
  check(sae.width !== undefined, `training config needs "width" or "expansion"`);
  const saeCfg = resolveSaeConfig(variant, sae as unknown as SaeConfig);
  const t = { ...TRAIN_DEFAULTS, ...train } as TrainConfig;
  check(
    Number.isSafeInteger(t.batchSize) && t.batchSize >= 1,
    `batchSize must be a positive integer, got ${t.batchSize}`,
  );
  checkSchedule(t.steps, t.warmupSteps, t.decayStart);
  resolveLr(t.lr, saeCfg.width);
  check(Number.isSafeInteger(t.seed) && t.seed >= 0, `seed must be a non-negative integer, got ${t.seed}`);
  check(typeof t.reshuffle === "boolean", `reshuffle must be a boolean`);
  check(typeof t.normalize === "boolean", `normalize must be a boolean`);
  check(Number.isSafeInteger(t.normBatches) && t.normBatches >= 1, `normBatches must be a positive integer`);
  check(t.initBdec === "geomedian" || t.initBdec === "zero", `initBdec must be "geomedian" or "zero"`);
  check(Number.isFinite(t.gradClip) && t.gradClip >= 0, `gradClip must be >= 0, got ${t.gradClip}`);
  check(t.beta1 >= 0 && t.beta1 < 1 && t.beta2 >= 0 && t.beta2 < 1, `Adam betas must be in [0, 1)`);
  check(Number.isFinite(t.eps) && t.eps > 0, `eps must be > 0, got ${t.eps}`);
  return { sae: saeCfg, train: t };
}
