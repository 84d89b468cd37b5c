/**
 * A small synthetic data manifest for tests and demos of the pipeline: one paper layer whose
 * activations are class prototypes plus noise, and a one-hot label similarity source, written as
 * activation stores with a manifest (src/run/data.ts). Runs on it take a fraction of a second per
 * case on the CPU backend.
 */
import { join } from "node:path";
import { writeStore } from "../data/store.ts";
import type { PaperLayer } from "../types.ts";
import { Rng } from "../util/rng.ts";

export interface SyntheticManifestOptions {
  layer?: PaperLayer;
  d?: number;
  nTrain?: number;
  nEval?: number;
  classes?: number;
  seed?: number;
  /** Scale of the per-sample noise (default 1: classes overlap, so that no latent is exactly class-pure). */
  noise?: number;
}

/** Write stores and `manifest.json` under `dir`; returns the manifest path. */
export async function writeSyntheticManifest(dir: string, o: SyntheticManifestOptions = {}): Promise<string> {
  const layer = o.layer ?? "last", d = o.d ?? 32, nTrain = o.nTrain ?? 256, nEval = o.nEval ?? 64;
  const classes = o.classes ?? 4, noise = o.noise ?? 1;
  const rng = new Rng(o.seed ?? 1);
  const protos = rng.normals(classes * d);
  const sample = (n: number) => {
    const x = new Float32Array(n * d), labels = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const c = i % classes;
      labels[i] = c;
      for (let j = 0; j < d; j++) x[i * d + j] = protos[c * d + j] + noise * rng.normal();
    }
    return { x, labels };
  };
  const train = sample(nTrain), ev = sample(nEval);
  const onehot = new Float32Array(nEval * classes);
  ev.labels.forEach((c, i) => (onehot[i * classes + c] = 1));
  await writeStore(join(dir, "train"), train.x, nTrain, d);
  await writeStore(join(dir, "eval"), ev.x, nEval, d);
  await writeStore(join(dir, "labels"), onehot, nEval, classes);
  const manifest = join(dir, "manifest.json");
  await Deno.writeTextFile(
    manifest,
    JSON.stringify(
      {
        description: `synthetic: ${classes} class prototypes + noise, d=${d}`,
        layers: [{ layer, sourceLayer: "synthetic", train: "train", eval: "eval" }],
        similarity: [{ name: "labels", eval: "labels" }],
      },
      null,
      2,
    ) + "\n",
  );
  return manifest;
}
