/**
 * Element-wise expressions: the one description of an element-wise map or reduction that every
 * backend compiles (to a JavaScript loop on the CPU, to WGSL on the GPU) and that the tape
 * differentiates symbolically. A small, closed language over f32 scalars:
 *
 *   numbers, names (tensor arguments or host constants), + − * / and unary −,
 *   comparisons < <= > >= == != (1 when true, else 0),
 *   exp log sqrt abs sign tanh sq relu step rect (1 if |u| < ½) min max select(c, a, b) (a if c ≠ 0).
 *
 * Names are bound per call (see `EwArg` in src/backend/types.ts), so one compiled kernel serves
 * every step; host constants travel as uniform parameters, not as literals.
 */
import { MonobenchError } from "../util/errors.ts";

export type Node =
  | { k: "num"; v: number }
  | { k: "var"; name: string }
  | { k: "neg"; a: Node }
  | { k: "bin"; op: BinOp; a: Node; b: Node }
  | { k: "call"; fn: Fn; args: Node[] };

type BinOp = "+" | "-" | "*" | "/" | "<" | "<=" | ">" | ">=" | "==" | "!=";

const FNS = {
  exp: 1,
  log: 1,
  sqrt: 1,
  abs: 1,
  sign: 1,
  tanh: 1,
  sq: 1,
  relu: 1,
  step: 1,
  rect: 1,
  min: 2,
  max: 2,
  select: 3,
} as const;
type Fn = keyof typeof FNS;

/** A parsed expression. `vars` are its free names in order of first appearance. */
export interface Expr {
  readonly src: string;
  readonly ast: Node;
  readonly vars: readonly string[];
  /** Canonical text (stable cache key of compiled kernels). */
  readonly key: string;
}

const cache = new Map<string, Expr>();

/** Parse `src` (cached). Throws MonobenchError on a syntax error or an unknown function. */
export function expr(src: string): Expr {
  const hit = cache.get(src);
  if (hit) return hit;
  const e = fromAst(new Parser(src).parse(), src);
  cache.set(src, e);
  return e;
}

function fromAst(ast: Node, src?: string): Expr {
  const vars: string[] = [];
  const walk = (n: Node) => {
    if (n.k === "var") {
      if (!vars.includes(n.name)) vars.push(n.name);
    } else if (n.k === "neg") walk(n.a);
    else if (n.k === "bin") {
      walk(n.a);
      walk(n.b);
    } else if (n.k === "call") n.args.forEach(walk);
  };
  walk(ast);
  const key = print(ast);
  return { src: src ?? key, ast, vars, key };
}

// ---- parser ---------------------------------------------------------------------------------

class Parser {
  private i = 0;
  private readonly toks: string[];
  constructor(private readonly src: string) {
    this.toks =
      src.match(/\s*(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|[A-Za-z_]\w*|<=|>=|==|!=|\S)/g)
        ?.map((t) => t.trim()) ?? [];
    const joined = this.toks.join("");
    if (joined !== src.replace(/\s+/g, "")) this.fail("unexpected character");
  }
  private fail(msg: string): never {
    throw new MonobenchError(`expression ${JSON.stringify(this.src)}: ${msg}`);
  }
  private peek(): string | undefined {
    return this.toks[this.i];
  }
  private take(t?: string): string {
    const v = this.toks[this.i];
    if (v === undefined || (t !== undefined && v !== t)) this.fail(`expected ${t ?? "more input"}`);
    this.i++;
    return v;
  }
  parse(): Node {
    if (this.toks.length === 0) this.fail("empty");
    const n = this.cmp();
    if (this.i < this.toks.length) this.fail(`unexpected ${JSON.stringify(this.peek())}`);
    return n;
  }
  private cmp(): Node {
    const a = this.add();
    const t = this.peek();
    if (t === "<" || t === "<=" || t === ">" || t === ">=" || t === "==" || t === "!=") {
      this.i++;
      return { k: "bin", op: t, a, b: this.add() };
    }
    return a;
  }
  private add(): Node {
    let a = this.mul();
    for (let t = this.peek(); t === "+" || t === "-"; t = this.peek()) {
      this.i++;
      a = { k: "bin", op: t, a, b: this.mul() };
    }
    return a;
  }
  private mul(): Node {
    let a = this.unary();
    for (let t = this.peek(); t === "*" || t === "/"; t = this.peek()) {
      this.i++;
      a = { k: "bin", op: t, a, b: this.unary() };
    }
    return a;
  }
  private unary(): Node {
    if (this.peek() === "-") {
      this.i++;
      return { k: "neg", a: this.unary() };
    }
    if (this.peek() === "+") {
      this.i++;
      return this.unary();
    }
    return this.atom();
  }
  private atom(): Node {
    const t = this.take();
    if (t === "(") {
      const n = this.cmp();
      this.take(")");
      return n;
    }
    if (/^[\d.]/.test(t)) {
      const v = Number(t);
      if (!Number.isFinite(v)) this.fail(`bad number ${t}`);
      return { k: "num", v };
    }
    if (/^[A-Za-z_]/.test(t)) {
      if (this.peek() !== "(") {
        if (t in FNS) this.fail(`${t} is a function`);
        return { k: "var", name: t };
      }
      if (!(t in FNS)) this.fail(`unknown function ${t}`);
      this.take("(");
      const args: Node[] = [];
      if (this.peek() !== ")") {
        args.push(this.cmp());
        while (this.peek() === ",") {
          this.i++;
          args.push(this.cmp());
        }
      }
      this.take(")");
      const fn = t as Fn;
      if (args.length !== FNS[fn]) this.fail(`${fn} takes ${FNS[fn]} argument(s)`);
      return { k: "call", fn, args };
    }
    this.fail(`unexpected ${JSON.stringify(t)}`);
  }
}

// ---- printing and code generation ----------------------------------------------------------

function print(n: Node): string {
  switch (n.k) {
    case "num":
      return String(n.v);
    case "var":
      return n.name;
    case "neg":
      return `(-${print(n.a)})`;
    case "bin":
      return `(${print(n.a)} ${n.op} ${print(n.b)})`;
    case "call":
      return `${n.fn}(${n.args.map(print).join(", ")})`;
  }
}

/** JavaScript source of `e` (double arithmetic), names replaced by `name(v)`. */
export function toJs(e: Expr, name: (v: string) => string): string {
  const g = (n: Node): string => {
    switch (n.k) {
      case "num":
        return `(${Math.fround(n.v)})`;
      case "var":
        return name(n.name);
      case "neg":
        return `(-${g(n.a)})`;
      case "bin": {
        const a = g(n.a), b = g(n.b);
        if ("+-*/".includes(n.op)) return `(${a} ${n.op} ${b})`;
        const op = n.op === "==" ? "===" : n.op === "!=" ? "!==" : n.op;
        return `(${a} ${op} ${b} ? 1 : 0)`;
      }
      case "call": {
        const a = n.args.map(g);
        switch (n.fn) {
          case "exp":
          case "log":
          case "sqrt":
          case "abs":
          case "sign":
          case "tanh":
            return `Math.${n.fn}(${a[0]})`;
          case "sq":
            return `(${a[0]} * ${a[0]})`;
          case "relu":
            return `(${a[0]} > 0 ? ${a[0]} : 0)`;
          case "step":
            return `(${a[0]} > 0 ? 1 : 0)`;
          case "rect":
            return `(Math.abs(${a[0]}) < 0.5 ? 1 : 0)`;
          case "min":
            return `Math.min(${a[0]}, ${a[1]})`;
          case "max":
            return `Math.max(${a[0]}, ${a[1]})`;
          case "select":
            return `(${a[0]} !== 0 ? ${a[1]} : ${a[2]})`;
        }
      }
    }
  };
  return g(e.ast);
}

function wgslNum(v: number): string {
  const f = Math.fround(v);
  if (f === 0) return "0.0";
  // Exact f32 bits: decimal printing could round differently in the shader compiler.
  const u = new Uint32Array(new Float32Array([f]).buffer)[0];
  return `bitcast<f32>(${u >>> 0}u)`;
}

/** WGSL source of `e` (f32 arithmetic), names replaced by `name(v)`. */
export function toWgsl(e: Expr, name: (v: string) => string): string {
  const g = (n: Node): string => {
    switch (n.k) {
      case "num":
        return wgslNum(n.v);
      case "var":
        return name(n.name);
      case "neg":
        return `(-${g(n.a)})`;
      case "bin": {
        const a = g(n.a), b = g(n.b);
        if ("+-*/".includes(n.op)) return `(${a} ${n.op} ${b})`;
        return `select(0.0, 1.0, ${a} ${n.op} ${b})`;
      }
      case "call": {
        const a = n.args.map(g);
        switch (n.fn) {
          case "exp":
          case "log":
          case "sqrt":
          case "abs":
          case "sign":
          case "tanh":
            return `${n.fn}(${a[0]})`;
          case "sq":
            return `(${a[0]} * ${a[0]})`;
          case "relu":
            return `max(${a[0]}, 0.0)`;
          case "step":
            return `select(0.0, 1.0, ${a[0]} > 0.0)`;
          case "rect":
            return `select(0.0, 1.0, abs(${a[0]}) < 0.5)`;
          case "min":
          case "max":
            return `${n.fn}(${a[0]}, ${a[1]})`;
          case "select":
            return `select(${a[2]}, ${a[1]}, ${a[0]} != 0.0)`;
        }
      }
    }
  };
  return g(e.ast);
}

// ---- symbolic differentiation ---------------------------------------------------------------

const num = (v: number): Node => ({ k: "num", v });
const isNum = (n: Node, v?: number) => n.k === "num" && (v === undefined || n.v === v);

function add(a: Node, b: Node): Node {
  if (isNum(a, 0)) return b;
  if (isNum(b, 0)) return a;
  if (a.k === "num" && b.k === "num") return num(a.v + b.v);
  return { k: "bin", op: "+", a, b };
}
function sub(a: Node, b: Node): Node {
  if (isNum(b, 0)) return a;
  if (isNum(a, 0)) return neg(b);
  return { k: "bin", op: "-", a, b };
}
function mul(a: Node, b: Node): Node {
  if (isNum(a, 0) || isNum(b, 0)) return num(0);
  if (isNum(a, 1)) return b;
  if (isNum(b, 1)) return a;
  if (a.k === "num" && b.k === "num") return num(a.v * b.v);
  return { k: "bin", op: "*", a, b };
}
function div(a: Node, b: Node): Node {
  if (isNum(a, 0)) return num(0);
  if (isNum(b, 1)) return a;
  return { k: "bin", op: "/", a, b };
}
function neg(a: Node): Node {
  if (a.k === "num") return num(-a.v);
  if (a.k === "neg") return a.a;
  return { k: "neg", a };
}
const call = (fn: Fn, ...args: Node[]): Node => ({ k: "call", fn, args });

function d(n: Node, v: string): Node {
  switch (n.k) {
    case "num":
      return num(0);
    case "var":
      return num(n.name === v ? 1 : 0);
    case "neg":
      return neg(d(n.a, v));
    case "bin": {
      const da = d(n.a, v), db = d(n.b, v);
      switch (n.op) {
        case "+":
          return add(da, db);
        case "-":
          return sub(da, db);
        case "*":
          return add(mul(da, n.b), mul(n.a, db));
        case "/":
          // (a/b)' = a'/b − a·b'/b²
          return sub(div(da, n.b), div(mul(n.a, db), mul(n.b, n.b)));
        default:
          return num(0); // comparisons are piecewise constant
      }
    }
    case "call": {
      const [a, b, c] = n.args;
      const da = d(a, v);
      switch (n.fn) {
        case "exp":
          return mul(da, n);
        case "log":
          return div(da, a);
        case "sqrt":
          return div(da, mul(num(2), n));
        case "abs":
          return mul(da, call("sign", a));
        case "tanh":
          return mul(da, sub(num(1), mul(n, n)));
        case "sq":
          return mul(da, mul(num(2), a));
        case "relu":
          return mul(da, call("step", a));
        case "sign":
        case "step":
        case "rect":
          return num(0);
        case "min":
          return call("select", { k: "bin", op: "<=", a, b }, da, d(b, v));
        case "max":
          return call("select", { k: "bin", op: ">=", a, b }, da, d(b, v));
        case "select":
          return call("select", a, d(b, v), d(c, v));
      }
    }
  }
}

/** ∂e/∂v as an expression (0 when `e` does not depend on `v`). */
export function derivative(e: Expr, v: string): Expr {
  return fromAst(simplifySelect(d(e.ast, v)));
}

function simplifySelect(n: Node): Node {
  if (n.k === "call") {
    const args = n.args.map(simplifySelect);
    if (n.fn === "select" && isNum(args[1], 0) && isNum(args[2], 0)) return num(0);
    return { k: "call", fn: n.fn, args };
  }
  if (n.k === "bin") return { k: "bin", op: n.op, a: simplifySelect(n.a), b: simplifySelect(n.b) };
  if (n.k === "neg") return neg(simplifySelect(n.a));
  return n;
}

/** `a * (b)` as an expression over the union of names (used to chain gradients). */
export function product(a: Expr, b: Expr): Expr {
  return fromAst(mul(a.ast, b.ast));
}

/** True when `e` is the constant 0. */
export function isZero(e: Expr): boolean {
  return isNum(e.ast, 0);
}

/** Evaluate `e` in double precision on host values (tests, and the CPU compiler's fallback). */
export function evaluate(e: Expr, env: Record<string, number>): number {
  for (const v of e.vars) {
    if (typeof env[v] !== "number") throw new MonobenchError(`expression ${e.src}: no value for ${v}`);
  }
  const f = new Function("env", `return ${toJs(e, (v) => `env[${JSON.stringify(v)}]`)};`);
  return f(env) as number;
}
