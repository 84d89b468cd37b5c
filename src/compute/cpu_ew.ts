/**
 * CPU code generation for element-wise maps and reductions: each (expression, broadcasts, space,
 * target) is compiled once into a plain JavaScript loop. Values are computed in double precision
 * and rounded to f32 on store; reductions accumulate in double, as the rest of the CPU oracle.
 */
import type { ReduceTo } from "../backend/types.ts";
import { type Expr, toJs } from "./expr.ts";
import type { BoundEw } from "./ew.ts";

type Arr = Float32Array | Uint32Array;
type Kernel = (
  T: (Float32Array | undefined)[],
  S: number[],
  out: Float32Array,
  rows: number,
  cols: number,
  slot: number,
  rp: Uint32Array | undefined,
  idx: Uint32Array | undefined,
  cap: number,
) => void;

const kernels = new Map<string, Kernel>();

/**
 * Run a compiled map (`to` undefined) or reduction. T[k]/S[k]: the array or the scalar value of
 * argument k (scalars already read from their slot).
 */
export function runEw(
  e: Expr,
  b: BoundEw,
  entries: { rp: Uint32Array; idx: Uint32Array; cap: number } | null,
  to: ReduceTo | undefined,
  accumulate: boolean,
  T: (Float32Array | undefined)[],
  S: number[],
  out: Float32Array,
  slot: number,
): void {
  const key = `${entries ? "E" : "D"}|${to ?? "map"}|${accumulate ? 1 : 0}|${b.sig}|${e.key}`;
  let k = kernels.get(key);
  if (!k) {
    k = build(e, b, !!entries, to, accumulate);
    kernels.set(key, k);
  }
  k(T, S, out, b.rows, b.cols, slot, entries?.rp, entries?.idx, entries?.cap ?? 0);
}

function build(e: Expr, b: BoundEw, entries: boolean, to: ReduceTo | undefined, acc: boolean): Kernel {
  const head: string[] = [], rowL: string[] = [], elemL: string[] = [];
  b.args.forEach((a, k) => {
    if (a.kind === "const" || a.bc === "scalar") {
      head.push(`const v${k} = S[${k}];`);
      return;
    }
    head.push(`const A${k} = T[${k}];`);
    if (a.bc === "row") rowL.push(`const v${k} = A${k}[r];`);
    else if (a.bc === "col") elemL.push(`const v${k} = A${k}[c];`);
    else elemL.push(`const v${k} = A${k}[${entries ? "e" : "i"}];`);
  });
  const names = new Map(b.args.map((a, k) => [a.name, `v${k}`]));
  const ex = toJs(e, (v) => names.get(v)!);
  const at = entries ? "e" : "i";
  let pre = "", inner: string, postRow = "", post = "";
  if (to === undefined) {
    inner = acc ? `out[${at}] += ${ex};` : `out[${at}] = ${ex};`;
    if (entries && !acc) post = "for (let e = Math.min(rp[rows], cap); e < out.length; e++) out[e] = 0;";
  } else if (to === "scalar") {
    pre = "let s = 0;";
    inner = `s += ${ex};`;
    post = `out[slot] = ${acc ? "out[slot] + " : ""}s;`;
  } else if (to === "rows") {
    pre = "";
    inner = `s += ${ex};`;
    postRow = `out[r] = ${acc ? "out[r] + " : ""}s;`;
  } else {
    pre = "const a = new Float64Array(cols);";
    inner = `a[c] += ${ex};`;
    post = `for (let c = 0; c < cols; c++) out[c] = ${acc ? "out[c] + " : ""}a[c];`;
  }
  const rowInit = to === "rows" ? "let s = 0;" : "";
  const loop = entries
    ? `for (let r = 0; r < rows; r++) {
  ${rowL.join(" ")} ${rowInit}
  const e1 = Math.min(rp[r + 1], cap);
  for (let e = Math.min(rp[r], cap); e < e1; e++) {
    const c = idx[e];
    ${elemL.join(" ")}
    ${inner}
  }
  ${postRow}
}`
    : `for (let r = 0; r < rows; r++) {
  ${rowL.join(" ")} ${rowInit}
  const o = r * cols;
  for (let c = 0; c < cols; c++) {
    const i = o + c;
    ${elemL.join(" ")}
    ${inner}
  }
  ${postRow}
}`;
  const body = `"use strict";\n${head.join("\n")}\n${pre}\n${loop}\n${post}`;
  return new Function("T", "S", "out", "rows", "cols", "slot", "rp", "idx", "cap", body) as Kernel;
}

/** The host arrays of bound tensor arguments (scalars read at their slot). */
export function hostArgs(b: BoundEw, data: (t: BoundEw["args"][number]) => Arr | undefined) {
  const T: (Float32Array | undefined)[] = [], S: number[] = [];
  for (const a of b.args) {
    if (a.kind === "const") {
      T.push(undefined);
      S.push(Math.fround(a.c)); // constants are f32 parameters on every backend
    } else if (a.bc === "scalar") {
      T.push(undefined);
      S.push((data(a) as Float32Array)[a.slot]);
    } else {
      T.push(data(a) as Float32Array);
      S.push(0);
    }
  }
  return { T, S };
}
