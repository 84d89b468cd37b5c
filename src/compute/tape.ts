/**
 * A small reverse-mode tape over the compute primitives of the {@link Backend} contract. An SAE
 * architecture writes its forward pass with these ops (element-wise expressions, dense and
 * sparse matmuls, gathers/scatters, k-th value selection) and gets the gradients of every
 * parameter from `backward`, on any backend.
 *
 * - Element-wise ops take an expression (src/compute/expr.ts) over named arguments; their
 *   gradients are the symbolic derivatives, or, per argument, a derivative the architecture
 *   supplies (`grads`): a straight-through estimator is one line.
 * - Sparse values live on a {@link Pattern} (CSR codes and their transpose): an "entries" Var is
 *   one value per code entry. Selections (`select`, `kthLargest`) are not differentiable: they
 *   fix the pattern, and gradients flow through the values computed on it (`sddmm` recomputes
 *   pre-activations on the selected entries only, so backward stays O(nnz·d)).
 * - Buffers are pooled per shape and reused from one step to the next (`reset`), so a training
 *   loop allocates nothing after its first step.
 */
import type {
  Backend,
  Bcast,
  Codes,
  CodesT,
  EwArg,
  EwSpace,
  MatmulOptions,
  ReduceTo,
  Tensor,
} from "../backend/types.ts";
import { MonobenchError } from "../util/errors.ts";
import { derivative, type Expr, expr, isZero, product } from "./expr.ts";

/** Sparsity pattern: CSR codes of a [rows, cols] matrix and their per-column transpose. */
export interface Pattern {
  readonly codes: Codes;
  readonly codesT: CodesT;
}

/** A tensor on the tape. Entries Vars (`pattern` set) hold one value per entry of the pattern. */
export class Var {
  /** Gradient (valid once `gradSet`). */
  grad: Tensor | null = null;
  gradSet = false;
  constructor(
    readonly t: Tensor,
    readonly shape: readonly number[],
    readonly needsGrad: boolean,
    readonly pattern: Pattern | null = null,
    readonly name = "",
  ) {}
  get size(): number {
    return this.t.size;
  }
}

/** An element-wise argument with an explicit broadcast (see {@link row}, {@link col}). */
export interface Bcasted {
  readonly v: Var;
  readonly bc: Bcast;
}

/** Index `v` by row of the space (v has one value per row / per sample). */
export function row(v: Var): Bcasted {
  return { v, bc: "row" };
}

/** Index `v` by column of the space (v has one value per column / per latent). */
export function col(v: Var): Bcasted {
  return { v, bc: "col" };
}

/** Named arguments of an element-wise op: Vars ("full", or "scalar" when of size 1), broadcast Vars, numbers. */
export type EwArgs = Record<string, Var | Bcasted | number>;

export interface EwOptions {
  /** Derivative ∂expr/∂name overriding the symbolic one (e.g. a straight-through estimator). */
  grads?: Record<string, string>;
  /** Index space; inferred from the full arguments when omitted. */
  space?: { rows: number; cols: number } | Pattern;
}

interface Record_ {
  out: Var;
  back: () => void;
}

type Space = { kind: "dense"; rows: number; cols: number } | { kind: "entries"; p: Pattern };

export class Tape {
  private records: Record_[] = [];
  private readonly pool = new Map<string, Tensor[]>();
  private readonly used = new Map<string, number>();
  private readonly patterns = new Map<string, Pattern[]>();
  private readonly usedPatterns = new Map<string, number>();

  /** `grad`: record ops for `backward` (false: inference, nothing is recorded). */
  constructor(readonly be: Backend, readonly grad = true) {}

  /** Start a new pass: forget the records, make every pooled buffer available again. */
  reset(): void {
    this.records = [];
    this.used.clear();
    this.usedPatterns.clear();
  }

  /** Release every pooled buffer. */
  dispose(): void {
    for (const ts of this.pool.values()) for (const t of ts) this.be.dispose(t);
    for (const ps of this.patterns.values()) {
      for (const p of ps) {
        this.be.disposeCodes(p.codes);
        this.be.disposeCodes(p.codesT);
      }
    }
    this.pool.clear();
    this.patterns.clear();
    this.reset();
  }

  /** A pooled f32 (or u32) tensor of `shape`, distinct from every other one taken in this pass. */
  alloc(shape: readonly number[], dtype: "f32" | "u32" = "f32"): Tensor {
    const key = `${dtype}:${shape.join("x")}`;
    const list = this.pool.get(key) ?? [];
    this.pool.set(key, list);
    const n = this.used.get(key) ?? 0;
    this.used.set(key, n + 1);
    if (n < list.length) return list[n];
    const t = this.be.zeros([...shape], dtype);
    list.push(t);
    return t;
  }

  private allocPattern(rows: number, cols: number, cap: number): Pattern {
    const key = `${rows}x${cols}:${cap}`;
    const list = this.patterns.get(key) ?? [];
    this.patterns.set(key, list);
    const n = this.usedPatterns.get(key) ?? 0;
    this.usedPatterns.set(key, n + 1);
    if (n < list.length) return list[n];
    const p = { codes: this.be.codes(rows, cols, cap), codesT: this.be.codesT(rows, cols, cap) };
    list.push(p);
    return p;
  }

  // ---- leaves ----------------------------------------------------------------------------
  /** A parameter: `grad` receives its gradient in `backward` (null: not trained). */
  param(t: Tensor, grad: Tensor | null, name = ""): Var {
    const v = new Var(t, t.shape, this.grad && grad !== null, null, name);
    v.grad = grad;
    return v;
  }

  /** A constant input (no gradient). */
  input(t: Tensor, name = ""): Var {
    return new Var(t, t.shape, false, null, name);
  }

  /** A constant [1] holding `value` (written now, on the device queue). */
  scalar(value: number): Var {
    const t = this.alloc([1]);
    this.be.fill(t, value);
    return new Var(t, [1], false);
  }

  /** The same values without a gradient path. */
  detach(v: Var): Var {
    return new Var(v.t, v.shape, false, v.pattern, v.name);
  }

  // ---- element-wise ------------------------------------------------------------------------
  private resolve(args: EwArgs, opts: EwOptions): {
    space: Space;
    bound: { name: string; v: Var | null; c: number; bc: Bcast }[];
  } {
    const items = Object.entries(args).map(([name, a]) => {
      if (name.startsWith("__")) {
        throw new MonobenchError(`tape: argument names may not start with "__" (${name})`);
      }
      if (typeof a === "number") return { name, v: null, c: a, bc: "scalar" as Bcast | null };
      return { name, v: a instanceof Var ? a : a.v, c: 0, bc: a instanceof Var ? null : a.bc };
    });
    let space: Space | null = null;
    if (opts.space) {
      space = "codes" in opts.space
        ? { kind: "entries", p: opts.space }
        : { kind: "dense", rows: opts.space.rows, cols: opts.space.cols };
    } else {
      const unmarked = items.filter((i) => i.v && i.bc === null).map((i) => i.v!);
      const ent = unmarked.find((v) => v.pattern);
      const big = unmarked.find((v) => !v.pattern && v.size !== 1) ?? unmarked.find((v) => !v.pattern);
      if (ent) space = { kind: "entries", p: ent.pattern! };
      else if (big) {
        const s = big.shape.length === 1 ? [1, big.shape[0]] : big.shape;
        if (s.length !== 2) throw new MonobenchError(`tape: element-wise arguments must be 1-D or 2-D`);
        space = { kind: "dense", rows: s[0], cols: s[1] };
      } else throw new MonobenchError("tape: an element-wise op needs a full argument or a space");
    }
    const sp = space;
    const bound = items.map((i) => {
      if (!i.v || i.bc !== null) return { ...i, bc: i.bc! };
      const v = i.v;
      if (sp.kind === "entries") {
        if (v.pattern === sp.p) return { ...i, bc: "full" as Bcast };
        if (!v.pattern && v.size === 1) return { ...i, bc: "scalar" as Bcast };
        throw new MonobenchError(`tape: ${i.name} is not an entries value of this op's pattern`);
      }
      const s = v.shape.length === 1 ? [1, v.shape[0]] : v.shape;
      if (!v.pattern && s.length === 2 && s[0] === sp.rows && s[1] === sp.cols) {
        return { ...i, bc: "full" as Bcast };
      }
      if (!v.pattern && v.size === 1) return { ...i, bc: "scalar" as Bcast };
      throw new MonobenchError(
        `tape: ${i.name} has shape [${v.shape}] in a [${sp.rows}, ${sp.cols}] op (use row()/col() to broadcast)`,
      );
    });
    return { space: sp, bound };
  }

  private ewSpace(s: Space): EwSpace {
    return s.kind === "dense"
      ? { kind: "dense", rows: s.rows, cols: s.cols }
      : { kind: "entries", codes: s.p.codes, codesT: s.p.codesT };
  }

  private static spaceDims(s: Space): { rows: number; cols: number; elems: number } {
    return s.kind === "dense"
      ? { rows: s.rows, cols: s.cols, elems: s.rows * s.cols }
      : { rows: s.p.codes.rows, cols: s.p.codes.cols, elems: Math.max(s.p.codes.cap, 1) };
  }

  private static ewArgs(e: Expr, bound: { name: string; v: Var | null; c: number; bc: Bcast }[], extra = {}) {
    const out: Record<string, EwArg> = { ...extra };
    for (const b of bound) {
      if (!e.vars.includes(b.name)) continue;
      out[b.name] = b.v ? { t: b.v.t, bc: b.bc } : { c: b.c };
    }
    return out;
  }

  /** out = expr(args), element-wise over the space of the full arguments. */
  map(src: string, args: EwArgs, opts: EwOptions = {}): Var {
    const e = expr(src);
    const { space, bound } = this.resolve(args, opts);
    const dims = Tape.spaceDims(space);
    const outShape = space.kind === "entries" ? [dims.elems] : this.denseShape(bound, dims);
    const out = this.newVar(outShape, bound, space.kind === "entries" ? space.p : null);
    this.be.map(e, Tape.ewArgs(e, bound), this.ewSpace(space), out.t);
    if (out.needsGrad) {
      this.record(out, () => this.ewBackward(e, bound, space, opts.grads, { t: out.grad!, bc: "full" }));
    }
    return out;
  }

  /** Sum of expr(args) over the space: to one value [1], per row [rows] or per column [cols]. */
  sum(src: string, args: EwArgs, to: ReduceTo = "scalar", opts: EwOptions = {}): Var {
    const e = expr(src);
    const { space, bound } = this.resolve(args, opts);
    const dims = Tape.spaceDims(space);
    const shape = to === "scalar" ? [1] : to === "rows" ? [dims.rows] : [dims.cols];
    const out = this.newVar(shape, bound, null);
    this.be.reduce(e, Tape.ewArgs(e, bound), this.ewSpace(space), to, out.t);
    if (out.needsGrad) {
      const bc: Bcast = to === "scalar" ? "scalar" : to === "rows" ? "row" : "col";
      this.record(out, () => this.ewBackward(e, bound, space, opts.grads, { t: out.grad!, bc }));
    }
    return out;
  }

  private denseShape(bound: { v: Var | null; bc: Bcast }[], dims: { rows: number; cols: number }): number[] {
    const full = bound.find((b) => b.v && b.bc === "full");
    return full ? [...full.v!.shape] : [dims.rows, dims.cols];
  }

  private ewBackward(
    e: Expr,
    bound: { name: string; v: Var | null; c: number; bc: Bcast }[],
    space: Space,
    grads: Record<string, string> | undefined,
    g: { t: Tensor; bc: Bcast },
  ): void {
    for (const b of bound) {
      if (!b.v?.needsGrad) continue;
      const dSrc = grads?.[b.name];
      const de = dSrc !== undefined ? expr(dSrc) : derivative(e, b.name);
      if (isZero(de)) continue;
      const chain = product(expr("__g"), de);
      const args = Tape.ewArgs(chain, bound, { __g: { t: g.t, bc: g.bc } });
      const target = this.gradOf(b.v);
      const acc = b.v.gradSet;
      const sp = this.ewSpace(space);
      if (b.bc === "full") this.be.map(chain, args, sp, target, acc);
      else {
        const to: ReduceTo = b.bc === "row" ? "rows" : b.bc === "col" ? "cols" : "scalar";
        this.be.reduce(chain, args, sp, to, target, { accumulate: acc });
      }
      b.v.gradSet = true;
    }
  }

  // ---- dense ---------------------------------------------------------------------------------
  /** alpha · op(a) · op(b) (see {@link Backend.matmul}). */
  matmul(a: Var, b: Var, opts: { ta?: boolean; tb?: boolean; alpha?: number } = {}): Var {
    const ta = !!opts.ta, tb = !!opts.tb, alpha = opts.alpha ?? 1;
    if (a.shape.length !== 2 || b.shape.length !== 2) throw new MonobenchError("tape.matmul: 2-D operands");
    const M = ta ? a.shape[1] : a.shape[0], N = tb ? b.shape[0] : b.shape[1];
    const out = this.newVar([M, N], [{ v: a }, { v: b }], null);
    this.be.matmul(a.t, b.t, out.t, { ta, tb, alpha });
    if (out.needsGrad) {
      this.record(out, () => {
        const g = out.grad!;
        if (a.needsGrad) {
          const o: MatmulOptions = ta ? { ta: tb, tb: true, alpha } : { ta: false, tb: !tb, alpha };
          this.be.matmul(ta ? b.t : g, ta ? g : b.t, this.gradOf(a), { ...o, accumulate: a.gradSet });
          a.gradSet = true;
        }
        if (b.needsGrad) {
          const o: MatmulOptions = tb ? { ta: true, tb: ta, alpha } : { ta: !ta, tb: false, alpha };
          this.be.matmul(tb ? g : a.t, tb ? a.t : g, this.gradOf(b), { ...o, accumulate: b.gradSet });
          b.gradSet = true;
        }
      });
    }
    return out;
  }

  // ---- selection (not differentiable) --------------------------------------------------------
  /** The k-th largest value of `v` (1-based; −∞ if k exceeds its size), as a [1] Var. */
  kthLargest(v: Var, k: number): Var {
    const out = this.alloc([1]);
    this.be.kthLargest(v.t, k, out, 0);
    return new Var(out, [1], false);
  }

  /** Per-row k-th largest of v [rows, cols] among columns with mask 1 (null: all), [rows]. */
  kthLargestRows(v: Var, k: number, mask: Tensor | null = null): Var {
    const rows = v.shape[0];
    const out = this.alloc([rows]);
    this.be.kthLargestRows(v.t, k, mask, out);
    return new Var(out, [rows], false);
  }

  /**
   * Entries of v [rows, cols] that are > 0, in an eligible column (mask) and ≥ the threshold
   * (> when strict): a scalar Var [1] or number, or `row(Var)` per row. At most `cap` entries.
   */
  select(
    v: Var,
    threshold: Var | Bcasted | number,
    opts: { cap: number; mask?: Tensor | null; strict?: boolean },
  ): Pattern {
    if (v.shape.length !== 2) throw new MonobenchError("tape.select: values must be [rows, cols]");
    const [rows, cols] = v.shape;
    if (!Number.isSafeInteger(opts.cap) || opts.cap < 0) {
      throw new MonobenchError(`tape.select: bad cap ${opts.cap}`);
    }
    const p = this.allocPattern(rows, cols, opts.cap);
    let thr: Var;
    if (typeof threshold === "number") thr = this.scalar(threshold);
    else thr = threshold instanceof Var ? threshold : threshold.v;
    const perRow = !(threshold instanceof Var) && typeof threshold !== "number" && threshold.bc === "row";
    if (!perRow && thr.size !== 1) {
      throw new MonobenchError("tape.select: the threshold must be a scalar or row(v)");
    }
    this.be.gather(
      v.t,
      perRow ? { kind: "rows", t: thr.t } : { kind: "scalar", t: thr.t, slot: 0 },
      opts.mask ?? null,
      !!opts.strict,
      p.codes,
    );
    this.be.transpose(p.codes, p.codesT);
    return p;
  }

  // ---- sparse ---------------------------------------------------------------------------------
  /** Entry values of the dense v [rows, cols] on pattern p. */
  gatherEntries(p: Pattern, v: Var): Var {
    const out = this.newVar([Math.max(p.codes.cap, 1)], [{ v }], p);
    this.be.gatherEntries(p.codes, v.t, out.t);
    if (out.needsGrad) {
      this.record(out, () => {
        this.be.scatterEntries(p.codes, out.grad!, this.gradOf(v), v.gradSet);
        v.gradSet = true;
      });
    }
    return out;
  }

  /** The dense [rows, cols] matrix with `vals` at the entries of their pattern, 0 elsewhere. */
  scatterEntries(vals: Var): Var {
    const p = this.patternOf(vals, "scatterEntries");
    const out = this.newVar([p.codes.rows, p.codes.cols], [{ v: vals }], null);
    this.be.scatterEntries(p.codes, vals.t, out.t, false);
    if (out.needsGrad) {
      this.record(out, () => {
        if (!vals.gradSet) this.be.gatherEntries(p.codes, out.grad!, this.gradOf(vals));
        else {
          const tmp = this.alloc([Math.max(p.codes.cap, 1)]);
          this.be.gatherEntries(p.codes, out.grad!, tmp);
          this.be.map(expr("g"), { g: { t: tmp, bc: "full" } }, this.entries(p), vals.grad!, true);
        }
        vals.gradSet = true;
      });
    }
    return out;
  }

  /** A[row_e] · W[idx_e] for every entry e of p: A [rows, d], W [cols, d]. */
  sddmm(p: Pattern, A: Var, W: Var): Var {
    const out = this.newVar([Math.max(p.codes.cap, 1)], [{ v: A }, { v: W }], p);
    this.be.sddmm(p.codes, A.t, W.t, out.t, false);
    if (out.needsGrad) {
      this.record(out, () => {
        if (A.needsGrad) {
          this.be.spmm(p.codes, out.grad!, W.t, this.gradOf(A), A.gradSet);
          A.gradSet = true;
        }
        if (W.needsGrad) {
          this.be.spmmT(p.codes, p.codesT, out.grad!, A.t, this.gradOf(W), W.gradSet);
          W.gradSet = true;
        }
      });
    }
    return out;
  }

  /** Σ_{e ∈ row b} vals[e] · W[idx_e]: [rows, d]. */
  spmm(vals: Var, W: Var): Var {
    const p = this.patternOf(vals, "spmm");
    const d = W.shape[W.shape.length - 1];
    const out = this.newVar([p.codes.rows, d], [{ v: vals }, { v: W }], null);
    this.be.spmm(p.codes, vals.t, W.t, out.t, false);
    if (out.needsGrad) {
      this.record(out, () => {
        const g = out.grad!;
        if (vals.needsGrad) {
          this.be.sddmm(p.codes, g, W.t, this.gradOf(vals), vals.gradSet);
          vals.gradSet = true;
        }
        if (W.needsGrad) {
          this.be.spmmT(p.codes, p.codesT, vals.t, g, this.gradOf(W), W.gradSet);
          W.gradSet = true;
        }
      });
    }
    return out;
  }

  /** Σ_{e ∈ column j} vals[e] · A[row_e]: [cols, d]. */
  spmmT(vals: Var, A: Var): Var {
    const p = this.patternOf(vals, "spmmT");
    const d = A.shape[A.shape.length - 1];
    const out = this.newVar([p.codes.cols, d], [{ v: vals }, { v: A }], null);
    this.be.spmmT(p.codes, p.codesT, vals.t, A.t, out.t, false);
    if (out.needsGrad) {
      this.record(out, () => {
        const g = out.grad!;
        if (vals.needsGrad) {
          this.be.sddmm(p.codes, A.t, g, this.gradOf(vals), vals.gradSet);
          vals.gradSet = true;
        }
        if (A.needsGrad) {
          this.be.spmm(p.codes, vals.t, g, this.gradOf(A), A.gradSet);
          A.gradSet = true;
        }
      });
    }
    return out;
  }

  /** The element-wise space of pattern p (for `EwOptions.space`). */
  entries(p: Pattern): EwSpace {
    return { kind: "entries", codes: p.codes, codesT: p.codesT };
  }

  // ---- backward -------------------------------------------------------------------------------
  /**
   * Gradients of Σ roots (each a [1] Var) with respect to every parameter they depend on. Each
   * parameter's `grad` is overwritten by its first contribution; `gradSet` tells which
   * parameters received none.
   */
  backward(roots: Var[]): void {
    if (!this.grad) throw new MonobenchError("tape: backward on an inference tape");
    for (const r of roots) {
      if (r.size !== 1) throw new MonobenchError("tape.backward: roots must be scalars");
      if (!r.needsGrad) continue;
      if (r.gradSet) this.be.map(expr("g + 1"), { g: { t: r.grad!, bc: "full" } }, dense11, r.grad!);
      else this.be.fill(this.gradOf(r), 1);
      r.gradSet = true;
    }
    for (let i = this.records.length - 1; i >= 0; i--) {
      const rec = this.records[i];
      if (rec.out.gradSet) rec.back();
    }
  }

  private record(out: Var, back: () => void): void {
    this.records.push({ out, back });
  }

  private newVar(shape: readonly number[], inputs: { v: Var | null }[], pattern: Pattern | null): Var {
    const needs = this.grad && inputs.some((i) => i.v?.needsGrad);
    return new Var(this.alloc(shape), shape, needs, pattern);
  }

  private gradOf(v: Var): Tensor {
    if (!v.grad) v.grad = this.alloc(v.shape);
    return v.grad;
  }

  private patternOf(v: Var, what: string): Pattern {
    if (!v.pattern) throw new MonobenchError(`tape.${what}: the values must be entries of a pattern`);
    return v.pattern;
  }
}

const dense11: EwSpace = { kind: "dense", rows: 1, cols: 1 };
