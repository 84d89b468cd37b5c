/**
 * Keras (TF.js layers model, channels_last) → ONNX (NCHW) conversion with static shapes.
 *
 * - The ONNX model takes the same input as the TF.js model: `input` [N, H, W, C] float32
 *   (channels last), transposed once to NCHW inside the graph.
 * - Every converted Keras layer's output is an ONNX tensor with the layer's name (NCHW for
 *   images, [N, C] for vectors), and its shape is recorded in `value_info`.
 * - Only the layers needed for the requested outputs are converted (pruning).
 * - TF "same" padding is resolved from the static input size into explicit (possibly
 *   asymmetric: the extra row/column goes at the bottom/right) ONNX pads, as TF does.
 * - Supported layers: InputLayer, Conv2D, DepthwiseConv2D, SeparableConv2D, BatchNormalization,
 *   Activation, ReLU, LeakyReLU, Softmax, ZeroPadding2D, MaxPooling2D, AveragePooling2D,
 *   GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten, Dense, Dropout, Add, Subtract,
 *   Multiply, Average, Maximum, Minimum, Concatenate. Anything else throws a MonobenchError.
 */
import { check, MonobenchError } from "../util/errors.ts";
import { type Attr, GraphBuilder } from "./onnx_build.ts";
import type { KerasLayer, TfjsLayersModel, WeightTensor } from "./tfjs_model.ts";

/** Shape of a converted tensor without the batch dim: [C, H, W] (NCHW) or [C]. */
export type TShape = [number, number, number] | [number];

export interface KerasToOnnxOptions {
  /** Input height and width (default: the model's batch_input_shape). */
  inputSize?: [number, number];
  /** Keras layer names to make graph outputs (default: the model's output layers). */
  outputs?: string[];
  /** Name of the symbolic batch dimension (default "N"). */
  batchDim?: string;
  /** Free-form metadata_props. */
  metadata?: Record<string, string>;
}

export interface KerasToOnnxResult {
  bytes: Uint8Array;
  /** Shape (without batch) of every converted layer's output. */
  shapes: Map<string, TShape>;
  /** Converted layers in graph order. */
  layers: string[];
}

/** TF output size and (before, after) padding of one spatial dim. */
export function tfPadding(
  inSize: number,
  k: number,
  stride: number,
  dilation: number,
  padding: string,
): { out: number; before: number; after: number } {
  const ek = (k - 1) * dilation + 1;
  if (padding === "valid") {
    const out = Math.floor((inSize - ek) / stride) + 1;
    if (out < 1) throw new MonobenchError(`input size ${inSize} is too small for a ${k}-wide window`);
    return { out, before: 0, after: 0 };
  }
  if (padding === "same") {
    const out = Math.ceil(inSize / stride);
    const total = Math.max((out - 1) * stride + ek - inSize, 0);
    const before = Math.floor(total / 2);
    return { out, before, after: total - before };
  }
  throw new MonobenchError(`unsupported padding ${JSON.stringify(padding)}`);
}

function pair(v: unknown, what: string): [number, number] {
  if (typeof v === "number") return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number")) return [v[0], v[1]];
  throw new MonobenchError(`bad ${what}: ${JSON.stringify(v)}`);
}

/** OIHW copy of a TF HWIO conv kernel. */
export function hwioToOihw(k: Float32Array, kh: number, kw: number, ci: number, co: number): Float32Array {
  const out = new Float32Array(k.length);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      for (let i = 0; i < ci; i++) {
        const src = ((y * kw + x) * ci + i) * co;
        for (let o = 0; o < co; o++) out[((o * ci + i) * kh + y) * kw + x] = k[src + o];
      }
    }
  }
  return out;
}

/** ONNX grouped-conv weight [C·M, 1, kh, kw] from a TF depthwise kernel [kh, kw, C, M] (out channel c·M + m). */
export function depthwiseToOnnx(k: Float32Array, kh: number, kw: number, c: number, m: number): Float32Array {
  const out = new Float32Array(k.length);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      for (let ci = 0; ci < c; ci++) {
        for (let mi = 0; mi < m; mi++) {
          out[((ci * m + mi) * kh + y) * kw + x] = k[((y * kw + x) * c + ci) * m + mi];
        }
      }
    }
  }
  return out;
}

class Converter {
  readonly g = new GraphBuilder();
  readonly shapes = new Map<string, TShape>();
  private readonly batch: string;

  constructor(private readonly model: TfjsLayersModel, batchDim: string) {
    this.batch = batchDim;
  }

  weight(layer: KerasLayer, param: string, shape?: number[]): WeightTensor {
    const w = this.model.weights.get(`${layer.name}/${param}`) ??
      [...this.model.weights.entries()].find(([k]) => k.endsWith(`/${layer.name}/${param}`))?.[1];
    if (!w) throw new MonobenchError(`layer ${layer.name}: weight ${param} not found`);
    if (shape && (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i]))) {
      throw new MonobenchError(
        `layer ${layer.name}: weight ${param} has shape [${w.shape}], expected [${shape}]`,
      );
    }
    return w;
  }

  hasWeight(layer: KerasLayer, param: string): boolean {
    return this.model.weights.has(`${layer.name}/${param}`) ||
      [...this.model.weights.keys()].some((k) => k.endsWith(`/${layer.name}/${param}`));
  }

  setShape(name: string, s: TShape): void {
    this.shapes.set(name, s);
    this.g.info(name, [this.batch, ...s]);
  }

  shapeOf(name: string): TShape {
    const s = this.shapes.get(name);
    check(s, `internal: shape of ${name} unknown`);
    return s;
  }

  spatial(layer: KerasLayer, input: string): [number, number, number] {
    const s = this.shapeOf(input);
    if (s.length !== 3) {
      throw new MonobenchError(`layer ${layer.name} (${layer.className}) needs an image input`);
    }
    return s;
  }

  /** Apply a Keras activation to `x`, writing the final result to `out`. */
  activation(name: string, x: string, out: string, rank: number): void {
    const g = this.g;
    switch (name) {
      case "linear":
      case undefined:
      case null:
        g.node("Identity", [x], [out]);
        return;
      case "relu":
        g.node("Relu", [x], [out]);
        return;
      case "relu6":
        g.node("Clip", [x, g.floatInit(`${out}/min`, [], [0]), g.floatInit(`${out}/max`, [], [6])], [out]);
        return;
      case "sigmoid":
        g.node("Sigmoid", [x], [out]);
        return;
      case "tanh":
        g.node("Tanh", [x], [out]);
        return;
      case "elu":
        g.node("Elu", [x], [out], { alpha: { f: 1 } });
        return;
      case "selu":
        g.node("Selu", [x], [out]);
        return;
      case "softplus":
        g.node("Softplus", [x], [out]);
        return;
      case "softsign":
        g.node("Softsign", [x], [out]);
        return;
      case "hard_sigmoid":
        g.node("HardSigmoid", [x], [out], { alpha: { f: 0.2 }, beta: { f: 0.5 } });
        return;
      case "swish": {
        const s = g.op("Sigmoid", [x], `${out}/sigmoid`);
        g.node("Mul", [x, s], [out]);
        return;
      }
      case "softmax":
        g.node("Softmax", [x], [out], { axis: { i: rank === 4 ? 1 : -1 } });
        return;
      default:
        throw new MonobenchError(`unsupported activation ${JSON.stringify(name)}`);
    }
  }

  /** Channel axis in NCHW/NC for a Keras (channels_last) axis. */
  channelAxis(layer: KerasLayer, axis: unknown, rank: number): number {
    const a = typeof axis === "number" ? axis : Array.isArray(axis) && axis.length === 1 ? axis[0] : NaN;
    if (a === -1 || a === rank - 1) return 1;
    throw new MonobenchError(
      `layer ${layer.name}: only the channel axis is supported (got axis ${JSON.stringify(axis)})`,
    );
  }

  convert(layer: KerasLayer): void {
    const c = layer.config;
    const g = this.g;
    const out = layer.name;
    const ins = layer.inbound;
    const x = ins[0];
    if (c.data_format !== undefined && c.data_format !== "channels_last") {
      throw new MonobenchError(`layer ${layer.name}: data_format ${c.data_format} is not supported`);
    }
    switch (layer.className) {
      case "Conv2D":
      case "DepthwiseConv2D":
      case "SeparableConv2D": {
        const [ci, h, w] = this.spatial(layer, x);
        const [kh, kw] = pair(c.kernel_size, "kernel_size");
        const [sh, sw] = pair(c.strides ?? 1, "strides");
        const [dh, dw] = pair(c.dilation_rate ?? 1, "dilation_rate");
        const pad = String(c.padding ?? "valid");
        const py = tfPadding(h, kh, sh, dh, pad);
        const px = tfPadding(w, kw, sw, dw, pad);
        const convAttrs = (group: number, k: [number, number], s: [number, number], p: number[]) => ({
          kernel_shape: { ints: k },
          strides: { ints: s },
          dilations: { ints: [dh, dw] },
          pads: { ints: p },
          group: { i: group },
        } as Record<string, Attr>);
        const pads = [py.before, px.before, py.after, px.after];
        let y: string;
        let co: number;
        if (layer.className === "Conv2D") {
          co = c.filters as number;
          const k = this.weight(layer, "kernel", [kh, kw, ci, co]);
          const inputs = [x, g.floatInit(`${out}/W`, [co, ci, kh, kw], hwioToOihw(k.data, kh, kw, ci, co))];
          if (c.use_bias !== false) {
            inputs.push(g.floatInit(`${out}/B`, [co], this.weight(layer, "bias", [co]).data));
          }
          y = g.op("Conv", inputs, `${out}/conv`, convAttrs(1, [kh, kw], [sh, sw], pads));
        } else {
          const m = (c.depth_multiplier as number | undefined) ?? 1;
          const dk = this.weight(layer, "depthwise_kernel", [kh, kw, ci, m]);
          const dwW = g.floatInit(`${out}/W`, [ci * m, 1, kh, kw], depthwiseToOnnx(dk.data, kh, kw, ci, m));
          if (layer.className === "DepthwiseConv2D") {
            co = ci * m;
            const inputs = [x, dwW];
            if (c.use_bias !== false) {
              inputs.push(g.floatInit(`${out}/B`, [co], this.weight(layer, "bias", [co]).data));
            }
            y = g.op("Conv", inputs, `${out}/conv`, convAttrs(ci, [kh, kw], [sh, sw], pads));
          } else {
            co = c.filters as number;
            const d = g.op("Conv", [x, dwW], `${out}/depthwise`, convAttrs(ci, [kh, kw], [sh, sw], pads));
            const pk = this.weight(layer, "pointwise_kernel", [1, 1, ci * m, co]);
            const inputs = [
              d,
              g.floatInit(`${out}/PW`, [co, ci * m, 1, 1], hwioToOihw(pk.data, 1, 1, ci * m, co)),
            ];
            if (c.use_bias !== false) {
              inputs.push(g.floatInit(`${out}/B`, [co], this.weight(layer, "bias", [co]).data));
            }
            y = g.op("Conv", inputs, `${out}/conv`, convAttrs(1, [1, 1], [1, 1], [0, 0, 0, 0]));
          }
        }
        this.activation(c.activation as string, y, out, 4);
        this.setShape(out, [co, py.out, px.out]);
        return;
      }
      case "BatchNormalization": {
        const s = this.shapeOf(x);
        this.channelAxis(layer, c.axis, s.length + 1);
        const ch = s[0];
        const ones = () => new Float32Array(ch).fill(1);
        const gamma = c.scale === false ? ones() : this.weight(layer, "gamma", [ch]).data;
        const beta = c.center === false ? new Float32Array(ch) : this.weight(layer, "beta", [ch]).data;
        g.node(
          "BatchNormalization",
          [
            x,
            g.floatInit(`${out}/scale`, [ch], gamma),
            g.floatInit(`${out}/B`, [ch], beta),
            g.floatInit(`${out}/mean`, [ch], this.weight(layer, "moving_mean", [ch]).data),
            g.floatInit(`${out}/var`, [ch], this.weight(layer, "moving_variance", [ch]).data),
          ],
          [out],
          { epsilon: { f: (c.epsilon as number | undefined) ?? 1e-3 } },
        );
        this.setShape(out, s);
        return;
      }
      case "Activation":
        this.activation(c.activation as string, x, out, this.shapeOf(x).length + 1);
        this.setShape(out, this.shapeOf(x));
        return;
      case "ReLU": {
        const maxV = c.max_value as number | null | undefined;
        const slope = (c.negative_slope as number | undefined) ?? 0;
        const thr = (c.threshold as number | undefined) ?? 0;
        if (thr !== 0) throw new MonobenchError(`layer ${layer.name}: ReLU threshold ≠ 0 is not supported`);
        if (slope !== 0) {
          if (maxV !== null && maxV !== undefined) {
            throw new MonobenchError(
              `layer ${layer.name}: ReLU with both negative_slope and max_value is not supported`,
            );
          }
          g.node("LeakyRelu", [x], [out], { alpha: { f: slope } });
        } else if (maxV === null || maxV === undefined) {
          g.node("Relu", [x], [out]);
        } else {
          g.node("Clip", [x, g.floatInit(`${out}/min`, [], [0]), g.floatInit(`${out}/max`, [], [maxV])], [
            out,
          ]);
        }
        this.setShape(out, this.shapeOf(x));
        return;
      }
      case "LeakyReLU":
        g.node("LeakyRelu", [x], [out], { alpha: { f: (c.alpha as number | undefined) ?? 0.3 } });
        this.setShape(out, this.shapeOf(x));
        return;
      case "Softmax": {
        const s = this.shapeOf(x);
        this.channelAxis(layer, c.axis ?? -1, s.length + 1);
        g.node("Softmax", [x], [out], { axis: { i: 1 } });
        this.setShape(out, s);
        return;
      }
      case "ZeroPadding2D": {
        const [ch, h, w] = this.spatial(layer, x);
        const p = c.padding;
        let t: number, b: number, l: number, r: number;
        if (typeof p === "number") [t, b, l, r] = [p, p, p, p];
        else if (Array.isArray(p) && p.length === 2 && typeof p[0] === "number") {
          [t, b, l, r] = [p[0], p[0], p[1] as number, p[1] as number];
        } else if (Array.isArray(p) && p.length === 2) {
          [t, b] = pair(p[0], "padding");
          [l, r] = pair(p[1], "padding");
        } else throw new MonobenchError(`layer ${layer.name}: bad padding ${JSON.stringify(p)}`);
        g.node("Pad", [x, g.int64Init(`${out}/pads`, [8], [0, 0, t, l, 0, 0, b, r])], [out], {
          mode: { s: "constant" },
        });
        this.setShape(out, [ch, h + t + b, w + l + r]);
        return;
      }
      case "MaxPooling2D":
      case "AveragePooling2D": {
        const [ch, h, w] = this.spatial(layer, x);
        const [kh, kw] = pair(c.pool_size ?? 2, "pool_size");
        const [sh, sw] = pair(c.strides ?? [kh, kw], "strides");
        const pad = String(c.padding ?? "valid");
        const py = tfPadding(h, kh, sh, 1, pad);
        const px = tfPadding(w, kw, sw, 1, pad);
        const attrs: Record<string, Attr> = {
          kernel_shape: { ints: [kh, kw] },
          strides: { ints: [sh, sw] },
          pads: { ints: [py.before, px.before, py.after, px.after] },
        };
        // TF's average pooling divides by the number of *valid* (unpadded) inputs.
        if (layer.className === "AveragePooling2D") attrs.count_include_pad = { i: 0 };
        g.node(layer.className === "MaxPooling2D" ? "MaxPool" : "AveragePool", [x], [out], attrs);
        this.setShape(out, [ch, py.out, px.out]);
        return;
      }
      case "GlobalAveragePooling2D":
      case "GlobalMaxPooling2D": {
        const [ch] = this.spatial(layer, x);
        if (c.keepdims === true) throw new MonobenchError(`layer ${layer.name}: keepdims is not supported`);
        const op = layer.className === "GlobalAveragePooling2D" ? "GlobalAveragePool" : "GlobalMaxPool";
        const p = g.op(op, [x], `${out}/4d`);
        g.node("Flatten", [p], [out], { axis: { i: 1 } });
        this.setShape(out, [ch]);
        return;
      }
      case "Flatten": {
        const s = this.shapeOf(x);
        if (s.length === 1) g.node("Identity", [x], [out]);
        else if (s[1] === 1 && s[2] === 1) g.node("Flatten", [x], [out], { axis: { i: 1 } });
        else {
          // Keras flattens in H, W, C order.
          const t = g.op("Transpose", [x], `${out}/nhwc`, { perm: { ints: [0, 2, 3, 1] } });
          g.node("Flatten", [t], [out], { axis: { i: 1 } });
        }
        this.setShape(out, [s.reduce((a, b) => a * b, 1)]);
        return;
      }
      case "Dense": {
        const s = this.shapeOf(x);
        if (s.length !== 1) {
          throw new MonobenchError(`layer ${layer.name}: Dense on a rank-4 input is not supported`);
        }
        const units = c.units as number;
        const k = this.weight(layer, "kernel", [s[0], units]);
        const kw = g.floatInit(`${out}/W`, [s[0], units], k.data);
        let y: string;
        if (c.use_bias !== false) {
          y = g.op("Gemm", [
            x,
            kw,
            g.floatInit(`${out}/B`, [units], this.weight(layer, "bias", [units]).data),
          ], `${out}/gemm`);
        } else {
          y = g.op("MatMul", [x, kw], `${out}/matmul`);
        }
        this.activation(c.activation as string, y, out, 2);
        this.setShape(out, [units]);
        return;
      }
      case "Dropout":
        g.node("Identity", [x], [out]);
        this.setShape(out, this.shapeOf(x));
        return;
      case "Add":
      case "Multiply":
      case "Average":
      case "Maximum":
      case "Minimum":
      case "Subtract": {
        const s = this.shapeOf(x);
        for (const i of ins) {
          const si = this.shapeOf(i);
          if (si.length !== s.length || si.some((d, j) => d !== s[j])) {
            throw new MonobenchError(`layer ${layer.name}: inputs have different shapes ([${s}] vs [${si}])`);
          }
        }
        const op = {
          Add: "Sum",
          Multiply: "Mul",
          Average: "Mean",
          Maximum: "Max",
          Minimum: "Min",
          Subtract: "Sub",
        }[
          layer.className
        ]!;
        if (op === "Mul" && ins.length > 2) {
          let acc = ins[0];
          for (let i = 1; i < ins.length - 1; i++) acc = g.op("Mul", [acc, ins[i]], `${out}/mul`);
          g.node("Mul", [acc, ins[ins.length - 1]], [out]);
        } else {
          if (op === "Sub") check(ins.length === 2, `layer ${layer.name}: Subtract needs two inputs`);
          g.node(op === "Sum" && ins.length === 2 ? "Add" : op, ins, [out]);
        }
        this.setShape(out, s);
        return;
      }
      case "Concatenate": {
        const shapes = ins.map((i) => this.shapeOf(i));
        const rank = shapes[0].length + 1;
        this.channelAxis(layer, c.axis ?? -1, rank);
        for (const s of shapes) {
          if (s.length !== shapes[0].length || s.slice(1).some((d, j) => d !== shapes[0][j + 1])) {
            throw new MonobenchError(`layer ${layer.name}: incompatible input shapes for concatenation`);
          }
        }
        g.node("Concat", ins, [out], { axis: { i: 1 } });
        const ch = shapes.reduce((a, s) => a + s[0], 0);
        this.setShape(out, (shapes[0].length === 3 ? [ch, shapes[0][1], shapes[0][2]] : [ch]) as TShape);
        return;
      }
      default:
        throw new MonobenchError(`layer ${layer.name}: Keras layer type ${layer.className} is not supported`);
    }
  }
}

/** Convert a TF.js layers model to an ONNX model (see the module comment). */
export function kerasToOnnx(model: TfjsLayersModel, opts: KerasToOnnxOptions = {}): KerasToOnnxResult {
  const byName = new Map(model.layers.map((l) => [l.name, l]));
  const outputs = opts.outputs ?? model.outputLayers;
  check(outputs.length > 0, "kerasToOnnx: no outputs requested");
  for (const o of outputs) {
    check(byName.has(o), `kerasToOnnx: no layer named ${JSON.stringify(o)} in ${model.name}`);
  }
  // Prune: the layers the requested outputs depend on.
  const needed = new Set<string>();
  const stack = [...outputs];
  while (stack.length) {
    const n = stack.pop()!;
    if (needed.has(n)) continue;
    needed.add(n);
    const l = byName.get(n);
    check(l, `kerasToOnnx: layer ${n} referenced but not defined`);
    stack.push(...l.inbound);
  }
  const [, h0, w0, c0] = model.inputShape;
  const [h, w] = opts.inputSize ?? [h0, w0];
  check(
    typeof h === "number" && typeof w === "number" && h >= 1 && w >= 1 && typeof c0 === "number",
    `kerasToOnnx: input size unknown for ${model.name}; pass inputSize`,
  );
  const batch = opts.batchDim ?? "N";
  const conv = new Converter(model, batch);
  const g = conv.g;
  g.input("input", [batch, h, w, c0]);
  const converted: string[] = [];
  const inputName = model.inputLayers[0];
  for (const layer of model.layers) {
    if (!needed.has(layer.name)) continue;
    if (layer.name === inputName) {
      g.node("Transpose", ["input"], [layer.name], { perm: { ints: [0, 3, 1, 2] } });
      conv.setShape(layer.name, [c0, h, w]);
    } else {
      for (const i of layer.inbound) {
        check(conv.shapes.has(i), `kerasToOnnx: layer ${layer.name} uses ${i} before it is defined`);
      }
      conv.convert(layer);
    }
    converted.push(layer.name);
  }
  for (const o of outputs) g.output(o, [batch, ...conv.shapeOf(o)]);
  const bytes = g.build({
    graphName: model.name,
    docString: `converted from the TF.js layers model ${model.name} by monobench`,
    metadata: opts.metadata,
  });
  return { bytes, shapes: conv.shapes, layers: converted };
}
