/**
 * Reading TF.js "layers" models (Keras topology JSON + binary weight shards), in particular the
 * JS-wrapped ones that ship in `nsfwjs@4.4.0` (`dist/models/<name>/model.min.js` exports the
 * model JSON, each `group1-shardKofN.min.js` exports its weight shard as a base64 string).
 */
import { Buffer } from "node:buffer";
import { check, MonobenchError } from "../util/errors.ts";
import { f16ToF32Array } from "./f16.ts";

/** One Keras layer of a functional model (single inbound node). */
export interface KerasLayer {
  name: string;
  className: string;
  config: Record<string, unknown>;
  /** Names of the layers feeding this one (in order). */
  inbound: string[];
}

export interface WeightTensor {
  shape: number[];
  data: Float32Array;
}

/** A parsed TF.js layers model with its weights decoded to float32. */
export interface TfjsLayersModel {
  name: string;
  layers: KerasLayer[];
  inputLayers: string[];
  outputLayers: string[];
  /** The InputLayer's batch_input_shape, e.g. [null, 224, 224, 3]. */
  inputShape: (number | null)[];
  weights: Map<string, WeightTensor>;
}

interface ManifestEntry {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; min?: number; scale?: number };
}

interface ManifestGroup {
  paths: string[];
  weights: ManifestEntry[];
}

const VALUE_BYTES: Record<string, number> = {
  float32: 4,
  int32: 4,
  float16: 2,
  uint16: 2,
  uint8: 1,
  bool: 1,
};

/**
 * Decode the weights of a TF.js weights manifest from the concatenated bytes of all its shards
 * (in manifest order). Handles float32/int32 and the uint8/uint16 (affine: q·scale + min) and
 * float16 quantisations of the TF.js converter, exactly as tfjs-core's `decodeWeights`.
 */
export function decodeWeights(manifest: ManifestGroup[], bytes: Uint8Array): Map<string, WeightTensor> {
  const out = new Map<string, WeightTensor>();
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = 0;
  for (const group of manifest) {
    for (const w of group.weights) {
      const size = w.shape.reduce((a, b) => a * b, 1);
      const q = w.quantization;
      const stored = q ? q.dtype : w.dtype;
      const bpe = VALUE_BYTES[stored];
      if (bpe === undefined || (w.dtype !== "float32" && w.dtype !== "int32")) {
        throw new MonobenchError(`weight ${w.name}: unsupported dtype ${w.dtype}/${stored}`);
      }
      const end = off + size * bpe;
      if (end > bytes.byteLength) {
        throw new MonobenchError(
          `weight ${w.name}: weight data too short (${bytes.byteLength} bytes, need ${end})`,
        );
      }
      const data = new Float32Array(size);
      if (q && (q.dtype === "uint8" || q.dtype === "uint16")) {
        check(
          typeof q.min === "number" && typeof q.scale === "number",
          `weight ${w.name}: ${q.dtype} quantisation without min/scale`,
        );
        for (let i = 0; i < size; i++) {
          const v = q.dtype === "uint8" ? bytes[off + i] : dv.getUint16(off + 2 * i, true);
          data[i] = v * q.scale! + q.min!;
        }
      } else if (stored === "float16") {
        const h = new Uint16Array(size);
        for (let i = 0; i < size; i++) h[i] = dv.getUint16(off + 2 * i, true);
        f16ToF32Array(h, data);
      } else if (stored === "float32") {
        for (let i = 0; i < size; i++) data[i] = dv.getFloat32(off + 4 * i, true);
      } else if (stored === "int32") {
        for (let i = 0; i < size; i++) data[i] = dv.getInt32(off + 4 * i, true);
      } else {
        throw new MonobenchError(`weight ${w.name}: unsupported quantisation ${stored}`);
      }
      out.set(w.name, { shape: [...w.shape], data });
      off = end;
    }
  }
  if (off !== bytes.byteLength) {
    throw new MonobenchError(
      `weight data has ${bytes.byteLength} bytes but the manifest describes ${off}`,
    );
  }
  return out;
}

/**
 * Parse a TF.js layers-model JSON (`{modelTopology, weightsManifest}`) plus its weight shards
 * (raw bytes, one per manifest path, in manifest order).
 */
export function parseTfjsLayersModel(modelJson: unknown, shards: Uint8Array[]): TfjsLayersModel {
  const mj = modelJson as Record<string, unknown>;
  check(mj !== null && typeof mj === "object", "TF.js model JSON is not an object");
  if (mj.format === "graph-model") {
    throw new MonobenchError("TF.js graph models are not supported (only Keras layers models)");
  }
  const topo = mj.modelTopology as Record<string, unknown> | undefined;
  const mc = (topo?.model_config ?? topo) as Record<string, unknown> | undefined;
  check(
    mc && (mc.class_name === "Model" || mc.class_name === "Functional"),
    `TF.js model: expected a functional Keras model, got ${JSON.stringify(mc?.class_name)}`,
  );
  const cfg = mc.config as Record<string, unknown>;
  const rawLayers = cfg.layers as Record<string, unknown>[];
  check(Array.isArray(rawLayers), "TF.js model: no layers");
  const layers: KerasLayer[] = rawLayers.map((l) => {
    const nodes = (l.inbound_nodes ?? []) as unknown[][];
    if (nodes.length > 1) {
      throw new MonobenchError(`layer ${l.name}: shared layers (several inbound nodes) are not supported`);
    }
    const inbound = nodes.length === 0 ? [] : (nodes[0] as unknown[][]).map((x) => {
      check(
        Array.isArray(x) && typeof x[0] === "string" && x[1] === 0 && x[2] === 0,
        `layer ${l.name}: unsupported inbound node ${JSON.stringify(x)}`,
      );
      return x[0] as string;
    });
    return {
      name: l.name as string,
      className: l.class_name as string,
      config: (l.config ?? {}) as Record<string, unknown>,
      inbound,
    };
  });
  const ioNames = (v: unknown) => (v as unknown[][]).map((x) => x[0] as string);
  const inputLayers = ioNames(cfg.input_layers);
  const outputLayers = ioNames(cfg.output_layers);
  check(inputLayers.length === 1, "TF.js model: exactly one input layer is supported");
  const inputLayer = layers.find((l) => l.name === inputLayers[0]);
  check(inputLayer, `TF.js model: input layer ${inputLayers[0]} not found`);
  const inputShape = inputLayer.config.batch_input_shape as (number | null)[];
  const manifest = mj.weightsManifest as ManifestGroup[];
  check(Array.isArray(manifest), "TF.js model: weightsManifest missing");
  const nPaths = manifest.reduce((a, g) => a + g.paths.length, 0);
  check(
    shards.length === nPaths,
    `TF.js model: ${shards.length} weight shards given, manifest lists ${nPaths}`,
  );
  const total = shards.reduce((a, s) => a + s.byteLength, 0);
  const bytes = new Uint8Array(total);
  let off = 0;
  for (const s of shards) {
    bytes.set(s, off);
    off += s.byteLength;
  }
  return {
    name: String(cfg.name ?? "model"),
    layers,
    inputLayers,
    outputLayers,
    inputShape,
    weights: decodeWeights(manifest, bytes),
  };
}

/** Models shipped in nsfwjs@4.4.0 that are Keras layers models (MobileNetV2-mid is a graph model). */
export type NsfwjsModelName = "mobilenet_v2" | "inception_v3";

export const NSFWJS_PACKAGE = "nsfwjs@4.4.0";

/** Native input size of each nsfwjs model (what nsfwjs resizes images to). */
export const NSFWJS_NATIVE_SIZE: Record<NsfwjsModelName, number> = { mobilenet_v2: 224, inception_v3: 299 };

interface ModelDefinitionLike {
  modelJson: () => Promise<{ default: unknown }>;
  weightBundles: Array<() => Promise<{ default: string }>>;
}

async function nsfwjsDefinition(name: NsfwjsModelName): Promise<ModelDefinitionLike> {
  switch (name) {
    case "mobilenet_v2":
      return (await import("nsfwjs-models/models/mobilenet_v2")).MobileNetV2Model as ModelDefinitionLike;
    case "inception_v3":
      return (await import("nsfwjs-models/models/inception_v3")).InceptionV3Model as ModelDefinitionLike;
    default:
      throw new MonobenchError(
        `unknown nsfwjs model ${JSON.stringify(name)}`,
        "use mobilenet_v2 or inception_v3",
      );
  }
}

/** Load one of the Keras models bundled in nsfwjs@4.4.0 (topology + dequantised weights). */
export async function loadNsfwjsModel(name: NsfwjsModelName): Promise<TfjsLayersModel> {
  const def = await nsfwjsDefinition(name);
  const json = (await def.modelJson()).default;
  const shards: Uint8Array[] = [];
  for (const bundle of def.weightBundles) {
    const b64 = (await bundle()).default;
    check(typeof b64 === "string", `nsfwjs ${name}: weight bundle is not a base64 string`);
    const buf = Buffer.from(b64, "base64");
    shards.push(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength));
  }
  const model = parseTfjsLayersModel(json, shards);
  model.name = name;
  return model;
}
