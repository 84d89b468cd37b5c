/**
 * Data-area speed: ONNX Runtime throughput of the converted nsfwjs models at the embedded
 * dataset's input sizes, preprocessing, and activation-store I/O.
 *   deno bench -A bench/data_bench.ts
 */
import { join } from "node:path";
import { Rng } from "../src/util/rng.ts";
import { EMBEDDED_DEFAULTS, EMBEDDED_LAYERS, INCEPTION_LAYER } from "../src/data/embedded.ts";
import { clipPreprocess, nsfwjsPreprocess, type RgbImage } from "../src/data/images.ts";
import { DEFAULT_ONNX_CACHE, nsfwjsOnnx, OnnxRunner } from "../src/data/onnx.ts";
import { ActivationStore, writeStore } from "../src/data/store.ts";

const rng = new Rng(1);
const mS = EMBEDDED_DEFAULTS.mobilenetSize, iS = EMBEDDED_DEFAULTS.inceptionSize;
const mnv2 = await nsfwjsOnnx({
  model: "mobilenet_v2",
  inputSize: mS,
  pooled: EMBEDDED_LAYERS.map((l) => l.keras),
  cacheDir: DEFAULT_ONNX_CACHE,
});
const inc = await nsfwjsOnnx({
  model: "inception_v3",
  inputSize: iS,
  pooled: [INCEPTION_LAYER],
  cacheDir: DEFAULT_ONNX_CACHE,
});
const mRunner = await OnnxRunner.create(mnv2.path);
const iRunner = await OnnxRunner.create(inc.path);
const xm = Float32Array.from({ length: 32 * mS * mS * 3 }, () => rng.next());
const xi = Float32Array.from({ length: 8 * iS * iS * 3 }, () => rng.next());

Deno.bench(`MobileNetV2 @${mS}px, batch 32, 5 pooled outputs (ORT)`, { group: "onnx" }, async () => {
  await mRunner.run(xm, [32, mS, mS, 3]);
});

Deno.bench(`InceptionV3 @${iS}px, batch 8, mixed10 pooled (ORT)`, { group: "onnx" }, async () => {
  await iRunner.run(xi, [8, iS, iS, 3]);
});

const photo: RgbImage = {
  width: 640,
  height: 480,
  data: Uint8Array.from({ length: 640 * 480 * 3 }, () => rng.int(256)),
};

Deno.bench("CLIP preprocess 640×480 → 224 (PIL bicubic + crop + normalise)", { group: "pre" }, () => {
  clipPreprocess(photo, 224);
});

Deno.bench("nsfwjs preprocess 640×480 → 224 (bilinear, aligned corners)", { group: "pre" }, () => {
  nsfwjsPreprocess(photo, 224);
});

const dir = await Deno.makeTempDir({ prefix: "monobench-bench-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const acts = Float32Array.from({ length: 2000 * 1280 }, () => rng.normal());
await writeStore(join(dir, "s"), acts, 2000, 1280);

Deno.bench("store: write 2000×1280 f32 (10 MB)", { group: "store" }, async () => {
  await writeStore(join(dir, "w"), acts, 2000, 1280);
});

Deno.bench("store: write 2000×1280 f16", { group: "store" }, async () => {
  await writeStore(join(dir, "h"), acts, 2000, 1280, { dtype: "f16" });
});

Deno.bench("store: open + all() 2000×1280 f32", { group: "store" }, async () => {
  (await ActivationStore.open(join(dir, "s"))).all();
});

Deno.bench("store: verify (sha256) 2000×1280 f32", { group: "store" }, async () => {
  await (await ActivationStore.open(join(dir, "s"), { preload: false })).verify();
});
