/**
 * Checkpoints. A checkpoint directory holds
 * - `cfg.json` — SAELens-style config (architecture "jumprelu" for batchtopk/matryoshka with the
 *   scalar threshold broadcast to a per-latent vector, "topk" with k, "standard" for relu;
 *   d_in, d_sae, dtype "float32", normalize_activations "none") plus a "monobench" block with our
 *   full config, norm factor, scalar threshold, step and (Matryoshka) group sizes. It is a
 *   pre-6.0 SAELens config (no sae_lens_version), which SAELens 6 converts on load, with every
 *   field SAELens 5.x requires; provenance comes from {@link SaeOrigin} or is a placeholder:
 *   model_name, hook_name, dataset_path "unknown", hook_layer −1, context_size 1 (one pooled
 *   or CLS vector per image), hook_head_index null, prepend_bos false;
 * - `sae_weights.safetensors` — W_enc [d_in, d_sae] (SAELens orientation), b_enc, W_dec
 *   [d_sae, d_in], b_dec, and for jumprelu threshold [d_sae]: exactly the keys SAELens's
 *   architecture loads; weights take raw (un-normalised) activations;
 * - `state.safetensors` + `state.json` (training checkpoints only) — exact training-space weights,
 *   Adam moments, dead counters, threshold, step, samples seen, data fingerprint: enough to resume
 *   bit-identically.
 *
 * Writes are atomic: everything goes to `<dir>.tmp-*`, then the old directory is moved to
 * `<dir>.prev`, the new one renamed into place and `.prev` removed. If a crash leaves only
 * `<dir>.prev`, loading uses it.
 */
import { join } from "node:path";
import { check, MonobenchError } from "../util/errors.ts";
import { getSae } from "../sae/registry.ts";
import { groupBounds, resolveSaeConfig } from "../sae/config.ts";
import type { SaeConfig, SaeParams } from "../sae/types.ts";
import { getTensor, readSafetensors, type StFile, writeSafetensors } from "./safetensors.ts";
import type { HostOptState, HostWeights } from "./engine.ts";
import { resolveRunConfig, type RunConfig, type TrainInput } from "./config.ts";
import {
  modelParamsFromSaeLens,
  modelSaeLensTensors,
  modelStateTensors,
  rawExtra,
  readModelState,
} from "./model_io.ts";

export const CFG_FILE = "cfg.json";
export const WEIGHTS_FILE = "sae_weights.safetensors";
export const STATE_FILE = "state.safetensors";
export const STATE_JSON = "state.json";

/** One progress record (values of the step at which the trainer synced). */
export interface HistoryEntry {
  step: number;
  loss: number;
  auxLoss: number;
  penalty: number;
  dead: number;
}

/** Everything needed to resume training. Weights are in training (normalised) units. */
export interface TrainCheckpoint {
  config: RunConfig;
  /** Completed updates. */
  step: number;
  samplesSeen: number;
  normFactor: number;
  dataFingerprint: string;
  weights: HostWeights;
  opt: HostOptState;
  history: HistoryEntry[];
  /** Training seconds spent so far (across resumes). */
  elapsedSeconds: number;
  /** Provenance for the SAELens fields of cfg.json (placeholders when absent). */
  origin?: SaeOrigin;
}

/**
 * Where an SAE's training activations came from, written to the SAELens fields of cfg.json.
 * Absent fields get the placeholders of the module doc.
 */
export interface SaeOrigin {
  /** SAELens model_name, e.g. "clip-vit-large-patch14-336". */
  modelName?: string;
  /** SAELens hook_name: the layer the activations were taken at, e.g. "post_projection". */
  hookName?: string;
  /** SAELens hook_layer: its index (−1 for the final projection, as the reference's --layer). */
  hookLayer?: number;
  /** SAELens dataset_path: what the activations were computed on. */
  datasetPath?: string;
  /** SAELens context_size: tokens per sample (1 for one pooled / CLS vector per image). */
  contextSize?: number;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Directory actually holding the last complete checkpoint of `dir` (`dir` or `dir.prev`), or null. */
export async function checkpointLocation(dir: string): Promise<string | null> {
  if (await exists(join(dir, CFG_FILE))) return dir;
  if (await exists(join(`${dir}.prev`, CFG_FILE))) return `${dir}.prev`;
  return null;
}

/** Write a directory atomically: `fill(tmp)` then swap it into place (see module doc). */
async function writeDirAtomic(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${dir}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await fill(tmp);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  const prev = `${dir}.prev`;
  if (await exists(dir)) {
    // `dir` only ever appears complete (by rename), so a leftover `.prev` is stale.
    if (await exists(prev)) await Deno.remove(prev, { recursive: true });
    await Deno.rename(dir, prev);
  }
  await Deno.rename(tmp, dir);
  if (await exists(prev)) await Deno.remove(prev, { recursive: true });
}

async function writeJson(path: string, obj: unknown): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(obj, null, 2) + "\n");
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new MonobenchError(`missing file ${path}`);
    throw e;
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`${path}: malformed JSON (${(e as Error).message})`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new MonobenchError(`${path}: expected a JSON object`);
  }
  return obj as Record<string, unknown>;
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

function requireFinite(a: Float32Array, what: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new MonobenchError(`${what}: non-finite value ${a[i]} at element ${i}`);
  }
}

/**
 * Weights for raw activations from training-space weights, as the reference `scale_biases`:
 * b_enc, b_dec and (if ≥ 0) the threshold are multiplied by the norm factor.
 */
export function toRawParams(
  cfg: SaeConfig,
  w: HostWeights,
  threshold: number,
  normFactor: number,
): SaeParams {
  const scale = (a: Float32Array) => a.map((v) => v * normFactor);
  return {
    cfg,
    Wenc: w.Wenc.slice(),
    benc: scale(w.benc),
    Wdec: w.Wdec.slice(),
    bdec: scale(w.bdec),
    threshold: threshold >= 0 ? Math.fround(threshold * normFactor) : threshold,
    normFactor,
  };
}

/** The SAELens-style cfg.json object of `params` (plus our "monobench" block). */
export function saeLensConfig(
  params: SaeParams,
  extra: Record<string, unknown> = {},
  origin: SaeOrigin = {},
): Record<string, unknown> {
  const { cfg } = params;
  const arch = getSae(cfg.variant).architecture;
  const hookLayer = origin.hookLayer ?? -1, contextSize = origin.contextSize ?? 1;
  check(Number.isSafeInteger(hookLayer), `origin.hookLayer must be an integer, got ${hookLayer}`);
  check(
    Number.isSafeInteger(contextSize) && contextSize >= 1,
    `origin.contextSize must be ≥ 1, got ${contextSize}`,
  );
  const out: Record<string, unknown> = {
    architecture: arch,
    d_in: cfg.d,
    d_sae: cfg.width,
    dtype: "float32",
    device: "cpu",
    apply_b_dec_to_input: true,
    normalize_activations: "none",
    finetuning_scaling_factor: false,
    activation_fn_str: arch === "topk" ? "topk" : "relu",
    activation_fn_kwargs: arch === "topk" ? { k: cfg.k } : {},
    model_name: origin.modelName ?? "unknown",
    hook_name: origin.hookName ?? "unknown",
    hook_layer: hookLayer,
    hook_head_index: null,
    context_size: contextSize,
    prepend_bos: false,
    dataset_path: origin.datasetPath ?? "unknown",
    dataset_trust_remote_code: false,
    sae_lens_training_version: null,
    neuronpedia_id: null,
    model_from_pretrained_kwargs: {},
    seqpos_slice: [null],
  };
  if (arch === "topk") out.k = cfg.k;
  const bounds = cfg.groupFractions.length > 1 ? groupBounds(cfg.groupFractions, cfg.width) : [cfg.width];
  // SAELens 6's Matryoshka convention: cumulative widths (ignored by the jumprelu loader).
  if (bounds.length > 1) out.matryoshka_widths = bounds;
  out.monobench = {
    format: "monobench-sae",
    version: 1,
    config: cfg,
    threshold: params.threshold,
    normFactor: params.normFactor,
    ...(bounds.length > 1 ? { groupSizes: bounds.map((b, i) => b - (i ? bounds[i - 1] : 0)) } : {}),
    ...extra,
  };
  return out;
}

function weightTensors(params: SaeParams) {
  // Architecture-export hook: tape-based variants write their own SAELens tensors.
  const custom = modelSaeLensTensors(params);
  if (custom) return custom;
  const { d, width } = params.cfg;
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {
    W_enc: { shape: [d, width], data: transpose(params.Wenc, width, d) },
    b_enc: { shape: [width], data: params.benc },
    W_dec: { shape: [width, d], data: params.Wdec },
    b_dec: { shape: [d], data: params.bdec },
  };
  // Only SAELens JumpReLU has a threshold (its strict load_state_dict refuses extra keys).
  // It is (pre > θ)·ReLU(pre); θ = max(threshold, 0) gives exactly our encode.
  if (getSae(params.cfg.variant).architecture === "jumprelu") {
    tensors.threshold = { shape: [width], data: new Float32Array(width).fill(Math.max(params.threshold, 0)) };
  }
  return tensors;
}

function checkParams(params: SaeParams, what: string): void {
  const { d, width } = params.cfg;
  check(params.Wenc.length === width * d && params.Wdec.length === width * d, `${what}: weight shapes`);
  check(params.benc.length === width && params.bdec.length === d, `${what}: bias shapes`);
  for (
    const [n, a] of [["Wenc", params.Wenc], ["benc", params.benc], ["Wdec", params.Wdec], [
      "bdec",
      params.bdec,
    ]]
  ) {
    requireFinite(a as Float32Array, `${what}: ${n}`);
  }
  check(Number.isFinite(params.threshold), `${what}: threshold ${params.threshold} is not finite`);
}

/** Save an SAE for inference (cfg.json + sae_weights.safetensors), atomically. */
export async function saveSae(
  dir: string,
  params: SaeParams,
  extra: Record<string, unknown> = {},
  origin: SaeOrigin = {},
): Promise<void> {
  checkParams(params, `saving ${dir}`);
  const cfgJson = saeLensConfig(params, extra, origin);
  await writeDirAtomic(dir, async (tmp) => {
    await writeSafetensors(join(tmp, WEIGHTS_FILE), weightTensors(params), { format: "pt" });
    await writeJson(join(tmp, CFG_FILE), cfgJson);
  });
}

function parseSaeConfig(
  raw: Record<string, unknown>,
  path: string,
): { cfg: SaeConfig; threshold: number | null; normFactor: number } {
  const mb = raw.monobench as Record<string, unknown> | undefined;
  try {
    if (mb && typeof mb === "object") {
      const c = mb.config as SaeConfig;
      check(c && typeof c === "object" && typeof c.variant === "string", "monobench.config missing");
      const cfg = resolveSaeConfig(getSae(c.variant), c);
      const threshold = mb.threshold, normFactor = mb.normFactor;
      check(typeof threshold === "number" && Number.isFinite(threshold), "monobench.threshold missing");
      check(typeof normFactor === "number" && normFactor > 0, "monobench.normFactor missing");
      return { cfg, threshold, normFactor };
    }
    // Plain SAELens config: map the architecture to a variant.
    const d = raw.d_in as number, width = raw.d_sae as number, arch = raw.architecture;
    let cfg: SaeConfig;
    if (arch === "topk") {
      const k = (raw.k ?? (raw.activation_fn_kwargs as Record<string, unknown> | undefined)?.k) as number;
      cfg = resolveSaeConfig(getSae("topk"), { variant: "topk", d, width, k });
    } else if (arch === "jumprelu") {
      cfg = resolveSaeConfig(getSae("batchtopk"), { variant: "batchtopk", d, width, k: Math.min(20, width) });
    } else if (arch === "standard") {
      cfg = resolveSaeConfig(getSae("relu"), { variant: "relu", d, width });
    } else throw new MonobenchError(`unsupported architecture ${JSON.stringify(arch)}`);
    return { cfg, threshold: null, normFactor: 1 };
  } catch (e) {
    if (e instanceof MonobenchError) throw new MonobenchError(`${path}: bad SAE config (${e.message})`);
    throw e;
  }
}

/** Load an SAE saved by {@link saveSae} / the trainer (or a plain SAELens jumprelu/topk/standard SAE). */
export async function loadSae(dir: string): Promise<SaeParams> {
  const loc = await checkpointLocation(dir);
  if (!loc) throw new MonobenchError(`no SAE checkpoint in ${dir} (missing ${CFG_FILE})`);
  const cfgPath = join(loc, CFG_FILE), wPath = join(loc, WEIGHTS_FILE);
  const raw = await readJson(cfgPath);
  const { cfg, threshold, normFactor } = parseSaeConfig(raw, cfgPath);
  const st = await readSafetensors(wPath);
  const { d, width } = cfg;
  const custom = threshold === null ? null : modelParamsFromSaeLens(
    cfg,
    threshold,
    normFactor,
    (n, shape) => getTensor<Float32Array>(st, n, shape, wPath),
  );
  if (custom) {
    checkParams(custom, wPath);
    return custom;
  }
  const WencT = getTensor<Float32Array>(st, "W_enc", [d, width], wPath);
  const params: SaeParams = {
    cfg,
    Wenc: transpose(WencT, d, width),
    benc: getTensor<Float32Array>(st, "b_enc", [width], wPath),
    Wdec: getTensor<Float32Array>(st, "W_dec", [width, d], wPath),
    bdec: getTensor<Float32Array>(st, "b_dec", [d], wPath),
    threshold: -1,
    normFactor,
  };
  if (threshold !== null) params.threshold = threshold;
  else if (getSae(cfg.variant).architecture === "jumprelu") {
    const t = getTensor<Float32Array>(st, "threshold", [width], wPath);
    check(
      t.every((v) => v === t[0]),
      `${wPath}: per-latent thresholds differ; only a scalar threshold is supported`,
    );
    params.threshold = t[0];
  }
  checkParams(params, wPath);
  return params;
}

const SETS = ["Wenc", "benc", "Wdec", "bdec"] as const;

/** Save a resumable training checkpoint (inference files + state), atomically. */
export async function saveTrainCheckpoint(dir: string, ck: TrainCheckpoint): Promise<void> {
  const params = toRawParams(ck.config.sae, ck.weights, ck.opt.threshold, ck.normFactor);
  params.extra = rawExtra(ck.config.sae, ck.weights.extra, ck.normFactor);
  checkParams(params, `checkpoint at step ${ck.step}`);
  const { d, width } = ck.config.sae;
  const shapes = { Wenc: [width, d], benc: [width], Wdec: [width, d], bdec: [d] };
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const n of SETS) {
    tensors[n] = { shape: shapes[n], data: ck.weights[n] };
    tensors[`adam_m.${n}`] = { shape: shapes[n], data: ck.opt.m[n] };
    tensors[`adam_v.${n}`] = { shape: shapes[n], data: ck.opt.v[n] };
  }
  tensors.num_tokens_since_fired = { shape: [width], data: ck.opt.counter };
  tensors.threshold = { shape: [1], data: new Float32Array([ck.opt.threshold]) };
  Object.assign(tensors, modelStateTensors(ck.config.sae, ck.weights, ck.opt));
  await writeDirAtomic(dir, async (tmp) => {
    await writeSafetensors(join(tmp, WEIGHTS_FILE), weightTensors(params), { format: "pt" });
    await writeJson(
      join(tmp, CFG_FILE),
      saeLensConfig(params, { train: ck.config.train, step: ck.step }, ck.origin),
    );
    await writeSafetensors(join(tmp, STATE_FILE), tensors, { step: String(ck.step) });
    await writeJson(join(tmp, STATE_JSON), {
      format: "monobench-train-state",
      version: 1,
      step: ck.step,
      samplesSeen: ck.samplesSeen,
      normFactor: ck.normFactor,
      dataFingerprint: ck.dataFingerprint,
      elapsedSeconds: ck.elapsedSeconds,
      config: ck.config,
      history: ck.history,
    });
  });
}

/** Load and validate a training checkpoint written by {@link saveTrainCheckpoint}. */
export async function loadTrainCheckpoint(dir: string): Promise<TrainCheckpoint> {
  const loc = await checkpointLocation(dir);
  if (!loc || !(await exists(join(loc, STATE_JSON)))) {
    throw new MonobenchError(`no resumable training checkpoint in ${dir} (missing ${STATE_JSON})`);
  }
  const jPath = join(loc, STATE_JSON), sPath = join(loc, STATE_FILE);
  const j = await readJson(jPath);
  const bad = (msg: string) => new MonobenchError(`${jPath}: ${msg}`);
  if (j.format !== "monobench-train-state" || j.version !== 1) {
    throw bad("not a monobench training state (v1)");
  }
  const step = j.step as number, samplesSeen = j.samplesSeen as number, normFactor = j.normFactor as number;
  if (!Number.isSafeInteger(step) || step < 0) throw bad(`bad step ${step}`);
  if (!Number.isSafeInteger(samplesSeen) || samplesSeen < 0) throw bad(`bad samplesSeen ${samplesSeen}`);
  if (typeof normFactor !== "number" || !(normFactor > 0) || !Number.isFinite(normFactor)) {
    throw bad(`bad normFactor ${normFactor}`);
  }
  if (typeof j.dataFingerprint !== "string") throw bad("missing dataFingerprint");
  const rc = j.config as RunConfig;
  if (!rc || typeof rc !== "object" || !rc.sae || !rc.train) throw bad("missing config");
  let config: RunConfig;
  try {
    const { d, ...sae } = rc.sae;
    config = resolveRunConfig({ ...sae, ...rc.train } as TrainInput, d);
  } catch (e) {
    if (e instanceof MonobenchError) throw bad(`bad config (${e.message})`);
    throw e;
  }
  if (step > config.train.steps) throw bad(`step ${step} > steps ${config.train.steps}`);
  const st: StFile = await readSafetensors(sPath);
  if (st.metadata.step !== String(step)) {
    throw new MonobenchError(`${sPath}: step ${st.metadata.step} does not match ${STATE_JSON} step ${step}`);
  }
  const { d, width } = config.sae;
  const shapes = { Wenc: [width, d], benc: [width], Wdec: [width, d], bdec: [d] };
  const get = (name: string, shape: number[]) => {
    const a = getTensor<Float32Array>(st, name, shape, sPath);
    requireFinite(a, `${sPath}: ${name}`);
    return a;
  };
  const set = (prefix: string) =>
    Object.fromEntries(SETS.map((n) => [n, get(prefix + n, shapes[n])])) as unknown as HostWeights;
  const history = Array.isArray(j.history) ? j.history as HistoryEntry[] : [];
  const ck: TrainCheckpoint = {
    config,
    step,
    samplesSeen,
    normFactor,
    dataFingerprint: j.dataFingerprint,
    weights: set(""),
    opt: {
      m: set("adam_m."),
      v: set("adam_v."),
      counter: get("num_tokens_since_fired", [width]),
      threshold: get("threshold", [1])[0],
    },
    history,
    elapsedSeconds: typeof j.elapsedSeconds === "number" ? j.elapsedSeconds : 0,
  };
  readModelState(config.sae, get, ck.weights, ck.opt);
  return ck;
}
