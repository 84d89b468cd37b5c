/**
 * nsfwjs Keras models → cached ONNX files with pooled intermediate outputs, and batched feature
 * extraction with onnxruntime-node.
 *
 * Pipeline: {@link loadNsfwjsModel} (parse the JS-wrapped TF.js model, dequantise weights) →
 * {@link kerasToOnnx} (NCHW ONNX graph, pruned to the requested layers) →
 * {@link exposePooledOutputs} (graph edit: each requested layer becomes a graph output
 * `<layer>/gap` = Flatten(GlobalAveragePool(layer)), shape [N, C]) → written to
 * `<cacheDir>/<model>-<size>-<hash>.onnx`, where the hash covers the package, model, input size,
 * outputs and converter version, so a cached file is reused without loading the TF.js model.
 *
 * onnxruntime-node is imported dynamically, so only code that runs a model needs `--allow-ffi`.
 */
import { join } from "node:path";
import { check, MonobenchError } from "../util/errors.ts";
import { keyHash } from "./hash.ts";
import { kerasToOnnx } from "./keras_onnx.ts";
import { decodeModel, exposePooledOutputs, onnx, pooledName } from "./onnx_build.ts";
import { loadNsfwjsModel, NSFWJS_NATIVE_SIZE, NSFWJS_PACKAGE, type NsfwjsModelName } from "./tfjs_model.ts";

export type { NsfwjsModelName } from "./tfjs_model.ts";
export { NSFWJS_NATIVE_SIZE } from "./tfjs_model.ts";
export { pooledName } from "./onnx_build.ts";

/** Bump when the converter's output changes (invalidates cached .onnx files). */
export const CONVERTER_VERSION = 1;

/** Default cache directory for converted models (gitignored). */
export const DEFAULT_ONNX_CACHE = ".cache/onnx";

/**
 * Named Keras layers of the nsfwjs MobileNetV2 (Keras 2.2.4 `MobileNetV2(alpha=1.0)` backbone
 * with a fine-tuned head). Block outputs ("residual stream" analogues) are the `_add` layers
 * where a block has a skip connection, else the `_project_BN` layer. `out_relu` is the final
 * 1280-channel feature map; `dense_3` the 5-way softmax head.
 */
export const MOBILENET_V2_BLOCK_OUTPUTS: readonly string[] = [
  "expanded_conv_project_BN", // block 0  (16 ch, 1/2)
  "block_1_project_BN", //       block 1  (24 ch, 1/4)
  "block_2_add", //              block 2
  "block_3_project_BN", //       block 3  (32 ch, 1/8)
  "block_4_add",
  "block_5_add",
  "block_6_project_BN", //       block 6  (64 ch, 1/16)
  "block_7_add",
  "block_8_add",
  "block_9_add",
  "block_10_project_BN", //      block 10 (96 ch, 1/16)
  "block_11_add",
  "block_12_add",
  "block_13_project_BN", //      block 13 (160 ch, 1/32)
  "block_14_add",
  "block_15_add",
  "block_16_project_BN", //      block 16 (320 ch, 1/32)
  "out_relu", //                 Conv_1 → BN → ReLU6 (1280 ch)
];

export interface NsfwjsOnnxOptions {
  model: NsfwjsModelName;
  /** Square input size in pixels (default: the model's native size, 224 / 299). */
  inputSize?: number;
  /** Keras layers to expose pooled as `<layer>/gap` [N, C] outputs. */
  pooled?: string[];
  /** Keras layers to expose raw (e.g. the "dense_3" probabilities). */
  raw?: string[];
  /** Cache directory (default `.cache/onnx`). */
  cacheDir?: string;
}

export interface NsfwjsOnnx {
  path: string;
  /** Graph output names, in order: raw layers, then `<layer>/gap` for pooled ones. */
  outputs: string[];
  inputSize: number;
  /** True when the file was converted now (false: taken from the cache). */
  created: boolean;
}

/** Convert (or find in the cache) an nsfwjs model as ONNX with the requested outputs. */
export async function nsfwjsOnnx(opts: NsfwjsOnnxOptions): Promise<NsfwjsOnnx> {
  const inputSize = opts.inputSize ?? NSFWJS_NATIVE_SIZE[opts.model] ?? 224;
  check(Number.isInteger(inputSize) && inputSize >= 32, `nsfwjsOnnx: bad input size ${inputSize}`);
  const pooled = opts.pooled ?? [];
  const raw = opts.raw ?? [];
  check(pooled.length + raw.length > 0, "nsfwjsOnnx: request at least one output");
  const key = {
    converter: CONVERTER_VERSION,
    package: NSFWJS_PACKAGE,
    model: opts.model,
    inputSize,
    pooled,
    raw,
  };
  const cacheDir = opts.cacheDir ?? DEFAULT_ONNX_CACHE;
  const path = join(cacheDir, `${opts.model}-${inputSize}-${keyHash(key)}.onnx`);
  const outputs = [...raw, ...pooled.map(pooledName)];
  try {
    const st = await Deno.stat(path);
    if (st.isFile && st.size > 0) return { path, outputs, inputSize, created: false };
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const model = await loadNsfwjsModel(opts.model);
  const conv = kerasToOnnx(model, {
    inputSize: [inputSize, inputSize],
    outputs: [...new Set([...raw, ...pooled])],
    metadata: { source: `${NSFWJS_PACKAGE}/${opts.model}`, key: JSON.stringify(key) },
  });
  // Graph edit: add the pooled outputs, then keep exactly raw + pooled (in that order).
  const bytes = filterOutputs(exposePooledOutputs(conv.bytes, pooled), outputs);
  await Deno.mkdir(cacheDir, { recursive: true });
  const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  await Deno.writeFile(tmp, bytes);
  await Deno.rename(tmp, path);
  return { path, outputs, inputSize, created: true };
}

/** Keep only the named graph outputs, in the given order. */
export function filterOutputs(bytes: Uint8Array, names: string[]): Uint8Array {
  const m = decodeModel(bytes);
  const g = m.graph!;
  const byName = new Map((g.output ?? []).map((o) => [o.name!, o]));
  g.output = names.map((n) => {
    const o = byName.get(n);
    check(o, `filterOutputs: ${n} is not a graph output`);
    return o;
  });
  return onnx.ModelProto.encode(m).finish();
}

// ---------------------------------------------------------------------------------------------
// onnxruntime-node

type Ort = typeof import("onnxruntime-node");
let ortPromise: Promise<Ort> | null = null;

/** Import onnxruntime-node once (needs --allow-ffi). */
export function loadOrt(): Promise<Ort> {
  ortPromise ??= import("onnxruntime-node").catch((e) => {
    ortPromise = null;
    const msg = (e as Error).message ?? String(e);
    throw new MonobenchError(
      `cannot load onnxruntime-node: ${msg}`,
      /ffi|NotCapable|PermissionDenied/i.test(msg) ? "run deno with --allow-ffi (or -A)" : undefined,
    );
  });
  return ortPromise;
}

export interface OnnxSessionOptions {
  /** Intra-op threads (default: onnxruntime's choice, one per physical core). */
  threads?: number;
}

/** An onnxruntime-node session for a model with one float input. */
export class OnnxRunner {
  private constructor(
    // deno-lint-ignore no-explicit-any
    private readonly session: any,
    private readonly ort: Ort,
    readonly inputName: string,
    readonly outputNames: readonly string[],
  ) {}

  /** Load a model from a file path or bytes. */
  static async create(model: string | Uint8Array, opts: OnnxSessionOptions = {}): Promise<OnnxRunner> {
    const ort = await loadOrt();
    const so: Record<string, unknown> = { graphOptimizationLevel: "all", executionMode: "sequential" };
    if (opts.threads !== undefined) {
      so.intraOpNumThreads = opts.threads;
      so.interOpNumThreads = 1;
    }
    let session;
    try {
      // (two calls: InferenceSession.create is overloaded on the argument type)
      session = typeof model === "string"
        ? await ort.InferenceSession.create(model, so)
        : await ort.InferenceSession.create(model, so);
    } catch (e) {
      throw new MonobenchError(
        `onnxruntime could not load ${typeof model === "string" ? model : "the model"}: ${e}`,
      );
    }
    check(session.inputNames.length === 1, "OnnxRunner: the model must have exactly one input");
    return new OnnxRunner(session, ort, session.inputNames[0], session.outputNames);
  }

  /** Run one batch; returns the requested outputs (default all) as {data, dims}. */
  async run(
    input: Float32Array,
    dims: number[],
    outputs: readonly string[] = this.outputNames,
  ): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
    check(
      input.length === dims.reduce((a, b) => a * b, 1),
      `OnnxRunner.run: ${input.length} values for dims [${dims}]`,
    );
    const feeds = { [this.inputName]: new this.ort.Tensor("float32", input, dims) };
    let res;
    try {
      res = await this.session.run(feeds, [...outputs]);
    } catch (e) {
      throw new MonobenchError(`onnxruntime run failed: ${e}`);
    }
    const out: Record<string, { data: Float32Array; dims: number[] }> = {};
    for (const name of outputs) {
      const t = res[name];
      out[name] = { data: t.data as Float32Array, dims: [...t.dims] };
    }
    return out;
  }

  /** Release the native session. */
  async release(): Promise<void> {
    await this.session.release();
  }
}

export interface BatchRunOptions {
  batchSize?: number;
  /** Called after each batch with (images done, total). */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Run `n` inputs through `runner` in batches. `fill(start, count, dst)` writes inputs
 * [start, start + count) into `dst` (length count · perItem, the model's input layout); the
 * result maps each output (every one must be [batch, C]) to an [n, C] Float32Array.
 */
export async function runBatched(
  runner: OnnxRunner,
  n: number,
  itemDims: number[],
  fill: (start: number, count: number, dst: Float32Array) => void,
  outputs: readonly string[] = runner.outputNames,
  opts: BatchRunOptions = {},
): Promise<Map<string, { data: Float32Array; width: number }>> {
  const bs = opts.batchSize ?? 32;
  check(Number.isInteger(bs) && bs >= 1, `runBatched: bad batch size ${bs}`);
  const per = itemDims.reduce((a, b) => a * b, 1);
  const result = new Map<string, { data: Float32Array; width: number }>();
  const buf = new Float32Array(bs * per);
  for (let start = 0; start < n; start += bs) {
    const count = Math.min(bs, n - start);
    const x = count === bs ? buf : buf.subarray(0, count * per);
    fill(start, count, x);
    const res = await runner.run(x, [count, ...itemDims], outputs);
    for (const name of outputs) {
      const { data, dims } = res[name];
      if (dims.length !== 2 || dims[0] !== count) {
        throw new MonobenchError(`runBatched: output ${name} has dims [${dims}], expected [${count}, C]`);
      }
      let r = result.get(name);
      if (!r) {
        r = { data: new Float32Array(n * dims[1]), width: dims[1] };
        result.set(name, r);
      }
      r.data.set(data, start * r.width);
    }
    opts.onProgress?.(start + count, n);
  }
  return result;
}
