/**
 * Measure SAEs that someone else trained — a folder laid out as the reference's sae_train.py
 * writes it, such as the authors' released weights — exactly as `reproduce` measures the SAEs it
 * trains, and report them the same way, with no training:
 *
 * 1. {@link planReference} walks the folder one `<sae>_<k>_x<ε>` folder at a time
 *    (src/io/reference_layout.ts), keeps the SAEs of the run's model (and dataset), and turns
 *    each into a benchmark case `<variant>-<layer>-x<ε>-k<K>`, the layer named after its training
 *    activations (the reference's layer −1 is "last"). Each checkpoint file is hashed; its
 *    sha256 stands in the case's provenance where a trained case has its config hash.
 * 2. {@link runReference} refuses stored results of other checkpoints, data or software (or
 *    measures them again with `retrainMismatched`), measures the raw neurons of every layer and
 *    each SAE with the pipeline's own functions (src/run/pipeline.ts: thresholded encode, MS per
 *    similarity source, R²/FVE, L0, dead latents), and writes `cases/<id>/seed-0/result.json`.
 */
import { basename, join, relative } from "node:path";
import type { Backend } from "../backend/types.ts";
import { Sha256 } from "../data/hash.ts";
import {
  applyGridFilter,
  type BenchCase,
  caseId,
  experimentCases,
  learningRate,
  parseGridFilter,
} from "../grid/cases.ts";
import { checkLayerName, type Experiment } from "../grid/experiments.ts";
import { loadDictLearningFile, SAE_MODEL_NAMES } from "../io/dictlearn.ts";
import { listDir } from "../io/fsutil.ts";
import { type ReferenceSae, walkReferenceLayout } from "../io/reference_layout.ts";
import { atomicWrite } from "../report/atomic.ts";
import type { Progress } from "../report/progress.ts";
import type { CaseResult, LayerResult, Provenance } from "../types.ts";
import { asIoError, MonobenchError } from "../util/errors.ts";
import { jsonText, nullAsNaN } from "../util/json.ts";
import { type EvalData, layerDataHashes } from "./data.ts";
import { caseSeedDir, measureLayer, measureSaeOnLayer } from "./pipeline.ts";
import {
  caseProvenance,
  describeProvenanceDiff,
  diffProvenance,
  type ProvenanceDifference,
  type SoftwareInfo,
} from "./provenance.ts";
import { checkSchema, RESULT_SCHEMA } from "./schemas.ts";

/** save_activations.py's `--model_name` values → the fixtures' model names. */
export const REFERENCE_MODELS: Readonly<Record<string, string>> = Object.freeze({
  "clip-vit-large-patch14-336": "clip-vit-l14-336",
  "siglip-so400m-patch14-384": "siglip-so400m-14-384",
});

/** The seed of a measured SAE (the reference sets none; one replicate per case). */
export const REFERENCE_SEED = 0;

/** The batch size of the reference scripts (scripts/*.sh --batch_size), which config.json does not record. */
export const REFERENCE_BATCH_SIZE = 4096;

/** One SAE of the folder, as a case (its weights are loaded again when it is measured). */
export interface ReferenceEntry {
  case: BenchCase;
  /** The checkpoint file, and its path relative to the measured folder. */
  file: string;
  relFile: string;
  sha256: string;
  trainerDir: string;
  d: number;
  width: number;
  /** `ae_<step>.pt` step, or "final" (ae.pt). */
  step: number | "final";
  /** The fixtures' model name of the training activations (null: the folder name does not say). */
  model: string | null;
  dataset: string | null;
  /** Training steps (the checkpoint's step; ae.pt: config.json's steps) and base lr. */
  steps: number;
  lr: number;
}

export interface ReferencePlan {
  entries: ReferenceEntry[];
  /** Folders and SAEs left out, with why. */
  skipped: string[];
}

export interface PlanOptions {
  step: number | "final";
  /** The run's paper model: SAEs trained on another model's activations are left out. */
  model: string;
  /** Keep only SAEs trained on this dataset's activations (e.g. "imagenet"). */
  dataset?: string;
  /** `--grid` expression over the SAEs found. */
  grid?: string;
  /** Cases in an experiment's grid carry its group; others the group "reference". */
  experiments: readonly Experiment[];
}

const OUTER = new RegExp(`^(${Object.keys(SAE_MODEL_NAMES).join("|")})_(\\d+)_x(\\d+)$`);

async function fileSha256(path: string): Promise<string> {
  const h = new Sha256();
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    throw new MonobenchError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    f.close();
  }
  return h.hex();
}

/**
 * Find the SAEs under `root` (a checkpoints folder or one `<sae>_<k>_x<ε>` folder) and make them
 * cases (see the module doc). One `<sae>_<k>_x<ε>` folder's weights are in memory at a time.
 */
export async function planReference(root: string, opts: PlanOptions): Promise<ReferencePlan> {
  const skipped: string[] = [];
  let folders: string[];
  if (OUTER.test(basename(root))) folders = [root];
  else {
    const entries = await listDir(root);
    folders = entries.filter((e) => e.isDirectory && OUTER.test(e.name)).map((e) => join(root, e.name));
    // No SAE folder: the walk says so, with its hint.
    if (folders.length === 0) await walkReferenceLayout(root, { step: opts.step });
    for (const e of entries) {
      if (!(e.isDirectory && OUTER.test(e.name)) && !e.name.startsWith(".")) {
        skipped.push(`${e.name}: not an SAE folder`);
      }
    }
  }
  const byId = new Map<string, ReferenceEntry>();
  const inGrid = new Map<string, string[]>();
  for (const e of opts.experiments) {
    for (const c of experimentCases(e)) inGrid.set(c.id, [...(inGrid.get(c.id) ?? []), e.group]);
  }
  for (const folder of folders) {
    const { saes } = await walkReferenceLayout(folder, { step: opts.step });
    for (const s of saes) {
      const entry = await toEntry(s, root, opts, inGrid, skipped);
      if (!entry) continue;
      const prev = byId.get(entry.case.id);
      if (prev) {
        throw new MonobenchError(
          `two SAEs are case ${entry.case.id}: ${prev.trainerDir} and ${entry.trainerDir}`,
          prev.dataset !== entry.dataset
            ? `they were trained on ${prev.dataset} and ${entry.dataset} activations: pick one with --dataset NAME`
            : "point --sae-root at a folder that holds one of them",
        );
      }
      byId.set(entry.case.id, entry);
    }
  }
  let entries = [...byId.values()];
  if (entries.length === 0) {
    throw new MonobenchError(
      `${root}: no SAE to measure (${skipped.length} left out${
        skipped.length ? `: ${skipped.slice(0, 3).join("; ")}` : ""
      })`,
      "the folder must hold <sae>_<k>_x<ε>/<acts>_<sae>_<k>_x<ε>/trainer_0 SAEs of the run's model; " +
        '--experiment and the manifest\'s "model" choose it',
    );
  }
  if (opts.grid && opts.grid.trim() !== "") {
    const universe = entries.map((e) => e.case);
    const keep = new Set(
      applyGridFilter(universe, parseGridFilter(opts.grid, universe), "the SAEs found").map((c) => c.id),
    );
    entries = entries.filter((e) => keep.has(e.case.id));
  }
  return { entries, skipped };
}

async function toEntry(
  s: ReferenceSae,
  root: string,
  opts: PlanOptions,
  inGrid: Map<string, string[]>,
  skipped: string[],
): Promise<ReferenceEntry | null> {
  const where = relative(root, s.trainerDir) || s.trainerDir;
  const model = s.model === null ? null : (REFERENCE_MODELS[s.model] ?? s.model);
  if (model !== null && model !== opts.model) {
    skipped.push(`${where}: trained on ${model} activations, the run compares ${opts.model}`);
    return null;
  }
  if (opts.dataset !== undefined && s.dataset !== opts.dataset) {
    skipped.push(`${where}: trained on ${s.dataset ?? "unnamed"} activations, not ${opts.dataset}`);
    return null;
  }
  try {
    checkLayerName(s.sourceLayer, `${where}: the layer of its activations folder "${s.acts}"`);
  } catch (e) {
    throw new MonobenchError(
      (e as Error).message,
      "name the folder as save_activations.py does (<dataset>_<split>_activations_<model>_<layer>_<point>)",
    );
  }
  const file = s.sae.file;
  const id = caseId(s.variant, s.sourceLayer, s.expansion, s.k);
  const cfg = s.sae.config ?? {};
  const num = (
    k: string,
  ) => (typeof cfg[k] === "number" && Number.isFinite(cfg[k]) ? cfg[k] as number : null);
  const steps = s.step === "final" ? num("steps") : s.step;
  if (steps === null || !Number.isSafeInteger(steps) || steps < 0) {
    throw new MonobenchError(
      `${file}: the final model of a run without a trainer config.json (or one without "steps"): its ` +
        "training length is unknown",
      "measure a checkpoint of known step instead: --step N for checkpoints/ae_N.pt",
    );
  }
  return {
    case: {
      id,
      layer: s.sourceLayer,
      sae: s.variant,
      expansion: s.expansion,
      k: s.k,
      groups: inGrid.get(id) ?? ["reference"],
    },
    file,
    relFile: relative(root, file) || basename(file),
    sha256: await fileSha256(file),
    trainerDir: s.trainerDir,
    d: s.sae.d,
    width: s.sae.width,
    step: s.step,
    model,
    dataset: s.dataset,
    steps,
    // Without --lr the trainer picks 2e-4/√(ω/2¹⁴), which is what the paper's scripts run.
    lr: num("lr") ?? learningRate("code", s.sae.width),
  };
}

export interface ReferenceRunOptions {
  backend: Backend;
  data: EvalData;
  outDir: string;
  software: SoftwareInfo;
  /** Measure again the SAEs whose stored result has another provenance (instead of refusing). */
  retrainMismatched: boolean;
  progress?: Progress;
  /** Called after each measured SAE with the results so far. */
  onCase?: (cases: readonly CaseResult[], layers: readonly LayerResult[]) => Promise<void> | void;
}

/** The provenance of a measured SAE: its checkpoint's sha256 in place of a config hash. */
export function referenceProvenance(
  e: ReferenceEntry,
  opts: ReferenceRunOptions,
  sha256 = e.sha256,
): Provenance {
  return caseProvenance(
    opts.software,
    opts.backend,
    sha256,
    layerDataHashes(opts.data, e.case.layer, false),
    REFERENCE_SEED,
  );
}

/** Refuse SAEs the data cannot measure: a layer the manifest lacks, another input width. */
export function checkMeasurable(plan: ReferencePlan, data: EvalData, dataWhat: string): void {
  const have = data.layers.map((l) => l.layer);
  for (const e of plan.entries) {
    const layer = data.layers.find((l) => l.layer === e.case.layer);
    if (!layer) {
      const present = [...new Set(plan.entries.map((x) => x.case.layer).filter((l) => have.includes(l)))];
      throw new MonobenchError(
        `${e.trainerDir} was trained on layer ${e.case.layer} (its activations folder says so), but ${dataWhat} ` +
          `has only ${have.join(", ")}`,
        present.length
          ? `add layer ${e.case.layer} to the manifest, or measure the others: --grid "layers=${
            present.join(",")
          }"`
          : `add layer ${e.case.layer} (its evaluation split) to the manifest`,
      );
    }
    if (layer.d !== e.d) {
      throw new MonobenchError(
        `${e.file} takes d = ${e.d} inputs, but layer ${e.case.layer} of ${dataWhat} has d = ${layer.d}`,
        "the manifest's layer must hold activations of the layer and model the SAE was trained on",
      );
    }
  }
}

type Stored = { state: "done"; result: CaseResult } | { state: "fresh" } | {
  state: "mismatch";
  reason: string;
  diffs: ProvenanceDifference[];
};

async function inspect(e: ReferenceEntry, opts: ReferenceRunOptions): Promise<Stored> {
  const path = join(opts.outDir, caseSeedDir(e.case.id, REFERENCE_SEED), "result.json");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { state: "fresh" };
    throw asIoError(err, `cannot read ${path}`);
  }
  let raw: { id?: unknown; seed?: unknown; provenance?: Provenance };
  try {
    raw = JSON.parse(text);
    checkSchema(RESULT_SCHEMA, raw, path);
  } catch (err) {
    const why = err instanceof MonobenchError
      ? err.message
      : `${path} is not valid JSON: ${(err as Error).message}`;
    return { state: "mismatch", reason: why, diffs: [] };
  }
  if (raw.id !== e.case.id || raw.seed !== REFERENCE_SEED) {
    return { state: "mismatch", reason: `${path} holds case ${raw.id} seed ${raw.seed}`, diffs: [] };
  }
  const diffs = diffProvenance(raw.provenance, referenceProvenance(e, opts));
  if (diffs.length === 0) return { state: "done", result: JSON.parse(text, nullAsNaN) as CaseResult };
  const what = diffs[0].field === "configHash"
    ? `checkpoint: sha256 ${diffs[0].stored.slice(0, 12)}… there, ${diffs[0].current.slice(0, 12)}… now`
    : describeProvenanceDiff(diffs[0]);
  return { state: "mismatch", reason: `${path} was measured with another ${what}`, diffs };
}

/**
 * Measure every SAE of the plan (see the module doc); stored results with the same provenance
 * are reused. Returns the raw-neuron results of each layer and one result per SAE.
 */
export async function runReference(
  plan: ReferencePlan,
  opts: ReferenceRunOptions,
): Promise<{ layers: LayerResult[]; cases: CaseResult[] }> {
  const { progress } = opts;
  const states = new Map<string, Stored>();
  const bad: { e: ReferenceEntry; reason: string }[] = [];
  for (const e of plan.entries) {
    const s = await inspect(e, opts);
    states.set(e.case.id, s);
    if (s.state === "mismatch") bad.push({ e, reason: s.reason });
  }
  if (bad.length > 0) {
    if (!opts.retrainMismatched) {
      throw new MonobenchError(
        `cannot reuse ${opts.outDir}: ${bad[0].reason}${
          bad.length > 1 ? ` (and ${bad.length - 1} more)` : ""
        }`,
        "repeat the original setup to resume, choose another --out, or pass --retrain-mismatched to measure " +
          "those SAEs again",
      );
    }
    for (const b of bad) {
      progress?.log(`--retrain-mismatched: measuring ${b.e.case.id} again (${b.reason})`);
      await Deno.remove(join(opts.outDir, caseSeedDir(b.e.case.id, REFERENCE_SEED)), { recursive: true });
      states.set(b.e.case.id, { state: "fresh" });
    }
  }
  const layers: LayerResult[] = [];
  for (const name of [...new Set(plan.entries.map((e) => e.case.layer))]) {
    layers.push(await measureLayer(opts.data.layers.find((l) => l.layer === name)!, opts));
  }
  const results: CaseResult[] = [];
  for (const [i, e] of plan.entries.entries()) {
    const label = `${e.case.id} (${e.relFile})`;
    const s = states.get(e.case.id)!;
    if (s.state === "done") {
      progress?.log(`case ${i + 1}/${plan.entries.length} ${e.case.id}: already measured, reusing it`);
      results.push(s.result);
    } else {
      results.push(await measureEntry(e, i + 1, label, layers, opts));
    }
    await opts.onCase?.(results, layers);
  }
  return { layers, cases: results };
}

async function measureEntry(
  e: ReferenceEntry,
  index: number,
  label: string,
  layers: readonly LayerResult[],
  opts: ReferenceRunOptions,
): Promise<CaseResult> {
  const { backend, data, progress } = opts;
  progress?.beginCase(index, label, 1, "load");
  const sha256 = await fileSha256(e.file);
  if (sha256 !== e.sha256) {
    throw new MonobenchError(
      `${e.file} changed while the run was reading it`,
      "run again once it is complete",
    );
  }
  const sae = await loadDictLearningFile(e.file);
  progress?.step(1);
  const layer = data.layers.find((l) => l.layer === e.case.layer)!;
  const layerResult = layers.find((l) => l.layer === e.case.layer)!;
  const m = await measureSaeOnLayer(backend, sae.params, layer, data, layerResult, progress);
  const result: CaseResult = {
    id: e.case.id,
    seed: REFERENCE_SEED,
    layer: e.case.layer,
    sourceLayer: layer.sourceLayer,
    sae: e.case.sae,
    expansion: e.case.expansion,
    d: layer.d,
    width: sae.width,
    k: sae.k,
    steps: e.steps,
    batchSize: REFERENCE_BATCH_SIZE,
    lr: e.lr,
    backend: backend.name,
    trainSeconds: NaN,
    finalLoss: NaN,
    ms: m.ms,
    fracAboveRaw: m.fracAboveRaw,
    r2: m.rec.r2,
    fve: m.rec.fve,
    l0: m.rec.l0,
    deadCount: m.rec.deadCount,
    deadFraction: m.rec.deadFraction,
    deadTrain: NaN,
    checkpoint: e.relFile,
    provenance: referenceProvenance(e, opts, sha256),
  };
  const dir = join(opts.outDir, caseSeedDir(e.case.id, REFERENCE_SEED));
  try {
    await Deno.mkdir(dir, { recursive: true });
    await atomicWrite(join(dir, "result.json"), jsonText(result));
  } catch (err) {
    throw asIoError(err, `case ${e.case.id}: cannot write in ${dir}`);
  }
  const main = m.ms[0];
  progress?.endCase(
    `R² ${m.rec.r2.toFixed(1)}%, L0 ${m.rec.l0.toFixed(1)}` +
      (main ? `, MS(${main.encoder}) mean ${main.mean.toFixed(3)} max ${main.max.toFixed(3)}` : "") +
      `, dead ${m.rec.deadCount}`,
  );
  return result;
}
