/**
 * The compute layer on the CPU oracle: the expression language and its symbolic derivatives
 * (against central differences in double precision), every primitive against a float64 host
 * computation, and the tape's gradient of every primitive against central differences of a
 * float64 host implementation of the same function.
 */
import assert from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend, Codes, Tensor } from "../src/backend/types.ts";
import { derivative, evaluate, expr } from "../src/compute/expr.ts";
import { col, type Pattern, row, Tape, type Var } from "../src/compute/tape.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";

const be = new CpuBackend();

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i]));
    assert.ok(err <= tol, `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

const read = async (t: Tensor) => await be.read(t) as Float32Array;

/** A random CSR pattern over [rows, cols] (≈ density), built by the backend's gather. */
function pattern(b: Backend, rng: Rng, rows: number, cols: number, density: number, cap = rows * cols) {
  const m = new Float32Array(rows * cols);
  for (let i = 0; i < m.length; i++) m[i] = rng.uniforms(1)[0] < density ? 1 + rng.uniforms(1)[0] : 0;
  const codes = b.codes(rows, cols, cap), codesT = b.codesT(rows, cols, cap);
  b.gather(
    b.tensor(m, [rows, cols]),
    { kind: "scalar", t: b.tensor(new Float32Array([0]), [1]), slot: 0 },
    null,
    true,
    codes,
  );
  b.transpose(codes, codesT);
  return { codes, codesT, mask: m };
}

/** Host view of codes: entry e → (row, col). */
async function entriesOf(c: Codes) {
  const rp = await be.read(c.rowPtr) as Uint32Array, idx = await be.read(c.idx) as Uint32Array;
  const out: [number, number][] = [];
  for (let r = 0; r < c.rows; r++) {
    for (let e = rp[r]; e < Math.min(rp[r + 1], c.cap); e++) out.push([r, idx[e]]);
  }
  return out;
}

// ---- expressions ----------------------------------------------------------------------------

Deno.test("expr: parsing, evaluation and errors", () => {
  assert.equal(evaluate(expr("1 + 2 * 3 - -4 / 2"), {}), 9);
  assert.equal(evaluate(expr("select(a > b, a, b) + step(a) + rect(0.4) + rect(0.5)"), { a: 2, b: 3 }), 5);
  assert.equal(evaluate(expr("max(a, 1) * min(a, 1) + relu(-a) + abs(-a) + sq(a)"), { a: 3 }), 15);
  assert.deepEqual(expr("x * y + exp(x)").vars, ["x", "y"]);
  for (const bad of ["", "1 +", "foo(1)", "exp(1, 2)", "a $ b", "(a", "exp"]) {
    assert.throws(() => expr(bad), MonobenchError, bad);
  }
  assert.throws(() => evaluate(expr("a + b"), { a: 1 }), MonobenchError);
});

Deno.test("expr: symbolic derivatives match central differences (double precision)", () => {
  const cases = [
    "x * y + exp(x) / (1 + sq(y))",
    "log(sq(x) + 3) * sqrt(sq(y) + 2) - tanh(x * y)",
    "relu(x - y) * x + abs(x) * step(y)",
    "max(x, y) * min(x, 2 * y) + select(x > 0, x * y, y)",
    "x / y - y / x",
  ];
  const rng = new Rng(1);
  for (const src of cases) {
    const e = expr(src);
    for (let t = 0; t < 20; t++) {
      const env = { x: rng.normals(1)[0] + 0.1, y: rng.normals(1)[0] + 0.1 };
      for (const v of ["x", "y"] as const) {
        const h = 1e-6;
        const up = evaluate(e, { ...env, [v]: env[v] + h }), dn = evaluate(e, { ...env, [v]: env[v] - h });
        const fd = (up - dn) / (2 * h), an = evaluate(derivative(e, v), env);
        // Kinks (relu, abs, max/min, select) are measure-zero: skip points within h of one.
        const kink = Math.abs(env.x - env.y) < 1e-4 || Math.abs(env.x) < 1e-4 ||
          Math.abs(env.x - 2 * env.y) < 1e-4;
        if (!kink) {
          assert.ok(
            Math.abs(fd - an) <= 1e-5 * (1 + Math.abs(fd)),
            `${src} d/d${v} at ${JSON.stringify(env)}: ${an} vs ${fd}`,
          );
        }
      }
    }
  }
  assert.equal(derivative(expr("step(x) * 3 + rect(x)"), "x").key, "0");
});

// ---- primitives vs float64 host computations --------------------------------------------

Deno.test("map and reduce: dense spaces, every broadcast, accumulate", async () => {
  const rng = new Rng(2);
  const R = 7, C = 5;
  const X = rng.normals(R * C), r = rng.normals(R), c = rng.normals(C), s = rng.normals(3);
  const x = be.tensor(X, [R, C]), rt = be.tensor(r, [R]), ct = be.tensor(c, [C]), st = be.tensor(s, [3]);
  const e = expr("x * a + exp(b) * k - sq(z)");
  const args = {
    x: { t: x, bc: "full" as const },
    a: { t: rt, bc: "row" as const },
    b: { t: ct, bc: "col" as const },
    z: { t: st, bc: "scalar" as const, slot: 2 },
    k: { c: 0.25 },
  };
  const host = (i: number, j: number) => X[i * C + j] * r[i] + Math.exp(c[j]) * 0.25 - s[2] * s[2];
  const sp = { kind: "dense" as const, rows: R, cols: C };
  const out = be.zeros([R, C]);
  be.map(e, args, sp, out);
  const want = Array.from({ length: R * C }, (_, k) => host(Math.floor(k / C), k % C));
  close(await read(out), want, 1e-6, "map");
  be.map(e, args, sp, out, true);
  close(await read(out), want.map((v) => 2 * v), 1e-6, "map accumulate");
  const tot = be.zeros([4]), rows = be.zeros([R]), cols = be.zeros([C]);
  be.reduce(e, args, sp, "scalar", tot, { slot: 1 });
  be.reduce(e, args, sp, "rows", rows);
  be.reduce(e, args, sp, "cols", cols);
  be.reduce(e, args, sp, "cols", cols, { accumulate: true });
  close([(await read(tot))[1]], [want.reduce((a, b) => a + b, 0)], 1e-6, "sum");
  close(
    await read(rows),
    Array.from({ length: R }, (_, i) => want.slice(i * C, i * C + C).reduce((a, b) => a + b)),
    1e-6,
    "rows",
  );
  close(
    await read(cols),
    Array.from({ length: C }, (_, j) => 2 * want.filter((_, k) => k % C === j).reduce((a, b) => a + b)),
    1e-6,
    "cols",
  );
  // Argument errors are MonobenchErrors on every backend (shared checks).
  assert.throws(() => be.map(e, { ...args, q: { c: 1 } }, sp, out), MonobenchError);
  assert.throws(() => be.map(e, { x: args.x, a: args.a, b: args.b, k: args.k }, sp, out), MonobenchError);
  assert.throws(() => be.map(e, { ...args, a: { t: ct, bc: "row" } }, sp, out), MonobenchError);
  assert.throws(() => be.map(e, args, sp, be.zeros([R])), MonobenchError);
});

Deno.test("map and reduce: entries of codes (row, col, full arguments; padding zeroed)", async () => {
  const rng = new Rng(3);
  const R = 6, C = 9;
  const { codes, codesT } = pattern(be, rng, R, C, 0.4);
  const ent = await entriesOf(codes);
  const cap = codes.cap;
  const vals = rng.normals(cap), r = rng.normals(R), c = rng.normals(C);
  const vt = be.tensor(vals, [cap]), rt = be.tensor(r, [R]), ct = be.tensor(c, [C]);
  const e = expr("v * a + b");
  const args = {
    v: { t: vt, bc: "full" as const },
    a: { t: rt, bc: "row" as const },
    b: { t: ct, bc: "col" as const },
  };
  const sp = { kind: "entries" as const, codes, codesT };
  const out = be.tensor(new Float32Array(cap).fill(7), [cap]);
  be.map(e, args, sp, out);
  const got = await read(out);
  const want = new Float64Array(cap);
  ent.forEach(([i, j], k) => want[k] = vals[k] * r[i] + c[j]);
  close(got, want, 1e-6, "entries map (and zeros past the valid entries)");
  const rows = be.zeros([R]), cols = be.zeros([C]), tot = be.zeros([1]);
  be.reduce(e, args, sp, "rows", rows);
  be.reduce(e, args, sp, "cols", cols);
  be.reduce(e, args, sp, "scalar", tot);
  const wr = new Float64Array(R), wc = new Float64Array(C);
  ent.forEach(([i, j], k) => (wr[i] += want[k], wc[j] += want[k]));
  close(await read(rows), wr, 1e-6, "entries → rows");
  close(await read(cols), wc, 1e-6, "entries → cols");
  close(await read(tot), [want.reduce((a, b) => a + b, 0)], 1e-6, "entries → scalar");
  assert.throws(() => be.reduce(e, args, { kind: "entries", codes }, "cols", cols), MonobenchError);
});

function hostMatmul(
  A: Float32Array,
  Bm: Float32Array,
  M: number,
  N: number,
  K: number,
  ta: boolean,
  tb: boolean,
) {
  const C = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        s += (ta ? A[k * M + m] : A[m * K + k]) * (tb ? Bm[n * K + k] : Bm[k * N + n]);
      }
      C[m * N + n] = s;
    }
  }
  return C;
}

Deno.test("matmul: the four layouts, alpha and accumulate", async () => {
  const rng = new Rng(4);
  const M = 9, N = 6, K = 7;
  for (const ta of [false, true]) {
    for (const tb of [false, true]) {
      const A = rng.normals(M * K), Bm = rng.normals(K * N), C0 = rng.normals(M * N);
      const c = be.tensor(C0, [M, N]);
      be.matmul(be.tensor(A, ta ? [K, M] : [M, K]), be.tensor(Bm, tb ? [N, K] : [K, N]), c, {
        ta,
        tb,
        alpha: 0.5,
        accumulate: true,
      });
      const want = hostMatmul(A, Bm, M, N, K, ta, tb).map((v, i) => C0[i] + 0.5 * v);
      close(await read(c), want, 1e-5, `matmul ta=${ta} tb=${tb}`);
    }
  }
  assert.throws(() => be.matmul(be.zeros([2, 3]), be.zeros([2, 3]), be.zeros([2, 3])), MonobenchError);
});

Deno.test("sparse ops: spmm, sddmm, spmmT, gatherEntries, scatterEntries", async () => {
  const rng = new Rng(5);
  const R = 8, C = 11, d = 5;
  const { codes, codesT } = pattern(be, rng, R, C, 0.3, 40);
  const ent = await entriesOf(codes);
  const cap = codes.cap;
  const vals = rng.normals(cap), W = rng.normals(C * d), A = rng.normals(R * d), D = rng.normals(R * C);
  const vt = be.tensor(vals, [cap]),
    Wt = be.tensor(W, [C, d]),
    At = be.tensor(A, [R, d]),
    Dt = be.tensor(D, [R, C]);
  const out = be.zeros([R, d]);
  be.spmm(codes, vt, Wt, out, false);
  const w1 = new Float64Array(R * d);
  ent.forEach(([i, j], e) => {
    for (let k = 0; k < d; k++) w1[i * d + k] += vals[e] * W[j * d + k];
  });
  close(await read(out), w1, 1e-6, "spmm");
  const sd = be.tensor(new Float32Array(cap).fill(3), [cap]);
  be.sddmm(codes, At, Wt, sd, false);
  const w2 = new Float64Array(cap);
  ent.forEach(([i, j], e) => {
    for (let k = 0; k < d; k++) w2[e] += A[i * d + k] * W[j * d + k];
  });
  close(await read(sd), w2, 1e-6, "sddmm");
  const ot = be.tensor(new Float32Array(C * d).fill(9), [C, d]);
  be.spmmT(codes, codesT, vt, At, ot, false);
  const w3 = new Float64Array(C * d);
  ent.forEach(([i, j], e) => {
    for (let k = 0; k < d; k++) w3[j * d + k] += vals[e] * A[i * d + k];
  });
  close(await read(ot), w3, 1e-6, "spmmT (empty columns zeroed)");
  const g = be.zeros([cap]);
  be.gatherEntries(codes, Dt, g);
  const w4 = new Float64Array(cap);
  ent.forEach(([i, j], e) => w4[e] = D[i * C + j]);
  close(await read(g), w4, 0, "gatherEntries");
  const sc = be.tensor(D, [R, C]);
  be.scatterEntries(codes, vt, sc, true);
  const w5 = Float64Array.from(D);
  ent.forEach(([i, j], e) => w5[i * C + j] += vals[e]);
  close(await read(sc), w5, 1e-6, "scatterEntries accumulate");
  be.scatterEntries(codes, vt, sc, false);
  const w6 = new Float64Array(R * C);
  ent.forEach(([i, j], e) => w6[i * C + j] = vals[e]);
  close(await read(sc), w6, 0, "scatterEntries overwrite");
});

// ---- tape gradients vs finite differences of float64 host functions -----------------------

/** Check ∂L/∂P of the tape against central differences of `host` (float64). */
async function gradCheck(
  name: string,
  params: Record<string, { data: Float32Array; shape: number[] }>,
  build: (t: Tape, p: Record<string, Var>) => Var,
  host: (p: Record<string, Float64Array>) => number,
  tol = 2e-3,
): Promise<void> {
  const t = new Tape(be);
  const P: Record<string, Var> = {}, G: Record<string, Tensor> = {};
  for (const [n, { data, shape }] of Object.entries(params)) {
    G[n] = be.zeros(shape);
    P[n] = t.param(be.tensor(data, shape), G[n], n);
  }
  const L = build(t, P);
  t.backward([L]);
  const p64 = Object.fromEntries(Object.entries(params).map(([n, { data }]) => [n, Float64Array.from(data)]));
  close(await read(L.t), [host(p64)], 1e-5, `${name}: loss`);
  for (const n of Object.keys(params)) {
    const g = await read(G[n]), a = p64[n];
    for (let k = 0; k < a.length; k++) {
      const old = a[k], h = 1e-6 * Math.max(1, Math.abs(old));
      a[k] = old + h;
      const up = host(p64);
      a[k] = old - h;
      const dn = host(p64);
      a[k] = old;
      const fd = (up - dn) / (2 * h);
      assert.ok(
        Math.abs(g[k] - fd) <= tol * (1 + Math.abs(fd)),
        `${name}: d${n}[${k}] tape ${g[k]} vs finite difference ${fd}`,
      );
    }
  }
}

Deno.test("tape: map and sum gradients (full, row, col, scalar arguments; custom derivatives)", async () => {
  const rng = new Rng(6);
  const R = 4, C = 3;
  const X = rng.normals(R * C), r = rng.normals(R), c = rng.normals(C), s = rng.normals(1);
  const P = {
    X: { data: X, shape: [R, C] },
    r: { data: r, shape: [R] },
    c: { data: c, shape: [C] },
    s: { data: s, shape: [1] },
  };
  await gradCheck(
    "map/sum",
    P,
    (t, p) => {
      const h = t.map("tanh(x * a) + exp(b) * s", { x: p.X, a: row(p.r), b: col(p.c), s: p.s });
      const perRow = t.sum("sq(h) * b", { h, b: col(p.c) }, "rows");
      const perCol = t.sum("h * a", { h, a: row(p.r) }, "cols");
      return t.map("u + v * 0.5", { u: t.sum("q * q", { q: perRow }), v: t.sum("q", { q: perCol }) });
    },
    (p) => {
      let u = 0;
      const pc = new Float64Array(C);
      for (let i = 0; i < R; i++) {
        let pr = 0;
        for (let j = 0; j < C; j++) {
          const h = Math.tanh(p.X[i * C + j] * p.r[i]) + Math.exp(p.c[j]) * p.s[0];
          pr += h * h * p.c[j];
          pc[j] += h * p.r[i];
        }
        u += pr * pr;
      }
      return u + 0.5 * pc.reduce((a, b) => a + b, 0);
    },
  );
  // A custom derivative replaces the symbolic one (straight-through estimator of a jump).
  const t = new Tape(be);
  const g = be.zeros([3]);
  const z = t.param(be.tensor(new Float32Array([0.5, 1.5, 3]), [3]), g);
  t.backward([t.sum("step(z - 1)", { z }, "scalar", { grads: { z: "rect(z - 1)" } })]);
  assert.deepEqual(
    Array.from(await read(g)),
    [0, 0, 0].map((_, i) => Math.abs([0.5, 1.5, 3][i] - 1) < 0.5 ? 1 : 0),
  );
});

Deno.test("tape: matmul gradients in the four layouts", async () => {
  const rng = new Rng(7);
  const M = 3, N = 4, K = 5;
  for (const ta of [false, true]) {
    for (const tb of [false, true]) {
      const A = rng.normals(M * K), Bm = rng.normals(K * N);
      await gradCheck(
        `matmul ta=${ta} tb=${tb}`,
        { A: { data: A, shape: ta ? [K, M] : [M, K] }, B: { data: Bm, shape: tb ? [N, K] : [K, N] } },
        (t, p) => t.sum("sq(c) + c", { c: t.matmul(p.A, p.B, { ta, tb, alpha: 0.7 }) }),
        (p) => {
          let s = 0;
          for (let m = 0; m < M; m++) {
            for (let n = 0; n < N; n++) {
              let c = 0;
              for (let k = 0; k < K; k++) {
                c += (ta ? p.A[k * M + m] : p.A[m * K + k]) * (tb ? p.B[n * K + k] : p.B[k * N + n]);
              }
              c *= 0.7;
              s += c * c + c;
            }
          }
          return s;
        },
      );
    }
  }
});

Deno.test("tape: sparse gradients (sddmm, spmm, spmmT, gatherEntries, scatterEntries, entry reductions)", async () => {
  const rng = new Rng(8);
  const R = 5, C = 6, d = 3;
  const { codes, codesT } = pattern(be, rng, R, C, 0.4);
  const p: Pattern = { codes, codesT };
  const ent = await entriesOf(codes);
  const A = rng.normals(R * d), W = rng.normals(C * d), D = rng.normals(R * C), b = rng.normals(C);
  await gradCheck(
    "sparse chain",
    {
      A: { data: A, shape: [R, d] },
      W: { data: W, shape: [C, d] },
      D: { data: D, shape: [R, C] },
      b: { data: b, shape: [C] },
    },
    (t, q) => {
      const z = t.map("s + b + g", { s: t.sddmm(p, q.A, q.W), b: col(q.b), g: t.gatherEntries(p, q.D) });
      const f = t.map("tanh(z)", { z });
      const xh = t.spmm(f, q.W); // [R, d]
      const wt = t.spmmT(f, q.A); // [C, d]
      const dense = t.scatterEntries(f); // [R, C]
      const perLat = t.sum("sq(f)", { f }, "cols");
      const perRow = t.sum("f", { f }, "rows");
      return t.map("a + b + c + e + g", {
        a: t.sum("sq(x)", { x: xh }),
        b: t.sum("x * 0.5", { x: wt }),
        c: t.sum("sq(x) * 0.25", { x: dense }),
        e: t.sum("sq(u)", { u: perLat }),
        g: t.sum("sq(v)", { v: perRow }),
      });
    },
    (q) => {
      const f = ent.map(([i, j]) => {
        let s = q.b[j] + q.D[i * C + j];
        for (let k = 0; k < d; k++) s += q.A[i * d + k] * q.W[j * d + k];
        return Math.tanh(s);
      });
      const xh = new Float64Array(R * d),
        wt = new Float64Array(C * d),
        pl = new Float64Array(C),
        pr = new Float64Array(R);
      let c = 0;
      ent.forEach(([i, j], e) => {
        for (let k = 0; k < d; k++) {
          xh[i * d + k] += f[e] * q.W[j * d + k];
          wt[j * d + k] += f[e] * q.A[i * d + k];
        }
        c += 0.25 * f[e] * f[e];
        pl[j] += f[e] * f[e];
        pr[i] += f[e];
      });
      const ss = (a: Float64Array) => a.reduce((x, y) => x + y * y, 0);
      return ss(xh) + 0.5 * wt.reduce((x, y) => x + y, 0) + c + ss(pl) + ss(pr);
    },
  );
});

Deno.test("tape: selection, pooling and misuse", async () => {
  const rng = new Rng(9);
  const t = new Tape(be);
  const x = t.input(be.tensor(rng.normals(20), [4, 5]));
  const p1 = t.select(x, t.kthLargest(x, 6), { cap: 20 });
  assert.equal((await be.read(p1.codes.rowPtr) as Uint32Array)[4], 6, "top 6 of 20 distinct values");
  const k = t.kthLargestRows(x, 2);
  const p2 = t.select(x, row(k), { cap: 20 });
  const rp = await be.read(p2.codes.rowPtr) as Uint32Array;
  for (let r = 0; r < 4; r++) assert.ok(rp[r + 1] - rp[r] <= 2);
  // Buffers are reused after reset: the same op sequence allocates nothing new.
  const before = t.alloc([3, 3]);
  t.reset();
  assert.equal(t.alloc([3, 3]), before);
  assert.throws(() => t.map("a + b", { a: x, b: t.input(be.zeros([3])) }), MonobenchError);
  assert.throws(() => t.map("a", { __a: x } as never), MonobenchError);
  assert.throws(() => new Tape(be, false).backward([]), MonobenchError);
});
