/**
 * End-to-end check of the Keras → ONNX conversion against TF.js itself (the CPU backend of
 * @tensorflow/tfjs 4.22.0, nsfwjs's peer dependency): the nsfwjs library's own classification
 * path, and the intermediate layers used by the embedded dataset at its input sizes.
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as tf from "@tensorflow/tfjs";
import { load as loadNsfwjs } from "nsfwjs-models/core";
import { MobileNetV2Model } from "nsfwjs-models/models/mobilenet_v2";
import { InceptionV3Model } from "nsfwjs-models/models/inception_v3";
import { Rng } from "../src/util/rng.ts";
import { nsfwjsOnnx, OnnxRunner, pooledName } from "../src/data/onnx.ts";
import { nsfwjsPreprocess, type RgbImage } from "../src/data/images.ts";
import { EMBEDDED_DEFAULTS, EMBEDDED_LAYERS, INCEPTION_LAYER } from "../src/data/embedded.ts";

await tf.setBackend("cpu");

type Def = typeof MobileNetV2Model;

/** A TF.js LayersModel of an nsfwjs model with a new input size, truncated to `outputs`. */
async function tfjsModel(def: Def, size: number, outputs: string[]): Promise<tf.LayersModel> {
  // deno-lint-ignore no-explicit-any
  const json: any = structuredClone((await def.modelJson()).default);
  const bytes = (await Promise.all(def.weightBundles.map((b) => b()))).map((m) =>
    Buffer.from(m.default, "base64")
  );
  const weightData = new Uint8Array(Buffer.concat(bytes)).buffer;
  const cfg = json.modelTopology.model_config.config;
  // deno-lint-ignore no-explicit-any
  const byName = new Map<string, any>(cfg.layers.map((l: any) => [l.name, l]));
  const keep = new Set<string>();
  const stack = [...outputs];
  while (stack.length) {
    const n = stack.pop()!;
    if (keep.has(n)) continue;
    keep.add(n);
    for (const node of byName.get(n).inbound_nodes) for (const [src] of node) stack.push(src);
  }
  // deno-lint-ignore no-explicit-any
  cfg.layers = cfg.layers.filter((l: any) => keep.has(l.name));
  cfg.layers[0].config.batch_input_shape = [null, size, size, 3];
  cfg.output_layers = outputs.map((o) => [o, 0, 0]);
  // deno-lint-ignore no-explicit-any
  const weightSpecs = json.weightsManifest.flatMap((g: any) => g.weights);
  return await tf.loadLayersModel(
    tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs, weightData }),
    {
      strict: false,
    },
  );
}

function randomInput(n: number, size: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * size * size * 3 }, () => rng.next());
}

function assertClose(got: Float32Array, want: Float32Array, rel: number, what: string) {
  deepStrictEqual(got.length, want.length, `${what}: length`);
  let maxRef = 0, maxDiff = 0;
  for (let i = 0; i < want.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(want[i]));
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
  }
  ok(maxDiff <= rel * Math.max(1, maxRef), `${what}: max abs diff ${maxDiff} (max |ref| ${maxRef})`);
}

/** Compare ONNX pooled outputs with TF.js (spatial means of the same layers). */
async function compareLayers(
  def: Def,
  model: "mobilenet_v2" | "inception_v3",
  size: number,
  layers: string[],
  n: number,
) {
  const cacheDir = await Deno.makeTempDir({ prefix: "monobench-tfjs-" });
  try {
    const x = randomInput(n, size, size);
    const m = await tfjsModel(def, size, layers);
    const outs = tf.tidy(() => {
      const y = m.predict(tf.tensor4d(x, [n, size, size, 3]));
      return (Array.isArray(y) ? y : [y]).map((t) => t.mean([1, 2]).dataSync() as Float32Array);
    });
    m.dispose();
    const conv = await nsfwjsOnnx({ model, inputSize: size, pooled: layers, cacheDir });
    const r = await OnnxRunner.create(conv.path, { threads: 1 });
    try {
      const got = await r.run(x, [n, size, size, 3]);
      layers.forEach((l, i) => assertClose(got[pooledName(l)].data, outs[i], 1e-4, `${model}@${size} ${l}`));
    } finally {
      await r.release();
    }
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
}

Deno.test("tfjs: nsfwjs MobileNetV2 classification == preprocessing + converted ONNX (probabilities)", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "monobench-tfjs-" });
  try {
    const nsfw = await loadNsfwjs("MobileNetV2", { modelDefinitions: [MobileNetV2Model] });
    const conv = await nsfwjsOnnx({ model: "mobilenet_v2", raw: ["dense_3"], cacheDir });
    const r = await OnnxRunner.create(conv.path, { threads: 1 });
    try {
      const rng = new Rng(8);
      for (const [w, h] of [[37, 53], [300, 200]]) {
        const img: RgbImage = {
          width: w,
          height: h,
          data: Uint8Array.from({ length: w * h * 3 }, () => rng.int(256)),
        };
        // nsfwjs: int pixels → /255 → resizeBilinear(alignCorners) to 224 → model.
        const want = tf.tidy(() => {
          const t = tf.tensor3d(img.data, [h, w, 3], "int32");
          return nsfw.infer(t).dataSync() as Float32Array;
        });
        const got = await r.run(nsfwjsPreprocess(img, 224), [1, 224, 224, 3]);
        assertClose(got.dense_3.data, want, 2e-5, `probabilities ${w}×${h}`);
      }
    } finally {
      await r.release();
      nsfw.dispose();
    }
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("tfjs: nsfwjs preprocessing == tf.image.resizeBilinear(alignCorners) of pixels / 255", () => {
  const rng = new Rng(9);
  const img: RgbImage = {
    width: 29,
    height: 17,
    data: Uint8Array.from({ length: 29 * 17 * 3 }, () => rng.int(256)),
  };
  const want = tf.tidy(() => {
    const x = tf.tensor3d(img.data, [17, 29, 3], "int32").toFloat().div<tf.Tensor3D>(255);
    return tf.image.resizeBilinear(x, [40, 40], true).dataSync() as Float32Array;
  });
  assertClose(nsfwjsPreprocess(img, 40), want, 1e-6, "resize");
});

Deno.test("tfjs: MobileNetV2 layers of the embedded dataset at its input size match TF.js", async () => {
  await compareLayers(
    MobileNetV2Model,
    "mobilenet_v2",
    EMBEDDED_DEFAULTS.mobilenetSize,
    EMBEDDED_LAYERS.map((l) => l.keras),
    2,
  );
});

Deno.test("tfjs: InceptionV3 similarity layer (and mixed5) at the embedded input size match TF.js", async () => {
  await compareLayers(InceptionV3Model, "inception_v3", EMBEDDED_DEFAULTS.inceptionSize, [
    "mixed5",
    INCEPTION_LAYER,
  ], 1);
});
