/**
 * Argument checking shared by every backend's element-wise ops (`map`, `reduce`): binds the
 * names of an expression to tensors or constants and validates their sizes against the index
 * space, so that all backends accept and reject exactly the same calls.
 */
import type { Bcast, EwArg, EwSpace, ReduceTo, Tensor } from "../backend/types.ts";
import { MonobenchError } from "../util/errors.ts";
import type { Expr } from "./expr.ts";

/** One bound name: a tensor with its broadcast, or a constant. */
export type BoundArg =
  | { name: string; kind: "tensor"; t: Tensor; bc: Bcast; slot: number }
  | { name: string; kind: "const"; c: number };

export interface BoundEw {
  /** Arguments in the order of `e.vars`. */
  args: BoundArg[];
  rows: number;
  cols: number;
  /** Elements of a "full" argument / map output: rows·cols (dense) or cap (entries). */
  elems: number;
  /** Signature of the broadcasts (part of kernel cache keys). */
  sig: string;
}

function fail(e: Expr, msg: string): never {
  throw new MonobenchError(`element-wise op ${JSON.stringify(e.src)}: ${msg}`);
}

/** Validate a map/reduce call; `to` is undefined for a map. */
export function bindEw(
  e: Expr,
  args: Record<string, EwArg>,
  space: EwSpace,
  out: Tensor,
  to?: ReduceTo,
  slot = 0,
): BoundEw {
  const rows = space.kind === "dense" ? space.rows : space.codes.rows;
  const cols = space.kind === "dense" ? space.cols : space.codes.cols;
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(cols) || cols < 0) fail(e, "bad space");
  const elems = space.kind === "dense" ? rows * cols : space.codes.cap;
  for (const k of Object.keys(args)) if (!e.vars.includes(k)) fail(e, `argument ${k} is not used`);
  const bound: BoundArg[] = e.vars.map((name) => {
    const a = args[name];
    if (!a) fail(e, `no argument for ${name}`);
    if ("c" in a) {
      if (typeof a.c !== "number") fail(e, `constant ${name} is not a number`);
      return { name, kind: "const", c: a.c };
    }
    const t = a.t, bc = a.bc, s = a.slot ?? 0;
    if (t.dtype !== "f32") fail(e, `${name} must be an f32 tensor`);
    const need = bc === "full" ? elems : bc === "row" ? rows : bc === "col" ? cols : s + 1;
    if (bc !== "full" && bc !== "row" && bc !== "col" && bc !== "scalar") {
      fail(e, `${name}: bad broadcast ${bc}`);
    }
    if (!Number.isInteger(s) || s < 0) fail(e, `${name}: bad slot ${s}`);
    const ok = bc === "full" && space.kind === "dense" ? t.size === need : t.size >= need;
    if (!ok) fail(e, `${name} (${bc}) has ${t.size} elements, the space needs ${need}`);
    return { name, kind: "tensor", t, bc, slot: s };
  });
  if (out.dtype !== "f32") fail(e, "the output must be an f32 tensor");
  if (to === undefined) {
    const ok = space.kind === "dense" ? out.size === elems : out.size >= elems;
    if (!ok) fail(e, `the output has ${out.size} elements, the space has ${elems}`);
  } else if (to === "scalar") {
    if (!Number.isInteger(slot) || slot < 0 || slot >= out.size) fail(e, `bad output slot ${slot}`);
  } else if (to === "rows" || to === "cols") {
    const n = to === "rows" ? rows : cols;
    if (out.size < n) fail(e, `the output has ${out.size} elements, reducing to ${to} needs ${n}`);
    if (to === "cols" && space.kind === "entries" && !space.codesT) {
      fail(e, "reducing entries to columns needs codesT");
    }
  } else fail(e, `bad reduction target ${to}`);
  const sig = bound.map((b) => b.kind === "const" ? `${b.name}:c` : `${b.name}:${b.bc}`).join(",");
  return { args: bound, rows, cols, elems, sig };
}
