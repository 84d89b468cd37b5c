/**
 * WebGPU backend vs the CPU oracle, op by op, on random data with awkward sizes. Each test runs on
 * two devices: default limits, and a 64 KiB max storage binding so that the split (chunked) paths
 * run on small data. All tests are ignored when no WebGPU adapter is available.
 */
import assert from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend, Codes, CodesT, Tensor } from "../src/backend/types.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../src/backend/webgpu/backend.ts";
import { settleDawn } from "../src/backend/webgpu/device.ts";
import { expr } from "../src/compute/expr.ts";
import { col, Tape } from "../src/compute/tape.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";

const SMALL_BINDING = 64 * 1024;

/** MONOBENCH_TEST_GPU=dawn runs this suite on Dawn (npm:webgpu) instead of Deno's WebGPU. */
const KIND = Deno.env.get("MONOBENCH_TEST_GPU") === "dawn" ? "dawn" : "webgpu";

async function detectAdapter(): Promise<boolean> {
  if (KIND === "dawn") return true;
  try {
    const gpu = (navigator as unknown as { gpu?: GPU }).gpu;
    return !!(gpu && await gpu.requestAdapter());
  } catch {
    return false;
  }
}
const HAS_GPU = await detectAdapter();

let devices: [string, WebGpuBackend][] | null = null;
async function gpus(): Promise<[string, WebGpuBackend][]> {
  devices ??= [
    ["default", await createWebGpuBackend(KIND)],
    ["64KiB-bindings", await createWebGpuBackend(KIND, { maxBindingBytes: SMALL_BINDING })],
  ];
  return devices;
}

function gtest(name: string, fn: (gpu: WebGpuBackend, label: string) => Promise<void>): void {
  Deno.test({
    name: `webgpu: ${name}`,
    ignore: !HAS_GPU,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      for (const [label, gpu] of await gpus()) {
        try {
          await fn(gpu, label);
        } catch (e) {
          if (e instanceof Error) e.message = `[${label}] ${e.message}`;
          throw e;
        }
      }
    },
  });
}

const cpu = new CpuBackend();

/** The same data on both backends. */
function both(gpu: Backend, data: Float32Array | Uint32Array, shape: number[]): [Tensor, Tensor] {
  return [cpu.tensor(data, shape), gpu.tensor(data, shape)];
}

async function readBoth(gpu: Backend, c: Tensor, g: Tensor): Promise<[Float32Array, Float32Array]> {
  return [(await cpu.read(c)) as Float32Array, (await gpu.read(g)) as Float32Array];
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** |g − c| <= atol + rtol·|c| elementwise (NaN must match NaN). */
function assertClose(
  g: ArrayLike<number>,
  c: ArrayLike<number>,
  atol: number,
  rtol: number,
  what: string,
): void {
  assert.equal(g.length, c.length, `${what}: length`);
  for (let i = 0; i < c.length; i++) {
    const a = g[i], b = c[i];
    if (Number.isNaN(b) && Number.isNaN(a)) continue;
    if (a === b) continue;
    if (!(Math.abs(a - b) <= atol + rtol * Math.abs(b))) {
      assert.fail(`${what}: element ${i}: gpu ${a} vs cpu ${b} (atol ${atol}, rtol ${rtol})`);
    }
  }
}

/** Close relative to the array's magnitude. */
function assertNear(g: ArrayLike<number>, c: ArrayLike<number>, what: string, rel = 2e-5): void {
  assertClose(g, c, rel * (maxAbs(c) + 1e-30) + 1e-30, rel, what);
}

function bitsEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.deepEqual(
    new Uint32Array(a.buffer, a.byteOffset, a.length),
    new Uint32Array(b.buffer, b.byteOffset, b.length),
    what,
  );
}

/** Random [B, w] matrix with exact zeros, negatives and ties. */
function sparseish(rng: Rng, n: number, zeroFrac = 0.5, levels = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (rng.next() < zeroFrac) continue;
    let v = rng.normal();
    if (levels > 0) v = Math.round(v * levels) / levels;
    a[i] = v;
  }
  return a;
}

/** Position q of the backend's jittered strided sample (kernels.ts samplePos). */
function samplePos(q: number, st: number): number {
  return q * st + ((Math.imul(q, 2654435761) >>> 0) >>> 16) % st;
}

/** Rows whose sampled columns (1024 per row) hold the largest values. */
function adversarialRows(rng: Rng, B: number, w: number): Float32Array {
  const v = rng.uniforms(B * w);
  const S = Math.min(w, 1024), st = Math.floor(w / S);
  for (let b = 0; b < B; b++) {
    for (let q = 0; q < S; q++) v[b * w + Math.min(samplePos(q, st), w - 1)] += 100;
  }
  return v;
}

/** CSR codes of a random sparse [B, w] matrix built by the CPU gather, uploaded to both backends. */
async function randomCodes(
  gpu: Backend,
  rng: Rng,
  B: number,
  w: number,
  density: number,
  cap?: number,
): Promise<{ c: Codes; g: Codes; total: number }> {
  const v = new Float32Array(B * w);
  for (let i = 0; i < v.length; i++) if (rng.next() < density) v[i] = 0.05 + rng.next();
  // a few empty rows
  if (B > 3) v.fill(0, w, 2 * w);
  const capacity = cap ?? Math.max(1, Math.ceil(B * w * density * 1.5) + 8);
  const c = cpu.codes(B, w, capacity);
  const t = cpu.tensor(new Float32Array([0]), [1]);
  cpu.gather(cpu.tensor(v, [B, w]), { kind: "scalar", t, slot: 0 }, null, true, c);
  const g = gpu.codes(B, w, capacity);
  gpu.write(g.rowPtr, (await cpu.read(c.rowPtr)) as Uint32Array);
  gpu.write(g.idx, (await cpu.read(c.idx)) as Uint32Array);
  gpu.write(g.val, (await cpu.read(c.val)) as Float32Array);
  const total = ((await cpu.read(c.rowPtr)) as Uint32Array)[B];
  return { c, g, total };
}

function transposeBoth(gpu: Backend, c: Codes, g: Codes): [CodesT, CodesT] {
  const ct = cpu.codesT(c.rows, c.cols, c.cap), gt = gpu.codesT(g.rows, g.cols, g.cap);
  cpu.transpose(c, ct);
  gpu.transpose(g, gt);
  return [ct, gt];
}

// ---- memory ---------------------------------------------------------------------------------

gtest("tensor/read/write/fill/copy/zeros", async (gpu) => {
  const rng = new Rng(1);
  const data = rng.normals(20000);
  const t = gpu.tensor(data, [100, 200]);
  assert.deepEqual(await gpu.read(t), data);
  const u = gpu.tensor(new Uint32Array([1, 2, 0xffffffff]), [3]);
  assert.equal(u.dtype, "u32");
  assert.deepEqual(await gpu.read(u), new Uint32Array([1, 2, 0xffffffff]));
  gpu.write(t, new Float32Array([7, 8, 9]), 19997);
  const z = gpu.zeros([5, 3]);
  assert.deepEqual(await gpu.read(z), new Float32Array(15));
  assert.deepEqual(await gpu.read(gpu.zeros([0, 4])), new Float32Array(0));
  const r = (await gpu.read(t)) as Float32Array;
  assert.deepEqual(r.subarray(19997), new Float32Array([7, 8, 9]));
  assert.deepEqual(r.subarray(0, 19997), data.subarray(0, 19997));
  // fill: f32 values incl. -Infinity and -0 (bit-exact), u32, then copy
  const f = gpu.zeros([33333]);
  gpu.fill(f, -Infinity);
  assert.ok(((await gpu.read(f)) as Float32Array).every((v) => v === -Infinity));
  gpu.fill(f, -0);
  assert.ok(((await gpu.read(f)) as Float32Array).every((v) => Object.is(v, -0)));
  gpu.fill(u, 5);
  assert.deepEqual(await gpu.read(u), new Uint32Array([5, 5, 5]));
  const c = gpu.zeros([100, 200]);
  gpu.copy(t, c);
  gpu.fill(t, 2.5); // enqueued after the copy: must not affect it
  assert.deepEqual(await gpu.read(c), r);
  assert.ok(((await gpu.read(t)) as Float32Array).every((v) => v === 2.5));
  // a u32 write into an f32 tensor converts values like the CPU backend
  const conv = gpu.zeros([2]);
  gpu.write(conv, new Uint32Array([3, 4]));
  assert.deepEqual(await gpu.read(conv), new Float32Array([3, 4]));
  assert.throws(() => gpu.write(z, new Float32Array(16)), MonobenchError);
  assert.throws(() => gpu.tensor(new Float32Array(5), [2, 3]), MonobenchError);
  for (const x of [t, u, z, f, c, conv]) gpu.dispose(x);
});

gtest("ops run in call order with host numbers captured at call time", async (gpu) => {
  // Thousands of dispatches (more than one uniform ring / batch) before a single read.
  const rng = new Rng(2);
  const n = 3000;
  const vals = rng.normals(n);
  const [vc, vg] = both(gpu, vals, [n]);
  const slots = 700;
  const oc = cpu.zeros([slots]), og = gpu.zeros([slots]);
  for (let s = 0; s < slots; s++) {
    const k = 1 + ((s * 37) % n);
    cpu.kthLargest(vc, k, oc, s);
    gpu.kthLargest(vg, k, og, s);
  }
  const [c, g] = await readBoth(gpu, oc, og);
  bitsEqual(g, c, "kth sequence");
  // writes interleaved with enqueued work
  const t = gpu.zeros([4]);
  const acc = gpu.zeros([4]);
  const ones = gpu.tensor(new Float32Array([1, 1, 1, 1]), [4]);
  for (let i = 1; i <= 5; i++) {
    gpu.write(t, new Float32Array([i, i, i, i]));
    gpu.adam(acc, t, gpu.zeros([4]), gpu.zeros([4]), { lr: i, beta1: 0, beta2: 0, eps: 0, step: 1 }, null);
  }
  // adam with beta=0, eps=0: p -= lr * g/|g| = lr  => acc = -(1+2+3+4+5)
  assert.deepEqual(await gpu.read(acc), new Float32Array([-15, -15, -15, -15]));
  gpu.dispose(ones);
});

// ---- encoder ----------------------------------------------------------------------------------

gtest("encode (scalar and vec4 paths, edges, splits)", async (gpu) => {
  const rng = new Rng(3);
  for (const [B, d, w] of [[1, 5, 7], [70, 13, 300], [130, 64, 257], [65, 36, 600], [3, 1, 129]]) {
    const x = rng.normals(B * d),
      W = rng.normals(w * d, 0.3),
      be = rng.normals(w, 0.5),
      bd = rng.normals(d, 0.2);
    const [xc, xg] = both(gpu, x, [B, d]), [wc, wg] = both(gpu, W, [w, d]);
    const [bec, beg] = both(gpu, be, [w]), [bdc, bdg] = both(gpu, bd, [d]);
    const pc = cpu.zeros([B, w]), pg = gpu.zeros([B, w]);
    gpu.fill(pg, 123); // must be overwritten
    cpu.encode(xc, wc, bec, bdc, pc);
    gpu.encode(xg, wg, beg, bdg, pg);
    const [c, g] = await readBoth(gpu, pc, pg);
    assertClose(g, c, 1e-5 * Math.sqrt(d) * (maxAbs(c) + 1), 1e-5, `encode B=${B} d=${d} w=${w}`);
    assert.ok(g.every((v) => v >= 0));
    for (const t of [xg, wg, beg, bdg, pg]) gpu.dispose(t);
  }
});

// ---- selection --------------------------------------------------------------------------------

gtest("kthLargest (ties, negatives, ±0, NaN, k edge cases, multi-chunk)", async (gpu) => {
  const rng = new Rng(4);
  const cases: Float32Array[] = [
    sparseish(rng, 1),
    sparseish(rng, 1000, 0.3, 4),
    sparseish(rng, 50000, 0.9),
    rng.normals(20001),
    // one first-digit bucket with distinct lower digits, more keys than the 64KiB device's
    // candidate capacity: full passes for the last two digits there
    rng.uniforms(40000, 1, 1.25),
  ];
  const special = new Float32Array([0, -0, 1, -1, Infinity, -Infinity, NaN, 1, 1, 0, -0, 2]);
  cases.push(special);
  // Adversarial for the sample (65536 of 131072 values on the default device): every sampled
  // value is larger than every other one, so the sampled threshold overshoots and the exact
  // fallback must run.
  const adv = rng.uniforms(131072);
  for (let q = 0; q < 65536; q++) adv[samplePos(q, 2)] += 1000;
  cases.push(adv);
  for (const v of cases) {
    const [vc, vg] = both(gpu, v, [v.length]);
    const ks = [0, 1, 2, 3, Math.floor(v.length / 2), v.length - 1, v.length, v.length + 1, 7.5];
    if (v === adv) ks.push(v.length / 2 + 10, 3000);
    const oc = cpu.zeros([ks.length + 1]), og = gpu.zeros([ks.length + 1]);
    ks.forEach((k, s) => {
      cpu.kthLargest(vc, k, oc, s + 1);
      gpu.kthLargest(vg, k, og, s + 1);
    });
    const [c, g] = await readBoth(gpu, oc, og);
    bitsEqual(g, c, `kthLargest n=${v.length}`);
    gpu.dispose(vg);
  }
});

gtest("kthLargestRows (mask, too few eligible, ties, B=1, large buckets)", async (gpu) => {
  const rng = new Rng(5);
  // [B, w, tie levels, zero fraction]. The last two cases put > 1024 keys (the in-workgroup
  // candidate capacity) in the chosen first-digit bucket, which takes the full-pass path; zero
  // fraction −1: values in [1, 1.25), one first-digit bucket with distinct lower digits; −2: the
  // sampled threshold overshoots (too few candidates).
  const cases: [number, number, number, number][] = [
    [1, 1, 0, 0.3],
    [1, 300, 3, 0.3],
    [9, 301, 0, 0.3],
    [40, 517, 2, 0.3],
    [3, 3000, 0, 0.9],
    [2, 3000, 0, -1],
    [2, 4096, 0, -2],
  ];
  for (const [B, w, levels, zeros] of cases) {
    // −2: adversarial for the row sample (1024 of 4096 columns): the sampled ones are the largest
    const v = zeros === -1
      ? rng.uniforms(B * w, 1, 1.25)
      : zeros === -2
      ? adversarialRows(rng, B, w)
      : sparseish(rng, B * w, zeros, levels);
    const [vc, vg] = both(gpu, v, [B, w]);
    const m = new Uint32Array(w);
    for (let j = 0; j < w; j++) m[j] = rng.next() < 0.6 ? 1 : 0;
    const [mc, mg] = both(gpu, m, [w]);
    for (const k of [0, 1, 2, 5, 64, Math.floor(w * 0.5), w, w + 1]) {
      for (const useMask of [false, true]) {
        const oc = cpu.zeros([B]), og = gpu.zeros([B]);
        cpu.kthLargestRows(vc, k, useMask ? mc : null, oc);
        gpu.kthLargestRows(vg, k, useMask ? mg : null, og);
        const [c, g] = await readBoth(gpu, oc, og);
        bitsEqual(g, c, `kthLargestRows B=${B} w=${w} k=${k} mask=${useMask}`);
        gpu.dispose(og);
      }
    }
    gpu.dispose(vg);
    gpu.dispose(mg);
  }
});

// ---- gather / transpose -----------------------------------------------------------------------

async function compareCodes(gpu: Backend, c: Codes, g: Codes, what: string): Promise<number> {
  const rc = (await cpu.read(c.rowPtr)) as Uint32Array, rg = (await gpu.read(g.rowPtr)) as Uint32Array;
  assert.deepEqual(rg, rc, `${what}: rowPtr`);
  const total = rc[c.rows];
  const ic = (await cpu.read(c.idx)) as Uint32Array, ig = (await gpu.read(g.idx)) as Uint32Array;
  const vc = (await cpu.read(c.val)) as Float32Array, vg = (await gpu.read(g.val)) as Float32Array;
  assert.deepEqual(ig.subarray(0, total), ic.subarray(0, total), `${what}: idx`);
  bitsEqual(vg.subarray(0, total), vc.subarray(0, total), `${what}: val`);
  return total;
}

gtest("gather (scalar/rows threshold, strict, mask, cap overflow, empty rows)", async (gpu) => {
  const rng = new Rng(6);
  for (const [B, w] of [[1, 1], [1, 37], [13, 300], [45, 700]]) {
    const v = sparseish(rng, B * w, 0.4, 2); // ties at the threshold
    if (B > 2) v.fill(0, 0, w); // an empty row
    const [vc, vg] = both(gpu, v, [B, w]);
    const thrRows = new Float32Array(B);
    for (let b = 0; b < B; b++) thrRows[b] = Math.round(rng.normal() * 2) / 2;
    const [trc, trg] = both(gpu, thrRows, [B]);
    const [tsc, tsg] = both(gpu, new Float32Array([9, 0.5, -1]), [3]);
    const m = new Uint32Array(w).map(() => (rng.next() < 0.7 ? 1 : 0));
    const [mc, mg] = both(gpu, m, [w]);
    for (const strict of [false, true]) {
      for (const kind of ["scalar", "rows"] as const) {
        for (const useMask of [false, true]) {
          const caps = strict && useMask && kind === "rows" ? [Math.max(1, Math.floor(B * w / 7)), 3] : [];
          for (const cap of [Math.min(B * w, 12000), ...caps]) {
            const c = cpu.codes(B, w, cap), g = gpu.codes(B, w, cap);
            const tc = kind === "scalar" ? { kind, t: tsc, slot: 1 } as const : { kind, t: trc } as const;
            const tg = kind === "scalar" ? { kind, t: tsg, slot: 1 } as const : { kind, t: trg } as const;
            cpu.gather(vc, tc, useMask ? mc : null, strict, c);
            gpu.gather(vg, tg, useMask ? mg : null, strict, g);
            await compareCodes(
              gpu,
              c,
              g,
              `gather B=${B} w=${w} ${kind} strict=${strict} mask=${useMask} cap=${cap}`,
            );
            gpu.disposeCodes(g);
          }
        }
      }
    }
    for (const t of [vg, trg, tsg, mg]) gpu.dispose(t);
  }
});

gtest("transpose (counting sort; order inside a column is free)", async (gpu) => {
  const rng = new Rng(7);
  const cases: [number, number, number, number | undefined][] = [
    [1, 5, 0.5, undefined],
    [20, 300, 0.1, undefined],
    [50, 400, 0.3, 500],
  ];
  for (const [B, w, dens, cap] of cases) {
    const { c, g } = await randomCodes(gpu, rng, B, w, dens, cap);
    const [ct, gt] = transposeBoth(gpu, c, g);
    const cpc = (await cpu.read(ct.colPtr)) as Uint32Array, cpg = (await gpu.read(gt.colPtr)) as Uint32Array;
    assert.deepEqual(cpg, cpc, "colPtr");
    const rc = (await cpu.read(ct.row)) as Uint32Array, rg = (await gpu.read(gt.row)) as Uint32Array;
    const ec = (await cpu.read(ct.entry)) as Uint32Array, eg = (await gpu.read(gt.entry)) as Uint32Array;
    for (let j = 0; j < w; j++) {
      const pairs = (r: Uint32Array, e: Uint32Array) => {
        const out: string[] = [];
        for (let p = cpc[j]; p < cpc[j + 1]; p++) out.push(`${r[p]}:${e[p]}`);
        return out.sort();
      };
      assert.deepEqual(pairs(rg, eg), pairs(rc, ec), `column ${j}`);
    }
    gpu.disposeCodes(g);
    gpu.disposeCodes(gt);
  }
});

// ---- decode and losses ------------------------------------------------------------------------

gtest("decode (bias / no bias, Matryoshka groups, splits)", async (gpu) => {
  const rng = new Rng(8);
  for (
    const [B, w, d, groups] of [
      [1, 4, 3, [4]],
      [30, 300, 37, [300]],
      [30, 600, 37, [0, 37, 112, 300, 600]],
      [530, 90, 33, [10, 11, 90]],
      [2, 5, 4, [1, 5]], // vec4 paths from here
      [40, 600, 36, [100, 600]],
      [530, 90, 32, [10, 90]],
    ] as [number, number, number, number[]][]
  ) {
    const { c, g } = await randomCodes(gpu, rng, B, w, 0.08);
    const [Wc, Wg] = both(gpu, rng.normals(w * d), [w, d]);
    const [bc, bg] = both(gpu, rng.normals(d), [d]);
    for (const bias of [true, false]) {
      const G = groups.length;
      const oc = cpu.zeros([G, B, d]), og = gpu.zeros([G, B, d]);
      gpu.fill(og, 77);
      cpu.decode(c, Wc, bias ? bc : null, groups, oc);
      gpu.decode(g, Wg, bias ? bg : null, groups, og);
      const [rc, rg] = await readBoth(gpu, oc, og);
      assertNear(rg, rc, `decode B=${B} w=${w} d=${d} G=${G} bias=${bias}`);
      gpu.dispose(og);
    }
    gpu.disposeCodes(g);
    gpu.dispose(Wg);
    gpu.dispose(bg);
  }
});

gtest("reconLossGrad (G = 1 and 3, uneven weights)", async (gpu) => {
  const rng = new Rng(9);
  for (
    const [B, d, weights] of [[1, 3, [1]], [37, 29, [0.5, 0.25, 2]], [300, 70, [1, 1]]] as [
      number,
      number,
      number[],
    ][]
  ) {
    const G = weights.length;
    const [xc, xg] = both(gpu, rng.normals(B * d), [B, d]);
    const [hc, hg] = both(gpu, rng.normals(G * B * d), [G, B, d]);
    const gc = cpu.zeros([G, B, d]), gg = gpu.zeros([G, B, d]);
    const sc = cpu.zeros([4]), sg = gpu.zeros([4]);
    cpu.reconLossGrad(hc, xc, weights, gc, sc, 2);
    gpu.reconLossGrad(hg, xg, weights, gg, sg, 2);
    const [rc, rg] = await readBoth(gpu, gc, gg);
    assertNear(rg, rc, "gradS", 1e-6);
    const [s1, s2] = await readBoth(gpu, sc, sg);
    assertClose(s2, s1, 0, 1e-5, "loss");
    for (const t of [xg, hg, gg, sg]) gpu.dispose(t);
  }
});

gtest("auxLossGrad (normal and zero-variance residual)", async (gpu) => {
  const rng = new Rng(10);
  for (
    const [B, d, G, degenerate] of [[1, 4, 1, false], [50, 23, 2, false], [400, 50, 1, false], [
      8,
      5,
      2,
      true,
    ]] as [
      number,
      number,
      number,
      boolean,
    ][]
  ) {
    const x = rng.normals(B * d);
    const xh = rng.normals(G * B * d);
    if (degenerate) {
      // residual e = x − xhat is the same (exactly) in every row: zero variance, loss := 0
      for (let b = 0; b < B; b++) {
        for (let i = 0; i < d; i++) {
          const o = (G - 1) * B * d + b * d + i;
          xh[o] = Math.round(xh[o] * 8) / 8;
          x[b * d + i] = xh[o] + i;
        }
      }
    }
    const [xc, xg] = both(gpu, x, [B, d]), [hc, hg] = both(gpu, xh, [G, B, d]);
    const [ac, ag] = both(gpu, rng.normals(B * d, 0.5), [B, d]);
    const gc = cpu.zeros([1, B, d]), gg = gpu.zeros([1, B, d]);
    const sc = cpu.zeros([3]), sg = gpu.zeros([3]);
    cpu.auxLossGrad(xc, hc, ac, 0.03, gc, sc, 1);
    gpu.auxLossGrad(xg, hg, ag, 0.03, gg, sg, 1);
    const [rc, rg] = await readBoth(gpu, gc, gg);
    const [s1, s2] = await readBoth(gpu, sc, sg);
    if (degenerate || B === 1) {
      assert.equal(s1[1], 0);
      assert.equal(s2[1], 0);
    }
    assertClose(s2, s1, 1e-12, 1e-4, `aux loss B=${B}`);
    assertNear(rg, rc, `aux gradS B=${B}`, 1e-4);
    for (const t of [xg, hg, ag, gg, sg]) gpu.dispose(t);
  }
});

gtest("l1Grad", async (gpu) => {
  const rng = new Rng(11);
  const { c, g } = await randomCodes(gpu, rng, 40, 300, 0.1);
  const init = rng.normals(c.cap);
  const [gvc, gvg] = both(gpu, init, [c.cap]);
  const sc = cpu.zeros([2]), sg = gpu.zeros([2]);
  cpu.l1Grad(c, gvc, 0.25, sc, 1);
  gpu.l1Grad(g, gvg, 0.25, sg, 1);
  const [rc, rg] = await readBoth(gpu, gvc, gvg);
  assertClose(rg, rc, 1e-6, 1e-6, "gradVal");
  const [s1, s2] = await readBoth(gpu, sc, sg);
  assertClose(s2, s1, 0, 1e-5, "l1 loss");
});

// ---- backward ---------------------------------------------------------------------------------

gtest("decodeBackward (accumulate on/off, groups, splits)", async (gpu) => {
  const rng = new Rng(12);
  for (
    const [B, w, d, groups] of [
      [1, 3, 2, [3]],
      [30, 300, 37, [300]],
      [30, 600, 37, [37, 112, 300, 600]],
      [530, 90, 33, [10, 90]],
      [2, 5, 4, [1, 5]], // vec4 paths from here
      [40, 600, 36, [100, 600]],
      [530, 90, 32, [10, 90]],
    ] as [number, number, number, number[]][]
  ) {
    const G = groups.length;
    const { c, g } = await randomCodes(gpu, rng, B, w, 0.08);
    const [Wc, Wg] = both(gpu, rng.normals(w * d), [w, d]);
    const [sc, sg] = both(gpu, rng.normals(G * B * d), [G, B, d]);
    for (const accumulate of [false, true]) {
      const init = rng.normals(c.cap);
      const [gc, gg] = both(gpu, init, [c.cap]);
      cpu.decodeBackward(c, sc, Wc, groups, gc, accumulate);
      gpu.decodeBackward(g, sg, Wg, groups, gg, accumulate);
      const [rc, rg] = await readBoth(gpu, gc, gg);
      assertNear(rg, rc, `decodeBackward B=${B} G=${G} acc=${accumulate}`, 1e-5);
      gpu.dispose(gg);
    }
    gpu.disposeCodes(g);
    gpu.dispose(Wg);
    gpu.dispose(sg);
  }
});

gtest("latentGrads (only active latents touched, with/without gradWdec, groups, splits)", async (gpu) => {
  const rng = new Rng(13);
  for (
    const [B, w, d, groups] of [
      [1, 3, 2, [3]],
      [40, 300, 37, [300]],
      [30, 600, 37, [37, 112, 300, 600]],
      [530, 90, 33, [10, 90]],
      [2, 5, 4, [1, 5]], // vec4 paths from here
      [40, 600, 36, [100, 600]],
      [530, 90, 32, [10, 90]],
    ] as [number, number, number, number[]][]
  ) {
    const G = groups.length;
    const { c, g } = await randomCodes(gpu, rng, B, w, 0.05);
    const [ct, gt] = transposeBoth(gpu, c, g);
    const [gvc, gvg] = both(gpu, rng.normals(c.cap), [c.cap]);
    const [xc, xg] = both(gpu, rng.normals(B * d), [B, d]);
    const [bc, bg] = both(gpu, rng.normals(d), [d]);
    const [sc, sg] = both(gpu, rng.normals(G * B * d), [G, B, d]);
    for (const withWd of [true, false]) {
      const initWe = rng.normals(w * d), initBe = rng.normals(w), initWd = rng.normals(w * d);
      const [wec, weg] = both(gpu, initWe, [w, d]), [bec, beg] = both(gpu, initBe, [w]);
      const [wdc, wdg] = both(gpu, initWd, [w, d]);
      cpu.latentGrads(c, ct, gvc, xc, bc, sc, groups, wec, bec, withWd ? wdc : null);
      gpu.latentGrads(g, gt, gvg, xg, bg, sg, groups, weg, beg, withWd ? wdg : null);
      const cp = (await cpu.read(ct.colPtr)) as Uint32Array;
      for (
        const [c1, g1, init, what] of [[wec, weg, initWe, "gradWenc"], [
          wdc,
          wdg,
          initWd,
          "gradWdec",
        ]] as const
      ) {
        const [rc, rg] = await readBoth(gpu, c1, g1);
        assertNear(rg, rc, `${what} B=${B} G=${G}`, 1e-5);
        for (let j = 0; j < w; j++) {
          if (cp[j] === cp[j + 1] || (what === "gradWdec" && !withWd)) {
            bitsEqual(
              rg.subarray(j * d, j * d + d),
              init.subarray(j * d, j * d + d),
              `${what} row ${j} untouched`,
            );
          }
        }
      }
      const [rc, rg] = await readBoth(gpu, bec, beg);
      assertNear(rg, rc, "gradBenc", 1e-5);
      for (let j = 0; j < w; j++) {
        if (cp[j] === cp[j + 1]) assert.ok(Object.is(rg[j], initBe[j]), "benc untouched");
      }
      for (const t of [weg, beg, wdg]) gpu.dispose(t);
    }
    gpu.disposeCodes(g);
    gpu.disposeCodes(gt);
  }
});

gtest("bdecGrad (decode path on/off, accumulate on/off, splits)", async (gpu) => {
  const rng = new Rng(14);
  for (const [B, w, d] of [[1, 3, 2], [60, 300, 37], [530, 90, 33]]) {
    const { c, g } = await randomCodes(gpu, rng, B, w, 0.06);
    const [gvc, gvg] = both(gpu, rng.normals(c.cap), [c.cap]);
    const [Wc, Wg] = both(gpu, rng.normals(w * d), [w, d]);
    const [sc, sg] = both(gpu, rng.normals(2 * B * d), [2, B, d]);
    for (const withDecode of [true, false]) {
      for (const accumulate of [true, false]) {
        const [oc, og] = both(gpu, rng.normals(d), [d]);
        cpu.bdecGrad(c, gvc, Wc, sc, withDecode, oc, accumulate);
        gpu.bdecGrad(g, gvg, Wg, sg, withDecode, og, accumulate);
        const [rc, rg] = await readBoth(gpu, oc, og);
        assertNear(rg, rc, `bdecGrad B=${B} dec=${withDecode} acc=${accumulate}`, 1e-5);
        gpu.dispose(og);
      }
    }
    gpu.disposeCodes(g);
  }
});

// ---- optimiser --------------------------------------------------------------------------------

gtest("sumSquares (several tensors, multi-chunk)", async (gpu) => {
  const rng = new Rng(15);
  const ts = [rng.normals(1), rng.normals(40000), rng.normals(0), rng.normals(1037, 3)];
  const pairs = ts.map((a) => both(gpu, a, [a.length]));
  const sc = cpu.zeros([3]), sg = gpu.zeros([3]);
  cpu.sumSquares(pairs.map((p) => p[0]), sc, 2);
  gpu.sumSquares(pairs.map((p) => p[1]), sg, 2);
  const [a, b] = await readBoth(gpu, sc, sg);
  assertClose(b, a, 0, 1e-6, "sumSquares");
});

gtest("projectDecoderGrad and renormRows (zero rows, splits)", async (gpu) => {
  const rng = new Rng(16);
  for (const [w, d] of [[1, 1], [7, 5], [600, 37]]) {
    const W = rng.normals(w * d), G = rng.normals(w * d);
    W.fill(0, 0, d); // zero row
    const [wc, wg] = both(gpu, W, [w, d]), [gc, gg] = both(gpu, G, [w, d]);
    cpu.projectDecoderGrad(wc, gc);
    gpu.projectDecoderGrad(wg, gg);
    const [rc, rg] = await readBoth(gpu, gc, gg);
    assertClose(rg, rc, 1e-5, 1e-5, `projectDecoderGrad w=${w} d=${d}`);
    cpu.renormRows(wc);
    gpu.renormRows(wg);
    const [nc, ng] = await readBoth(gpu, wc, wg);
    assertClose(ng, nc, 1e-6, 1e-5, `renormRows w=${w} d=${d}`);
    bitsEqual(ng.subarray(0, d), new Float32Array(d), "zero row left unchanged");
    gpu.dispose(wg);
    gpu.dispose(gg);
  }
});

gtest("adam (clip on/off, several steps, multi-chunk)", async (gpu) => {
  const rng = new Rng(17);
  for (const n of [1, 5, 40001]) {
    const [pc, pg] = both(gpu, rng.normals(n), [n]);
    const mc = cpu.zeros([n]), mg = gpu.zeros([n]), vc = cpu.zeros([n]), vg = gpu.zeros([n]);
    for (let step = 1; step <= 4; step++) {
      const grad = rng.normals(n, step);
      const [gc, gg] = both(gpu, grad, [n]);
      const hp = { lr: 1e-3 * step, beta1: 0.9, beta2: 0.999, eps: 1e-8, step };
      const clipOn = step % 2 === 0;
      const nsc = cpu.zeros([2]), nsg = gpu.zeros([2]);
      cpu.sumSquares([gc], nsc, 1);
      gpu.sumSquares([gg], nsg, 1);
      cpu.adam(pc, gc, mc, vc, hp, clipOn ? { normSq: nsc, slot: 1, maxNorm: 0.5 } : null);
      gpu.adam(pg, gg, mg, vg, hp, clipOn ? { normSq: nsg, slot: 1, maxNorm: 0.5 } : null);
    }
    const [a, b] = await readBoth(gpu, pc, pg);
    assertClose(b, a, 1e-6, 1e-5, `adam param n=${n}`);
    const [m1, m2] = await readBoth(gpu, mc, mg);
    assertClose(m2, m1, 1e-6, 1e-4, `adam m n=${n}`);
    const [v1, v2] = await readBoth(gpu, vc, vg);
    assertClose(v2, v1, 1e-9, 1e-4, `adam v n=${n}`);
  }
});

// ---- training state ---------------------------------------------------------------------------

gtest("thresholdEma (first update, EMA, no entries)", async (gpu) => {
  const rng = new Rng(18);
  const { c, g } = await randomCodes(gpu, rng, 30, 200, 0.05);
  const empty = { c: cpu.codes(5, 10, 4), g: gpu.codes(5, 10, 4) };
  const [tc, tg] = both(gpu, new Float32Array([5, -1]), [2]);
  for (const [cc, gc, beta] of [[c, g, 0.9], [c, g, 0.99], [empty.c, empty.g, 0.5]] as const) {
    cpu.thresholdEma(cc, tc, 1, beta);
    gpu.thresholdEma(gc, tg, 1, beta);
    const [a, b] = await readBoth(gpu, tc, tg);
    assertClose(b, a, 0, 1e-6, `thresholdEma beta=${beta}`);
  }
});

gtest("updateDead (counters, mask, dead count, chunks)", async (gpu) => {
  const rng = new Rng(19);
  for (const [B, w] of [[1, 3], [20, 300], [10, 20000]]) {
    const { c } = await randomCodes(gpu, rng, B, w, 0.02, 3000);
    const ct = cpu.codesT(B, w, c.cap), gt = gpu.codesT(B, w, c.cap);
    cpu.transpose(c, ct);
    gpu.write(gt.colPtr, (await cpu.read(ct.colPtr)) as Uint32Array); // only colPtr is used
    const counter = new Float32Array(w).map(() => Math.floor(rng.next() * 100));
    const [cc, cg] = both(gpu, counter, [w]);
    const mc = cpu.zeros([w], "u32"), mg = gpu.zeros([w], "u32");
    const sc = cpu.zeros([2]), sg = gpu.zeros([2]);
    for (const deadAfter of [50, 77.5, 0]) {
      cpu.updateDead(ct, cc, deadAfter, mc, sc, 0);
      gpu.updateDead(gt, cg, deadAfter, mg, sg, 0);
      const [a, b] = await readBoth(gpu, cc, cg);
      bitsEqual(b, a, "counter");
      assert.deepEqual(await gpu.read(mg), await cpu.read(mc), "mask");
      const [s1, s2] = await readBoth(gpu, sc, sg);
      assert.deepEqual(s2, s1, "dead count");
    }
    gpu.disposeCodes(gt);
  }
});

// ---- one training step end to end -------------------------------------------------------------

gtest("BatchTopK / Matryoshka training step matches the CPU backend", async (gpu) => {
  const rng = new Rng(20);
  const B = 24, d = 12, w = 96, K = 4, groups = [12, 36, 96], G = groups.length;
  const be = [cpu, gpu] as const;
  const mk = (data: Float32Array, shape: number[]) => be.map((b) => b.tensor(data, shape));
  const x = mk(rng.normals(B * d), [B, d]);
  const Wenc = mk(rng.normals(w * d, 0.3), [w, d]), Wdec = mk(rng.normals(w * d, 0.3), [w, d]);
  const benc = mk(rng.normals(w, 0.1), [w]), bdec = mk(rng.normals(d, 0.1), [d]);
  const out = await Promise.all(be.map(async (b, i) => {
    const pre = b.zeros([B, w]);
    b.encode(x[i], Wenc[i], benc[i], bdec[i], pre);
    const thr = b.zeros([2]);
    b.kthLargest(pre, K * B, thr, 0);
    const codes = b.codes(B, w, K * B * 2);
    b.gather(pre, { kind: "scalar", t: thr, slot: 0 }, null, false, codes);
    const xhat = b.zeros([G, B, d]);
    b.decode(codes, Wdec[i], bdec[i], groups, xhat);
    const gradS = b.zeros([G, B, d]), stats = b.zeros([4]);
    b.reconLossGrad(xhat, x[i], groups.map(() => 1 / G), gradS, stats, 0);
    const gradVal = b.zeros([codes.cap]);
    b.decodeBackward(codes, gradS, Wdec[i], groups, gradVal, false);
    const ct = b.codesT(B, w, codes.cap);
    b.transpose(codes, ct);
    const gWe = b.zeros([w, d]), gbe = b.zeros([w]), gWd = b.zeros([w, d]), gbd = b.zeros([d]);
    b.latentGrads(codes, ct, gradVal, x[i], bdec[i], gradS, groups, gWe, gbe, gWd);
    b.bdecGrad(codes, gradVal, Wenc[i], gradS, true, gbd, false);
    b.projectDecoderGrad(Wdec[i], gWd);
    b.sumSquares([gWe, gbe, gWd, gbd], stats, 1);
    const hp = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 1 };
    const clip = { normSq: stats, slot: 1, maxNorm: 0.1 };
    for (const [p, gr] of [[Wenc[i], gWe], [benc[i], gbe], [Wdec[i], gWd], [bdec[i], gbd]]) {
      b.adam(p, gr, b.zeros(p.shape as number[]), b.zeros(p.shape as number[]), hp, clip);
    }
    b.renormRows(Wdec[i]);
    b.thresholdEma(codes, thr, 1, 0.99);
    return {
      stats: await b.read(stats) as Float32Array,
      Wenc: await b.read(Wenc[i]) as Float32Array,
      Wdec: await b.read(Wdec[i]) as Float32Array,
      bdec: await b.read(bdec[i]) as Float32Array,
      thr: await b.read(thr) as Float32Array,
      rowPtr: await b.read(codes.rowPtr),
    };
  }));
  const [c, g] = out;
  assert.deepEqual(g.rowPtr, c.rowPtr, "codes");
  assertClose(g.stats, c.stats, 0, 1e-4, "loss and grad norm");
  assertClose(g.thr, c.thr, 0, 1e-5, "threshold");
  for (const k of ["Wenc", "Wdec", "bdec"] as const) assertClose(g[k], c[k], 1e-5, 1e-4, k);
});

// ---- compute primitives (the tape's layer) -------------------------------------------------

gtest("map and reduce (dense and entries spaces, every broadcast, splits)", async (gpu) => {
  const rng = new Rng(31);
  const R = 300, C = 70; // 84 KB: two row chunks on the 64 KiB device
  const X = rng.normals(R * C), r = rng.normals(R), cv = rng.normals(C), s = rng.normals(2);
  const [xc, xg] = both(gpu, X, [R, C]), [rc, rg] = both(gpu, r, [R]), [cc, cg] = both(gpu, cv, [C]);
  const [sc, sg] = both(gpu, s, [2]);
  const e = expr("select(x > a, x * exp(b), relu(-x)) + k * z");
  const args = (x: Tensor, a: Tensor, b: Tensor, z: Tensor) => ({
    x: { t: x, bc: "full" as const },
    a: { t: a, bc: "row" as const },
    b: { t: b, bc: "col" as const },
    z: { t: z, bc: "scalar" as const, slot: 1 },
    k: { c: 0.75 },
  });
  const ac = args(xc, rc, cc, sc), ag = args(xg, rg, cg, sg);
  const sp = { kind: "dense" as const, rows: R, cols: C };
  for (const acc of [false, true]) {
    const [oc, og] = both(gpu, X, [R, C]);
    cpu.map(e, ac, sp, oc, acc);
    gpu.map(e, ag, sp, og, acc);
    const [a, b] = await readBoth(gpu, oc, og);
    assertNear(b, a, `map acc=${acc}`);
    for (const to of ["scalar", "rows", "cols"] as const) {
      const n = to === "scalar" ? 3 : to === "rows" ? R : C;
      const init = rng.normals(n);
      const [tc, tg] = both(gpu, init, [n]);
      cpu.reduce(e, ac, sp, to, tc, { accumulate: acc, slot: 2 });
      gpu.reduce(e, ag, sp, to, tg, { accumulate: acc, slot: 2 });
      const [u, v] = await readBoth(gpu, tc, tg);
      assertNear(v, u, `reduce ${to} acc=${acc}`, 1e-4);
    }
  }
  // Entries space.
  const B = 40, w = 33;
  const { c, g } = await randomCodes(gpu, rng, B, w, 0.3);
  const [ct, gt] = transposeBoth(gpu, c, g);
  const vals = rng.normals(c.cap);
  const [vc, vg] = both(gpu, vals, [c.cap]),
    [pc, pg] = both(gpu, rng.normals(B), [B]),
    [qc, qg] = both(gpu, rng.normals(w), [w]);
  const ee = expr("v * p - q / (1 + sq(v))");
  const ea = (v: Tensor, p: Tensor, q: Tensor) => ({
    v: { t: v, bc: "full" as const },
    p: { t: p, bc: "row" as const },
    q: { t: q, bc: "col" as const },
  });
  const spc = { kind: "entries" as const, codes: c, codesT: ct },
    spg = { kind: "entries" as const, codes: g, codesT: gt };
  const [mc, mg] = both(gpu, new Float32Array(c.cap).fill(5), [c.cap]);
  cpu.map(ee, ea(vc, pc, qc), spc, mc);
  gpu.map(ee, ea(vg, pg, qg), spg, mg);
  const [m1, m2] = await readBoth(gpu, mc, mg);
  assertNear(m2, m1, "entries map");
  for (const to of ["scalar", "rows", "cols"] as const) {
    const n = to === "scalar" ? 1 : to === "rows" ? B : w;
    const [tc, tg] = both(gpu, new Float32Array(n), [n]);
    cpu.reduce(ee, ea(vc, pc, qc), spc, to, tc);
    gpu.reduce(ee, ea(vg, pg, qg), spg, to, tg);
    const [u, v] = await readBoth(gpu, tc, tg);
    assertNear(v, u, `entries reduce ${to}`, 1e-4);
  }
});

gtest("matmul (four layouts, alpha, accumulate, block splits)", async (gpu) => {
  const rng = new Rng(32);
  const M = 150, N = 41, K = 130; // A, B and C blocks split on the 64 KiB device
  for (const ta of [false, true]) {
    for (const tb of [false, true]) {
      const [ac, ag] = both(gpu, rng.normals(M * K), ta ? [K, M] : [M, K]);
      const [bc, bg] = both(gpu, rng.normals(K * N), tb ? [N, K] : [K, N]);
      const [cc, cg] = both(gpu, rng.normals(M * N), [M, N]);
      for (const acc of [true, false]) {
        cpu.matmul(ac, bc, cc, { ta, tb, alpha: -0.5, accumulate: acc });
        gpu.matmul(ag, bg, cg, { ta, tb, alpha: -0.5, accumulate: acc });
      }
      const [a, b] = await readBoth(gpu, cc, cg);
      assertNear(b, a, `matmul ta=${ta} tb=${tb}`, 1e-4);
    }
  }
});

gtest("spmm, sddmm, spmmT, gatherEntries, scatterEntries (accumulate on/off, splits)", async (gpu) => {
  const rng = new Rng(33);
  const B = 130, w = 150, d = 130; // dense, W and A split on the 64 KiB device
  const { c, g } = await randomCodes(gpu, rng, B, w, 0.05);
  const [ct, gt] = transposeBoth(gpu, c, g);
  const [vc, vg] = both(gpu, rng.normals(c.cap), [c.cap]);
  const [Wc, Wg] = both(gpu, rng.normals(w * d), [w, d]), [Ac, Ag] = both(gpu, rng.normals(B * d), [B, d]);
  const [Dc, Dg] = both(gpu, rng.normals(B * w), [B, w]);
  for (const acc of [false, true]) {
    const [oc, og] = both(gpu, rng.normals(B * d), [B, d]);
    cpu.spmm(c, vc, Wc, oc, acc);
    gpu.spmm(g, vg, Wg, og, acc);
    const [a1, b1] = await readBoth(gpu, oc, og);
    assertNear(b1, a1, `spmm acc=${acc}`, 1e-4);
    const [sc, sg] = both(gpu, rng.normals(c.cap), [c.cap]);
    cpu.sddmm(c, Ac, Wc, sc, acc);
    gpu.sddmm(g, Ag, Wg, sg, acc);
    const [a2, b2] = await readBoth(gpu, sc, sg);
    assertNear(b2, a2, `sddmm acc=${acc}`, 1e-4);
    const [tc, tg] = both(gpu, rng.normals(w * d), [w, d]);
    cpu.spmmT(c, ct, vc, Ac, tc, acc);
    gpu.spmmT(g, gt, vg, Ag, tg, acc);
    const [a3, b3] = await readBoth(gpu, tc, tg);
    assertNear(b3, a3, `spmmT acc=${acc}`, 1e-4);
    const [xc, xg] = both(gpu, rng.normals(B * w), [B, w]);
    cpu.scatterEntries(c, vc, xc, acc);
    gpu.scatterEntries(g, vg, xg, acc);
    const [a4, b4] = await readBoth(gpu, xc, xg);
    assertNear(b4, a4, `scatterEntries acc=${acc}`);
  }
  const [ec, eg] = both(gpu, rng.normals(c.cap), [c.cap]);
  cpu.gatherEntries(c, Dc, ec);
  gpu.gatherEntries(g, Dg, eg);
  const [a5, b5] = await readBoth(gpu, ec, eg);
  bitsEqual(b5, a5, "gatherEntries");
});

gtest("tape: gradients of a sparse SAE-like loss match the CPU backend", async (gpu) => {
  const rng = new Rng(34);
  const B = 20, d = 8, w = 48;
  const data = {
    x: rng.normals(B * d),
    W: rng.normals(w * d, 0.4),
    b: rng.normals(w, 0.1),
    th: rng.normals(w, 0.1),
  };
  const run = async (be: Backend) => {
    const t = new Tape(be);
    const gW = be.zeros([w, d]), gb = be.zeros([w]), gth = be.zeros([w]);
    const x = t.input(be.tensor(data.x, [B, d]));
    const W = t.param(be.tensor(data.W, [w, d]), gW), b = t.param(be.tensor(data.b, [w]), gb);
    const th = t.param(be.tensor(data.th, [w]), gth);
    const z = t.map("z + b", { z: t.matmul(x, t.detach(W), { tb: true }), b: col(t.detach(b)) });
    const p = t.select(z, t.kthLargest(z, 3 * B), { cap: 4 * B });
    const f = t.map("z * sq(th)", { z: t.map("s + b", { s: t.sddmm(p, x, W), b: col(b) }), th: col(th) });
    const xh = t.spmm(f, W);
    const L = t.map("a + c", {
      a: t.sum("sq(xh - x)", { xh, x }),
      c: t.sum("sq(u)", { u: t.sum("f", { f }, "cols") }),
    });
    t.backward([L]);
    return [await be.read(L.t), await be.read(gW), await be.read(gb), await be.read(gth)] as Float32Array[];
  };
  const a = await run(cpu), b = await run(gpu);
  ["loss", "dW", "db", "dth"].forEach((n, i) => assertNear(b[i], a[i], n, 1e-4));
});

// Last: a Dawn device still alive when the module ends crashes the process at exit.
Deno.test({
  name: "webgpu: release the devices",
  ignore: !HAS_GPU,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    for (const [, g] of devices ?? []) g.destroy();
    devices = null;
    await settleDawn();
  },
});
