/**
 * WGSL generation for the element-wise primitives (`map`, `reduce`): one kernel per expression,
 * broadcast signature, space and target, with its own typed parameter struct (one base offset
 * per tensor argument, one f32 per host constant). See backend.ts for the dispatch and splits.
 */
import type { ReduceTo } from "../types.ts";
import { type Expr, toWgsl } from "../../compute/expr.ts";
import type { BoundEw } from "../../compute/ew.ts";
import { type FieldType, type ParamStruct, struct } from "./engine.ts";
import { type KernelSource, src } from "./kernels.ts";

export type EwOp = "map" | ReduceTo;

export interface EwKernel {
  source: KernelSource;
  params: ParamStruct<Record<string, FieldType>>;
  /** Names of the storage bindings in order (see {@link ewKernel}). */
  bindings: string[];
}

const ENTRY = `@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32`;

const KAHAN = `
fn kahan(acc: vec2<f32>, v: f32) -> vec2<f32> {
  let y = v - acc.y;
  let t = acc.x + y;
  return vec2<f32>(t, (t - acc.x) - y);
}`;

function tree(wg: number): string {
  return `
var<workgroup> red: array<f32, ${wg}>;
fn redSum(li: u32, v: f32) -> f32 {
  red[li] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { red[li] = red[li] + red[li + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;
}

let serial = 0;
const cache = new Map<string, EwKernel>();

/** Cache key of the kernel for this call. */
export function ewKey(e: Expr, b: BoundEw, entries: boolean, op: EwOp): string {
  return `ew|${entries ? "E" : "D"}|${op}|${b.sig}|${e.key}`;
}

/**
 * The kernel of a map/reduction. Storage bindings:
 *   dense:   out, args…
 *   entries: rowPtr, idx, out, [colPtr, entryT, rowT for "cols"], args…
 * where `out` is the partial-sums buffer for "scalar" (and dense "cols") reductions.
 * Row chunks of a dense space: `rowOff` rows were done before; row arguments are bound per chunk.
 */
export function ewKernel(e: Expr, b: BoundEw, entries: boolean, op: EwOp): EwKernel {
  const key = ewKey(e, b, entries, op);
  const hit = cache.get(key);
  if (hit) return hit;
  const fields: Record<string, FieldType> = {
    n: "u32",
    rows: "u32",
    cols: "u32",
    outBase: "u32",
    acc: "bool",
  };
  const binds: [string, string][] = [];
  if (entries) binds.push(["rowPtr", "u32"], ["idx", "u32"]);
  binds.push(["out", "f32"]);
  if (entries && op === "cols") binds.push(["colPtr", "u32"], ["entryT", "u32"], ["rowT", "u32"]);
  const loadsRow: string[] = [], loadsElem: string[] = [];
  b.args.forEach((a, k) => {
    if (a.kind === "const") {
      fields[`c${k}`] = "f32";
      loadsElem.push(`let v${k} = U.c${k};`);
      return;
    }
    fields[`b${k}`] = "u32";
    binds.push([`a${k}`, "f32"]);
    const at = a.bc === "full" ? (entries ? "e" : "i") : a.bc === "row" ? "r" : a.bc === "col" ? "j" : "0u";
    (a.bc === "row" ? loadsRow : loadsElem).push(`let v${k} = a${k}[U.b${k} + ${at}];`);
  });
  const names = new Map(b.args.map((a, k) => [a.name, `v${k}`]));
  const ex = toWgsl(e, (v) => names.get(v)!);
  const needRow = b.args.some((a) => a.kind === "tensor" && a.bc === "row");
  const params = struct(`Ew${serial++}`, fields);
  const value = `${loadsRow.join(" ")} ${loadsElem.join(" ")} let v = ${ex};`;
  const write = (o: string) => `if (U.acc != 0u) { out[${o}] = out[${o}] + v; } else { out[${o}] = v; }`;
  let body: string;
  if (!entries) {
    if (op === "map") {
      body = `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 256u + li;
  if (i >= U.n) { return; }
  let r = i / U.cols; let j = i % U.cols;
  ${value}
  ${write("U.outBase + i")}
}`;
    } else if (op === "scalar") {
      body = tree(256) + KAHAN + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  var s = vec2<f32>(0.0, 0.0);
  for (var q = 0u; q < 4u; q = q + 1u) {
    let i = g * 1024u + q * 256u + li;
    if (i < U.n) {
      let r = i / U.cols; let j = i % U.cols;
      ${value}
      s = kahan(s, v);
    }
  }
  let tot = redSum(li, s.x - s.y);
  if (li == 0u) { out[U.outBase + g] = tot; }
}`;
    } else if (op === "rows") {
      body = tree(64) + KAHAN + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let r = wgLin(wid, nwg);
  if (r >= U.rows) { return; }
  var s = vec2<f32>(0.0, 0.0);
  for (var j = li; j < U.cols; j = j + 64u) {
    let i = r * U.cols + j;
    ${value}
    s = kahan(s, v);
  }
  let tot = redSum(li, s.x - s.y);
  if (li == 0u) { let v = tot; ${write("U.outBase + r")} }
}`;
    } else {
      // Column partials over blocks of 64 rows: out[rb·cols + j].
      body = KAHAN + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let nib = (U.cols + 63u) / 64u;
  let rb = g / nib; let j = (g % nib) * 64u + li;
  if (j >= U.cols) { return; }
  var s = vec2<f32>(0.0, 0.0);
  let r1 = min(rb * 64u + 64u, U.rows);
  for (var r = rb * 64u; r < r1; r = r + 1u) {
    let i = r * U.cols + j;
    ${value}
    s = kahan(s, v);
  }
  out[U.outBase + rb * U.cols + j] = s.x - s.y;
}`;
    }
  } else {
    const rowOf = needRow
      ? `
fn rowOf(e: u32) -> u32 {
  var lo = 0u; var hi = U.rows;
  loop {
    if (lo + 1u >= hi) { break; }
    let mid = (lo + hi) >> 1u;
    if (rowPtr[mid] <= e) { lo = mid; } else { hi = mid; }
  }
  return lo;
}`
      : "";
    const total = "min(rowPtr[U.rows], U.n)";
    if (op === "map") {
      body = rowOf + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let e = wgLin(wid, nwg) * 256u + li;
  if (e >= U.n) { return; }
  if (e >= ${total}) { if (U.acc == 0u) { out[U.outBase + e] = 0.0; } return; }
  let j = idx[e];
  ${needRow ? "let r = rowOf(e);" : ""}
  ${value}
  ${write("U.outBase + e")}
}`;
    } else if (op === "scalar") {
      body = tree(256) + rowOf + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let e = g * 256u + li;
  var s = 0.0;
  if (e < ${total}) {
    let j = idx[e];
    ${needRow ? "let r = rowOf(e);" : ""}
    ${value}
    s = v;
  }
  let tot = redSum(li, s);
  if (li == 0u) { out[U.outBase + g] = tot; }
}`;
    } else if (op === "rows") {
      body = KAHAN + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let r = wgLin(wid, nwg) * 64u + li;
  if (r >= U.rows) { return; }
  var s = vec2<f32>(0.0, 0.0);
  let e1 = min(rowPtr[r + 1u], U.n);
  for (var e = min(rowPtr[r], U.n); e < e1; e = e + 1u) {
    let j = idx[e];
    ${value}
    s = kahan(s, v);
  }
  let v = s.x - s.y;
  ${write("U.outBase + r")}
}`;
    } else {
      body = KAHAN + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let j = wgLin(wid, nwg) * 64u + li;
  if (j >= U.cols) { return; }
  var s = vec2<f32>(0.0, 0.0);
  for (var p = colPtr[j]; p < colPtr[j + 1u]; p = p + 1u) {
    let e = entryT[p];
    ${needRow ? "let r = rowT[p];" : ""}
    ${value}
    s = kahan(s, v);
  }
  let v = s.x - s.y;
  ${write("U.outBase + j")}
}`;
    }
  }
  const k: EwKernel = { source: src(params, binds, body), params, bindings: binds.map(([n]) => n) };
  cache.set(key, k);
  return k;
}
