/**
 * Keras → ONNX conversion checked op by op against direct TS implementations of the TF/Keras
 * semantics (NHWC), run with onnxruntime-node (needs --allow-ffi); plus the converted nsfwjs
 * MobileNetV2 on a few images.
 */
import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";
import { kerasToOnnx, tfPadding } from "../src/data/keras_onnx.ts";
import { exposePooledOutputs } from "../src/data/onnx_build.ts";
import {
  filterOutputs,
  MOBILENET_V2_BLOCK_OUTPUTS,
  nsfwjsOnnx,
  OnnxRunner,
  runBatched,
} from "../src/data/onnx.ts";
import type { KerasLayer, TfjsLayersModel, WeightTensor } from "../src/data/tfjs_model.ts";
import { loadMnist } from "../src/data/embedded.ts";
import { resizeBilinearAlignCorners } from "../src/data/images.ts";

// ---------------------------------------------------------------------------------------------
// Reference implementations (NHWC, one image, TF semantics), written independently of the
// converter.

interface T3 {
  h: number;
  w: number;
  c: number;
  data: Float64Array;
}

const at = (t: T3, y: number, x: number, c: number) => t.data[(y * t.w + x) * t.c + c];

function samePads(inSize: number, k: number, s: number, d: number): [number, number, number] {
  const out = Math.ceil(inSize / s);
  const need = Math.max(0, (out - 1) * s + (k - 1) * d + 1 - inSize);
  return [out, Math.floor(need / 2), need - Math.floor(need / 2)];
}

function geometry(t: T3, kh: number, kw: number, s: number, d: number, padding: string) {
  if (padding === "same") {
    const [oh, top] = samePads(t.h, kh, s, d);
    const [ow, left] = samePads(t.w, kw, s, d);
    return { oh, ow, top, left };
  }
  return {
    oh: Math.floor((t.h - (kh - 1) * d - 1) / s) + 1,
    ow: Math.floor((t.w - (kw - 1) * d - 1) / s) + 1,
    top: 0,
    left: 0,
  };
}

function refConv(
  t: T3,
  k: WeightTensor,
  bias: Float32Array | null,
  s: number,
  d: number,
  padding: string,
  depthwise = false,
): T3 {
  const [kh, kw, ci, last] = k.shape;
  const co = depthwise ? ci * last : last;
  const { oh, ow, top, left } = geometry(t, kh, kw, s, d, padding);
  const out = new Float64Array(oh * ow * co);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      for (let o = 0; o < co; o++) {
        let acc = bias ? bias[o] : 0;
        for (let i = 0; i < kh; i++) {
          for (let j = 0; j < kw; j++) {
            const yy = y * s + i * d - top, xx = x * s + j * d - left;
            if (yy < 0 || yy >= t.h || xx < 0 || xx >= t.w) continue;
            if (depthwise) {
              const c = Math.floor(o / last), m = o % last;
              acc += at(t, yy, xx, c) * k.data[((i * kw + j) * ci + c) * last + m];
            } else {
              for (let c = 0; c < ci; c++) acc += at(t, yy, xx, c) * k.data[((i * kw + j) * ci + c) * co + o];
            }
          }
        }
        out[(y * ow + x) * co + o] = acc;
      }
    }
  }
  return { h: oh, w: ow, c: co, data: out };
}

function refPool(t: T3, k: number, s: number, padding: string, kind: "max" | "avg"): T3 {
  const { oh, ow, top, left } = geometry(t, k, k, s, 1, padding);
  const out = new Float64Array(oh * ow * t.c);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      for (let c = 0; c < t.c; c++) {
        let acc = kind === "max" ? -Infinity : 0, cnt = 0;
        for (let i = 0; i < k; i++) {
          for (let j = 0; j < k; j++) {
            const yy = y * s + i - top, xx = x * s + j - left;
            if (yy < 0 || yy >= t.h || xx < 0 || xx >= t.w) continue; // TF ignores padding
            const v = at(t, yy, xx, c);
            acc = kind === "max" ? Math.max(acc, v) : acc + v;
            cnt++;
          }
        }
        out[(y * ow + x) * t.c + c] = kind === "max" ? acc : acc / cnt;
      }
    }
  }
  return { h: oh, w: ow, c: t.c, data: out };
}

const mapT = (t: T3, f: (v: number, c: number) => number): T3 => ({
  ...t,
  data: t.data.map((v, i) => f(v, i % t.c)),
});

function refPad(t: T3, top: number, bottom: number, left: number, right: number): T3 {
  const h = t.h + top + bottom, w = t.w + left + right;
  const out = new Float64Array(h * w * t.c);
  for (let y = 0; y < t.h; y++) {
    for (let x = 0; x < t.w; x++) {
      for (let c = 0; c < t.c; c++) out[((y + top) * w + x + left) * t.c + c] = at(t, y, x, c);
    }
  }
  return { h, w, c: t.c, data: out };
}

function refConcat(a: T3, b: T3): T3 {
  const c = a.c + b.c;
  const out = new Float64Array(a.h * a.w * c);
  for (let p = 0; p < a.h * a.w; p++) {
    for (let i = 0; i < a.c; i++) out[p * c + i] = a.data[p * a.c + i];
    for (let i = 0; i < b.c; i++) out[p * c + a.c + i] = b.data[p * b.c + i];
  }
  return { h: a.h, w: a.w, c, data: out };
}

const gap = (t: T3) =>
  Array.from({ length: t.c }, (_, c) => {
    let s = 0;
    for (let p = 0; p < t.h * t.w; p++) s += t.data[p * t.c + c];
    return s / (t.h * t.w);
  });

// ---------------------------------------------------------------------------------------------
// Tiny Keras models

class ModelBuilder {
  layers: KerasLayer[] = [];
  weights = new Map<string, WeightTensor>();
  rng = new Rng(11);
  constructor(readonly h: number, readonly w: number, readonly c: number) {
    this.layers.push({ name: "input_1", className: "InputLayer", config: {}, inbound: [] });
  }
  add(name: string, className: string, config: Record<string, unknown>, inbound: string[]): string {
    this.layers.push({ name, className, config, inbound });
    return name;
  }
  weight(name: string, shape: number[], scale = 0.5, offset = 0): WeightTensor {
    const size = shape.reduce((a, b) => a * b, 1);
    const w = { shape, data: Float32Array.from({ length: size }, () => offset + scale * this.rng.normal()) };
    this.weights.set(name, w);
    return w;
  }
  model(outputs: string[]): TfjsLayersModel {
    return {
      name: "tiny",
      layers: this.layers,
      inputLayers: ["input_1"],
      outputLayers: outputs,
      inputShape: [null, this.h, this.w, this.c],
      weights: this.weights,
    };
  }
  input(seed: number): T3 {
    const rng = new Rng(seed);
    return {
      h: this.h,
      w: this.w,
      c: this.c,
      data: Float64Array.from({ length: this.h * this.w * this.c }, () => rng.normal()),
    };
  }
}

/** Run the converted model on one NHWC image; return outputs as NHWC T3 (or vectors). */
async function runOnnx(
  bytes: Uint8Array,
  x: T3,
): Promise<Record<string, { dims: number[]; data: Float32Array }>> {
  const r = await OnnxRunner.create(bytes, { threads: 1 });
  try {
    return await r.run(Float32Array.from(x.data), [1, x.h, x.w, x.c]);
  } finally {
    await r.release();
  }
}

function assertNchwClose(got: { dims: number[]; data: Float32Array }, want: T3, tol: number, what: string) {
  deepStrictEqual(got.dims, [1, want.c, want.h, want.w], `${what}: dims`);
  let max = 0;
  for (let c = 0; c < want.c; c++) {
    for (let y = 0; y < want.h; y++) {
      for (let x = 0; x < want.w; x++) {
        max = Math.max(max, Math.abs(got.data[(c * want.h + y) * want.w + x] - at(want, y, x, c)));
      }
    }
  }
  ok(max <= tol, `${what}: max abs diff ${max}`);
}

function assertVecClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) {
  equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

Deno.test("onnx: TF 'same' padding is asymmetric (extra at the end)", () => {
  deepStrictEqual(tfPadding(8, 3, 2, 1, "same"), { out: 4, before: 0, after: 1 });
  deepStrictEqual(tfPadding(7, 3, 2, 1, "same"), { out: 4, before: 1, after: 1 });
  deepStrictEqual(tfPadding(5, 4, 1, 1, "same"), { out: 5, before: 1, after: 2 });
  deepStrictEqual(tfPadding(5, 2, 1, 1, "same"), { out: 5, before: 0, after: 1 });
  deepStrictEqual(tfPadding(9, 3, 1, 2, "same"), { out: 9, before: 2, after: 2 });
  deepStrictEqual(tfPadding(4, 1, 2, 1, "same"), { out: 2, before: 0, after: 0 });
  deepStrictEqual(tfPadding(9, 3, 2, 1, "valid"), { out: 4, before: 0, after: 0 });
  throws(() => tfPadding(2, 3, 1, 1, "valid"), MonobenchError);
  throws(() => tfPadding(5, 3, 1, 1, "causal"), /unsupported padding/);
});

Deno.test("onnx: Conv2D (same/valid, strides, dilation, even kernels, bias, activations) vs TS", async () => {
  const b = new ModelBuilder(8, 7, 3);
  const cases: {
    name: string;
    k: [number, number];
    s: number;
    d: number;
    pad: string;
    act: string;
    co: number;
  }[] = [
    { name: "c1", k: [3, 3], s: 2, d: 1, pad: "same", act: "relu", co: 4 },
    { name: "c2", k: [2, 2], s: 1, d: 1, pad: "same", act: "linear", co: 2 },
    { name: "c3", k: [3, 3], s: 1, d: 2, pad: "same", act: "relu6", co: 3 },
    { name: "c4", k: [3, 3], s: 2, d: 1, pad: "valid", act: "sigmoid", co: 2 },
    { name: "c5", k: [1, 3], s: 1, d: 1, pad: "same", act: "tanh", co: 2 },
    { name: "c6", k: [4, 4], s: 3, d: 1, pad: "same", act: "linear", co: 2 },
  ];
  const want: Record<string, T3> = {};
  const x = b.input(1);
  for (const c of cases) {
    const k = b.weight(`${c.name}/kernel`, [c.k[0], c.k[1], 3, c.co]);
    const bias = b.weight(`${c.name}/bias`, [c.co]);
    b.add(c.name, "Conv2D", {
      filters: c.co,
      kernel_size: c.k,
      strides: [c.s, c.s],
      dilation_rate: [c.d, c.d],
      padding: c.pad,
      activation: c.act,
      use_bias: true,
      data_format: "channels_last",
    }, ["input_1"]);
    const f = {
      relu: (v: number) => Math.max(v, 0),
      relu6: (v: number) => Math.min(Math.max(v, 0), 6),
      sigmoid: (v: number) => 1 / (1 + Math.exp(-v)),
      tanh: Math.tanh,
      linear: (v: number) => v,
    }[
      c.act
    ]!;
    want[c.name] = mapT(refConv(x, k, bias.data, c.s, c.d, c.pad), f);
  }
  const names = cases.map((c) => c.name);
  const got = await runOnnx(kerasToOnnx(b.model(names)).bytes, x);
  for (const n of names) assertNchwClose(got[n], want[n], 1e-5, n);
});

Deno.test("onnx: depthwise, BN, ReLU6, padding, pooling, Add, Concatenate, GAP, Flatten, Dense vs TS", async () => {
  const b = new ModelBuilder(9, 8, 3);
  const x = b.input(2);
  // Depthwise 3×3 stride 2 'same', depth multiplier 2 (even width → asymmetric padding).
  const dk = b.weight("dw/depthwise_kernel", [3, 3, 3, 2]);
  b.add("dw", "DepthwiseConv2D", {
    kernel_size: [3, 3],
    strides: [2, 2],
    padding: "same",
    depth_multiplier: 2,
    use_bias: false,
    activation: "linear",
  }, ["input_1"]);
  const dw = refConv(x, dk, null, 2, 1, "same", true);
  // BatchNormalization with scale=false (no gamma), like InceptionV3.
  const mean = b.weight("bn/moving_mean", [6], 0.3);
  const vari = b.weight("bn/moving_variance", [6], 0.2, 1);
  const beta = b.weight("bn/beta", [6], 0.3);
  b.add("bn", "BatchNormalization", { axis: -1, epsilon: 1e-3, center: true, scale: false }, ["dw"]);
  const bn = mapT(dw, (v, c) => (v - mean.data[c]) / Math.sqrt(vari.data[c] + 1e-3) + beta.data[c]);
  // BN with gamma, ReLU layer with max_value 6.
  const g2 = b.weight("bn2/gamma", [6], 2, 1);
  const m2 = b.weight("bn2/moving_mean", [6], 0.1);
  const v2 = b.weight("bn2/moving_variance", [6], 0.1, 0.5);
  const b2 = b.weight("bn2/beta", [6], 2);
  b.add("bn2", "BatchNormalization", { axis: 3, epsilon: 1e-3 }, ["bn"]);
  b.add("relu6", "ReLU", { max_value: 6, negative_slope: 0, threshold: 0 }, ["bn2"]);
  const relu6 = mapT(
    bn,
    (v, c) =>
      Math.min(6, Math.max(0, g2.data[c] * (v - m2.data[c]) / Math.sqrt(v2.data[c] + 1e-3) + b2.data[c])),
  );
  // ZeroPadding2D asymmetric, then max pool 3×3 stride 2 'same' and avg pool 3×3 stride 1 'same'.
  b.add("zp", "ZeroPadding2D", { padding: [[0, 1], [2, 0]] }, ["relu6"]);
  const zp = refPad(relu6, 0, 1, 2, 0);
  b.add("mp", "MaxPooling2D", { pool_size: [3, 3], strides: [2, 2], padding: "same" }, ["bn"]);
  const mp = refPool(bn, 3, 2, "same", "max");
  b.add("ap", "AveragePooling2D", { pool_size: [3, 3], strides: [1, 1], padding: "same" }, ["bn"]);
  const ap = refPool(bn, 3, 1, "same", "avg");
  b.add("ap2", "AveragePooling2D", { pool_size: [2, 2], strides: null, padding: "valid" }, ["zp"]);
  const ap2 = refPool(zp, 2, 2, "valid", "avg");
  // Add (3 inputs), Concatenate, Activation, GAP, Flatten (spatial > 1: H, W, C order), Dense.
  b.add("add", "Add", {}, ["bn", "ap", "relu6"]);
  const add = { ...bn, data: bn.data.map((v, i) => v + ap.data[i] + relu6.data[i]) };
  b.add("cat", "Concatenate", { axis: -1 }, ["add", "relu6"]);
  const cat = refConcat(add, relu6);
  b.add("act", "Activation", { activation: "tanh" }, ["cat"]);
  const act = mapT(cat, Math.tanh);
  b.add("gap", "GlobalAveragePooling2D", {}, ["act"]);
  b.add("flat", "Flatten", {}, ["mp"]);
  const flat = Array.from(mp.data);
  const dk2 = b.weight("dense/kernel", [flat.length, 5], 0.2);
  const db = b.weight("dense/bias", [5]);
  b.add("dense", "Dense", { units: 5, activation: "softmax", use_bias: true }, ["flat"]);
  const logits = Array.from(
    { length: 5 },
    (_, o) => flat.reduce((s, v, i) => s + v * dk2.data[i * 5 + o], db.data[o]),
  );
  const mx = Math.max(...logits);
  const ex = logits.map((l) => Math.exp(l - mx));
  const probs = ex.map((e) => e / ex.reduce((a, b) => a + b, 0));
  b.add("drop", "Dropout", { rate: 0.5 }, ["dense"]);

  const outs = ["dw", "bn", "relu6", "zp", "mp", "ap", "ap2", "add", "cat", "gap", "flat", "drop"];
  const got = await runOnnx(kerasToOnnx(b.model(outs)).bytes, x);
  assertNchwClose(got.dw, dw, 1e-5, "dw");
  assertNchwClose(got.bn, bn, 1e-5, "bn");
  assertNchwClose(got.relu6, relu6, 1e-4, "relu6");
  assertNchwClose(got.zp, zp, 1e-4, "zp");
  assertNchwClose(got.mp, mp, 1e-5, "mp");
  assertNchwClose(got.ap, ap, 1e-5, "ap");
  assertNchwClose(got.ap2, ap2, 1e-4, "ap2");
  assertNchwClose(got.add, add, 1e-4, "add");
  assertNchwClose(got.cat, cat, 1e-4, "cat");
  assertVecClose(got.gap.data, gap(act), 1e-5, "gap");
  assertVecClose(got.flat.data, flat, 1e-5, "flat");
  assertVecClose(got.drop.data, probs, 1e-5, "dense softmax");
});

Deno.test("onnx: graph edit exposes pooled intermediates; pruning; errors", async () => {
  const b = new ModelBuilder(6, 6, 2);
  const x = b.input(3);
  const k = b.weight("c/kernel", [3, 3, 2, 4]);
  b.add("c", "Conv2D", {
    filters: 4,
    kernel_size: [3, 3],
    strides: [1, 1],
    padding: "same",
    activation: "relu",
    use_bias: false,
  }, ["input_1"]);
  b.add("gp", "GlobalMaxPooling2D", {}, ["c"]);
  b.add("unused", "Conv2D", { filters: 1, kernel_size: [1, 1], padding: "valid", use_bias: false }, [
    "input_1",
  ]);
  const conv = kerasToOnnx(b.model(["gp"]), { outputs: ["gp", "c"] });
  deepStrictEqual(conv.layers, ["input_1", "c", "gp"]); // "unused" pruned (its weights are absent, too)
  const edited = filterOutputs(exposePooledOutputs(conv.bytes, ["c", "input_1", "gp"]), [
    "c/gap",
    "input_1/gap",
    "gp/gap",
  ]);
  const got = await runOnnx(edited, x);
  const c = mapT(refConv(x, k, null, 1, 1, "same"), (v) => Math.max(v, 0));
  deepStrictEqual(got["c/gap"].dims, [1, 4]);
  assertVecClose(got["c/gap"].data, gap(c), 1e-5, "c/gap");
  assertVecClose(got["input_1/gap"].data, gap(x), 1e-5, "input_1/gap");
  const gmax = Array.from(
    { length: 4 },
    (_, ch) => Math.max(...Array.from({ length: 36 }, (_, p) => c.data[p * 4 + ch])),
  );
  assertVecClose(got["gp/gap"].data, gmax, 1e-5, "gp");
  throws(() => exposePooledOutputs(conv.bytes, ["nope"]), /no such tensor/);
  throws(() => kerasToOnnx(b.model(["gp"]), { outputs: ["missing"] }), /no layer named "missing"/);
  b.add("weird", "Lambda", {}, ["c"]);
  throws(() => kerasToOnnx(b.model(["weird"])), /Lambda is not supported/);
  const b2 = new ModelBuilder(4, 4, 1);
  b2.add("c", "Conv2D", { filters: 2, kernel_size: [3, 3], padding: "same", use_bias: false }, ["input_1"]);
  b2.weight("c/kernel", [3, 3, 2, 2]); // wrong input channels
  throws(() => kerasToOnnx(b2.model(["c"])), /weight kernel has shape \[3,3,2,2\], expected \[3,3,1,2\]/);
  await rejects(OnnxRunner.create(new Uint8Array([1, 2, 3])), MonobenchError);
});

// ---------------------------------------------------------------------------------------------
// The real nsfwjs MobileNetV2

const EXPECTED_CHANNELS: Record<string, number> = {
  block_7_add: 64,
  block_12_add: 96,
  block_15_add: 160,
  block_16_project_BN: 320,
  out_relu: 1280,
};

Deno.test("onnx: nsfwjs MobileNetV2 converts, runs, is cached; head gives probabilities", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "monobench-onnx-" });
  try {
    const pooled = Object.keys(EXPECTED_CHANNELS);
    const conv = await nsfwjsOnnx({
      model: "mobilenet_v2",
      inputSize: 224,
      pooled,
      raw: ["dense_3"],
      cacheDir,
    });
    equal(conv.created, true);
    deepStrictEqual(conv.outputs, ["dense_3", ...pooled.map((p) => `${p}/gap`)]);
    const again = await nsfwjsOnnx({
      model: "mobilenet_v2",
      inputSize: 224,
      pooled,
      raw: ["dense_3"],
      cacheDir,
    });
    equal(again.created, false);
    equal(again.path, conv.path);
    ok(conv.path.startsWith(cacheDir) && conv.path.endsWith(".onnx"));
    const runner = await OnnxRunner.create(conv.path, { threads: 1 });
    try {
      deepStrictEqual([...runner.outputNames], conv.outputs);
      const rng = new Rng(4);
      const n = 3, S = 224;
      const x = Float32Array.from({ length: n * S * S * 3 }, () => rng.next());
      const fill = (start: number, count: number, dst: Float32Array) =>
        dst.set(x.subarray(start * S * S * 3, (start + count) * S * S * 3));
      const r1 = await runBatched(runner, n, [S, S, 3], fill, conv.outputs, { batchSize: 2 });
      const r2 = await runBatched(runner, n, [S, S, 3], fill, conv.outputs, { batchSize: 3 });
      const probs = r1.get("dense_3")!;
      equal(probs.width, 5);
      for (let i = 0; i < n; i++) {
        const p = probs.data.subarray(5 * i, 5 * i + 5);
        ok(p.every((v) => v >= 0 && v <= 1), `probabilities ${p}`);
        ok(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-5);
      }
      for (const name of conv.outputs) {
        const a = r1.get(name)!, b = r2.get(name)!;
        ok(a.data.every(Number.isFinite), `${name} finite`);
        // Deterministic and independent of the batch size.
        for (let i = 0; i < a.data.length; i++) {
          ok(Math.abs(a.data[i] - b.data[i]) <= 1e-5 * (1 + Math.abs(a.data[i])));
        }
        if (name !== "dense_3") equal(a.width, EXPECTED_CHANNELS[name.replace("/gap", "")], name);
      }
    } finally {
      await runner.release();
    }
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("onnx: pooled MobileNetV2 features of MNIST digits are more similar within a class", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "monobench-onnx-" });
  try {
    const S = 96;
    const pooled = ["block_12_add", "out_relu"];
    ok(MOBILENET_V2_BLOCK_OUTPUTS.includes("block_12_add"));
    const conv = await nsfwjsOnnx({ model: "mobilenet_v2", inputSize: S, pooled, cacheDir });
    const digits = await loadMnist();
    const classes = [0, 1, 7], per = 6;
    const rows = classes.flatMap((c) => Array.from({ length: per }, (_, i) => [c, i * 13]));
    const runner = await OnnxRunner.create(conv.path, { threads: 1 });
    let feats: Map<string, { data: Float32Array; width: number }>;
    try {
      feats = await runBatched(runner, rows.length, [S, S, 3], (start, count, dst) => {
        const g = new Float32Array(S * S);
        for (let i = 0; i < count; i++) {
          const [c, k] = rows[start + i];
          resizeBilinearAlignCorners(digits.raw[c].subarray(k * 784, (k + 1) * 784), 28, 28, 1, S, S, g);
          for (let p = 0; p < S * S; p++) dst.fill(g[p], (i * S * S + p) * 3, (i * S * S + p) * 3 + 3);
        }
      });
    } finally {
      await runner.release();
    }
    for (const name of pooled) {
      const { data, width: D } = feats.get(`${name}/gap`)!;
      equal(D, EXPECTED_CHANNELS[name]);
      // Cosine similarity of mean-centred features.
      const n = rows.length;
      const mean = new Float64Array(D);
      for (let i = 0; i < n; i++) for (let j = 0; j < D; j++) mean[j] += data[i * D + j] / n;
      const z = Array.from({ length: n }, (_, i) => {
        const v = Array.from({ length: D }, (_, j) => data[i * D + j] - mean[j]);
        const norm = Math.hypot(...v) || 1;
        return v.map((a) => a / norm);
      });
      let within = 0, wc = 0, across = 0, ac = 0;
      for (let i = 0; i < n; i++) {
        for (let k = i + 1; k < n; k++) {
          const s = z[i].reduce((a, v, j) => a + v * z[k][j], 0);
          if (rows[i][0] === rows[k][0]) (within += s), wc++;
          else (across += s), ac++;
        }
      }
      within /= wc;
      across /= ac;
      ok(within > across + 0.2, `${name}: within-class ${within.toFixed(3)} vs across ${across.toFixed(3)}`);
    }
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("onnx: unknown model / bad options are MonobenchErrors", async () => {
  const cacheDir = join(await Deno.makeTempDir({ prefix: "monobench-onnx-" }), "c");
  try {
    await rejects(
      nsfwjsOnnx({ model: "resnet" as "mobilenet_v2", pooled: ["x"], cacheDir }),
      /unknown nsfwjs model/,
    );
    await rejects(nsfwjsOnnx({ model: "mobilenet_v2", cacheDir }), /at least one output/);
    await rejects(nsfwjsOnnx({ model: "mobilenet_v2", pooled: ["nope"], cacheDir }), /no layer named "nope"/);
    // The classifier head needs the native size (its 7×7 average pool does not fit a 3×3 map).
    await rejects(
      nsfwjsOnnx({ model: "mobilenet_v2", inputSize: 96, raw: ["dense_3"], cacheDir }),
      /too small/,
    );
  } finally {
    await Deno.remove(join(cacheDir, ".."), { recursive: true });
  }
});
