/**
 * Small helpers to build and edit ONNX models with `onnx-proto` (protobufjs static code for the
 * ONNX v1.10 schema). Float tensors are stored as little-endian `raw_data`.
 */
import onnxPkg from "onnx-proto";
import { check, MonobenchError } from "../util/errors.ts";

export const onnx = onnxPkg.onnx;
export type ModelProto = InstanceType<typeof onnxPkg.onnx.ModelProto>;

const ELEM_FLOAT = 1;
const ELEM_INT64 = 7;

/** A node attribute value, tagged by ONNX type. */
export type Attr =
  | { i: number }
  | { f: number }
  | { s: string }
  | { ints: number[] }
  | { floats: number[] };

function attrProto(name: string, a: Attr) {
  const T = onnx.AttributeProto.AttributeType;
  if ("i" in a) return { name, type: T.INT, i: a.i };
  if ("f" in a) return { name, type: T.FLOAT, f: a.f };
  if ("s" in a) return { name, type: T.STRING, s: new TextEncoder().encode(a.s) };
  if ("ints" in a) return { name, type: T.INTS, ints: a.ints };
  return { name, type: T.FLOATS, floats: a.floats };
}

/** Shape for a value_info: numbers are fixed dims, strings symbolic ones. */
export type Dims = (number | string)[];

function valueInfo(name: string, elemType: number, dims: Dims) {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** Accumulates nodes, initializers and graph inputs/outputs, then serialises a ModelProto. */
export class GraphBuilder {
  readonly nodes: Record<string, unknown>[] = [];
  readonly initializers: Record<string, unknown>[] = [];
  readonly inputs: Record<string, unknown>[] = [];
  readonly outputs: Record<string, unknown>[] = [];
  readonly valueInfo: Record<string, unknown>[] = [];
  private used = new Set<string>();
  private counter = 0;

  /** A tensor/node name not used before (based on `base`). */
  fresh(base: string): string {
    let name = base;
    while (this.used.has(name)) name = `${base}_${++this.counter}`;
    this.used.add(name);
    return name;
  }

  /** Reserve an exact name (throws if taken). */
  reserve(name: string): string {
    if (this.used.has(name)) throw new MonobenchError(`ONNX graph: duplicate tensor name ${name}`);
    this.used.add(name);
    return name;
  }

  /** Add a float32 initializer; returns its name. */
  floatInit(base: string, dims: number[], data: Float32Array | number[]): string {
    const arr = data instanceof Float32Array ? data : Float32Array.from(data);
    check(
      arr.length === dims.reduce((a, b) => a * b, 1),
      `initializer ${base}: ${arr.length} values for dims [${dims}]`,
    );
    const name = this.fresh(base);
    this.initializers.push({
      name,
      dims,
      dataType: ELEM_FLOAT,
      rawData: new Uint8Array(arr.buffer.slice(arr.byteOffset, arr.byteOffset + arr.byteLength)),
    });
    return name;
  }

  /** Add an int64 initializer; returns its name. */
  int64Init(base: string, dims: number[], values: number[]): string {
    const name = this.fresh(base);
    const arr = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dims, dataType: ELEM_INT64, rawData: new Uint8Array(arr.buffer) });
    return name;
  }

  /** Add a node; `outputs` are exact names (reserved here). Returns the output names. */
  node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, Attr> = {}): string[] {
    for (const o of outputs) this.reserve(o);
    this.nodes.push({
      opType,
      input: inputs,
      output: outputs,
      name: this.fresh(`${opType}:${outputs[0]}`),
      attribute: Object.entries(attrs).map(([k, v]) => attrProto(k, v)),
    });
    return outputs;
  }

  /** Add a node with one output named `fresh(base)`; returns that name. */
  op(opType: string, inputs: string[], base: string, attrs: Record<string, Attr> = {}): string {
    const out = this.fresh(base);
    this.used.delete(out);
    return this.node(opType, inputs, [out], attrs)[0];
  }

  input(name: string, dims: Dims): void {
    this.reserve(name);
    this.inputs.push(valueInfo(name, ELEM_FLOAT, dims));
  }

  output(name: string, dims: Dims): void {
    this.outputs.push(valueInfo(name, ELEM_FLOAT, dims));
  }

  /** Record the shape of an intermediate float tensor (used by {@link exposePooledOutputs}). */
  info(name: string, dims: Dims): void {
    this.valueInfo.push(valueInfo(name, ELEM_FLOAT, dims));
  }

  /** Serialise as an ONNX model (opset 13, IR version 7). */
  build(
    opts: { graphName?: string; docString?: string; metadata?: Record<string, string> } = {},
  ): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 7,
      opsetImport: [{ domain: "", version: 13 }],
      producerName: "monobench",
      producerVersion: "1",
      docString: opts.docString ?? "",
      metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
      graph: {
        name: opts.graphName ?? "graph",
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
        valueInfo: this.valueInfo,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

/** Decode a serialised ONNX model. */
export function decodeModel(bytes: Uint8Array): ModelProto {
  try {
    return onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new MonobenchError(`not a valid ONNX model: ${(e as Error).message}`);
  }
}

/** Rank of tensor `name` from the graph's inputs/outputs/value_info (undefined if unknown). */
export function tensorRank(model: ModelProto, name: string): number | undefined {
  const g = model.graph!;
  for (const list of [g.valueInfo ?? [], g.output ?? [], g.input ?? []]) {
    for (const vi of list) {
      if (vi.name === name) return vi.type?.tensorType?.shape?.dim?.length ?? undefined;
    }
  }
  return undefined;
}

/** The channel count (dim 1) of tensor `name`, if recorded. */
function channelDim(model: ModelProto, name: string): number | undefined {
  const g = model.graph!;
  for (const list of [g.valueInfo ?? [], g.output ?? [], g.input ?? []]) {
    for (const vi of list) {
      if (vi.name === name) {
        const d = vi.type?.tensorType?.shape?.dim?.[1];
        const v = d?.dimValue;
        return v === undefined || v === null ? undefined : Number(v);
      }
    }
  }
  return undefined;
}

/** Output name used for the pooled version of tensor `name`. */
export function pooledName(name: string): string {
  return `${name}/gap`;
}

/**
 * Graph editing: expose intermediate tensors as extra graph outputs, each reduced to [N, C] by
 * GlobalAveragePool + Flatten (rank-4 NCHW tensors) or passed through (rank-2 tensors). The
 * new outputs are named `<tensor>/gap`. With `replace`, the model's existing outputs are
 * dropped (nodes are kept; run the converter with matching outputs to prune the graph).
 */
export function exposePooledOutputs(
  bytes: Uint8Array,
  tensors: string[],
  opts: { replace?: boolean; batchDim?: string } = {},
): Uint8Array {
  const model = decodeModel(bytes);
  const g = model.graph!;
  const produced = new Set<string>();
  for (const n of g.node ?? []) for (const o of n.output ?? []) produced.add(o);
  for (const i of g.input ?? []) produced.add(i.name!);
  const nodes = [...(g.node ?? [])];
  const outputs = opts.replace ? [] : [...(g.output ?? [])];
  const batch = opts.batchDim ?? "N";
  for (const t of tensors) {
    if (!produced.has(t)) throw new MonobenchError(`cannot expose ${t}: no such tensor in the ONNX graph`);
    const rank = tensorRank(model, t);
    const c = channelDim(model, t);
    const out = pooledName(t);
    if (rank === 4) {
      nodes.push(
        onnx.NodeProto.create({
          opType: "GlobalAveragePool",
          input: [t],
          output: [`${out}/4d`],
          name: `${out}/pool`,
        }),
        onnx.NodeProto.create({
          opType: "Flatten",
          input: [`${out}/4d`],
          output: [out],
          name: `${out}/flatten`,
          attribute: [attrProto("axis", { i: 1 })],
        }),
      );
    } else if (rank === 2) {
      nodes.push(onnx.NodeProto.create({ opType: "Identity", input: [t], output: [out], name: `${out}/id` }));
    } else {
      throw new MonobenchError(`cannot expose ${t}: rank ${rank ?? "unknown"} (need 2 or 4 with value_info)`);
    }
    outputs.push(onnx.ValueInfoProto.create(valueInfo(out, ELEM_FLOAT, [batch, c ?? "C"])));
  }
  g.node = nodes;
  g.output = outputs;
  return onnx.ModelProto.encode(model).finish();
}
