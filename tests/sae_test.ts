import assert from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend, Codes } from "../src/backend/types.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";
import {
  getFusedSae,
  getSae,
  groupBounds,
  groupSizes,
  listSaes,
  registerSae,
  resolveSaeConfig,
  type SaeConfig,
  type SaeVariant,
} from "../src/sae/mod.ts";
import { SaeEngine } from "../src/train/engine.ts";

async function readCodes(be: Backend, c: Codes) {
  const rowPtr = await be.read(c.rowPtr) as Uint32Array;
  const total = rowPtr[c.rows];
  return {
    rowPtr,
    idx: (await be.read(c.idx) as Uint32Array).slice(0, total),
    val: (await be.read(c.val) as Float32Array).slice(0, total),
  };
}

function cfgFor(variant: string, d: number, width: number, extra: Partial<SaeConfig> = {}): SaeConfig {
  return resolveSaeConfig(getSae(variant), { variant, d, width, ...extra });
}

/** Host reference: post-ReLU pre-activations (float64) from [ω, d] weights. */
function hostPre(
  x: Float32Array,
  B: number,
  d: number,
  w: number,
  Wenc: Float32Array,
  benc: Float32Array,
  bdec: Float32Array,
) {
  const pre = new Float64Array(B * w);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < w; j++) {
      let s = benc[j];
      for (let i = 0; i < d; i++) s += (x[b * d + i] - bdec[i]) * Wenc[j * d + i];
      pre[b * w + j] = Math.max(0, s);
    }
  }
  return pre;
}

Deno.test("registry: built-ins, unknown names, user variants", () => {
  assert.deepEqual(listSaes().slice(0, 4), ["batchtopk", "matryoshka", "topk", "relu"]);
  assert.throws(() => getSae("nope"), (e: Error) => {
    assert.ok(e instanceof MonobenchError);
    for (const n of ["batchtopk", "matryoshka", "topk", "relu"]) assert.match(e.message, new RegExp(n));
    return true;
  });
  const mine: SaeVariant = {
    ...getSae("topk"),
    name: "my-topk",
    description: "test",
    defaults: { k: 3, options: { foo: 1 } },
  };
  registerSae(mine);
  assert.equal(getSae("my-topk"), mine);
  assert.throws(() => registerSae(mine), MonobenchError);
  assert.throws(() => registerSae({ ...mine, name: "Bad Name" }), MonobenchError);
  const c = resolveSaeConfig(mine, { variant: "my-topk", d: 4, width: 8, options: { foo: 2 } });
  assert.equal(c.k, 3);
  assert.deepEqual(c.options, { foo: 2 });
  assert.throws(
    () => resolveSaeConfig(mine, { variant: "my-topk", d: 4, width: 8, options: { bar: 2 } }),
    /no option/,
  );
});

Deno.test("config: defaults and validation", () => {
  const b = cfgFor("batchtopk", 16, 64);
  assert.equal(b.k, 20);
  assert.equal(b.auxkAlpha, 0.03);
  assert.equal(b.deadAfterTokens, 10_000_000);
  assert.equal(b.thresholdBeta, 0.999);
  assert.equal(b.thresholdStartStep, 1000);
  const m = cfgFor("matryoshka", 16, 64);
  assert.deepEqual(m.groupFractions, [0.0625, 0.125, 0.25, 0.5625]);
  assert.equal(m.lossWeighting, "reference");
  assert.equal(cfgFor("relu", 4, 8).auxkAlpha, 0);
  assert.throws(() => cfgFor("batchtopk", 16, 8, { k: 9 }), MonobenchError);
  assert.throws(() => cfgFor("batchtopk", 0, 8), MonobenchError);
  assert.throws(() => cfgFor("matryoshka", 4, 8, { k: 2, groupFractions: [0.5, 0.6] }), /sum to 1/);
  assert.throws(() => cfgFor("matryoshka", 4, 8, { k: 2, groupFractions: [0.01, 0.99] }), /empty group/);
  assert.throws(() => cfgFor("batchtopk", 4, 8, { k: 2, thresholdBeta: 1 }), MonobenchError);
  assert.throws(
    () =>
      resolveSaeConfig(
        getSae("batchtopk"),
        { variant: "batchtopk", d: 4, width: 8, k: 2, kk: 3 } as unknown as SaeConfig,
      ),
    /unknown SAE config key "kk"/,
  );
});

Deno.test("matryoshka groups: int(f·ω) sizes, remainder last, cumulative prefixes", () => {
  assert.deepEqual(groupSizes([0.0625, 0.125, 0.25, 0.5625], 2048), [128, 256, 512, 1152]);
  assert.deepEqual(groupBounds([0.0625, 0.125, 0.25, 0.5625], 2048), [128, 384, 896, 2048]);
  assert.deepEqual(groupBounds([0.0625, 0.125, 0.25, 0.5625], 768), [48, 144, 336, 768]);
  // iNaturalist hierarchy (paper App. E.3): ω = 1536 → {3, 16, 69, 359, 1536}.
  assert.deepEqual(groupBounds([0.002, 0.009, 0.035, 0.189, 0.765], 1536), [3, 16, 69, 359, 1536]);
  const m = getFusedSae("matryoshka"), c = cfgFor("matryoshka", 8, 64);
  assert.deepEqual(m.reconWeights(c), [1 / 16, 1 / 16, 1 / 16, 1 / 16]);
  assert.deepEqual(m.reconWeights({ ...c, lossWeighting: "paper" }), [1, 1, 1, 1]);
});

Deno.test("decoder init: unit rows for every variant", () => {
  for (const v of ["batchtopk", "matryoshka", "topk", "relu"]) {
    const c = cfgFor(v, 12, 40, { k: 4 });
    const W = getSae(v).initDecoder(c, new Rng(3));
    assert.equal(W.length, 40 * 12);
    for (let j = 0; j < 40; j++) {
      let s = 0;
      for (let i = 0; i < 12; i++) s += W[j * 12 + i] ** 2;
      assert.ok(Math.abs(Math.sqrt(s) - 1) < 1e-5, `${v} row ${j} norm ${Math.sqrt(s)}`);
    }
  }
});

Deno.test("BatchTopK activation: exactly K·B codes, the K·B largest values over the batch", async () => {
  const be = new CpuBackend();
  const rng = new Rng(7);
  const B = 16, w = 50, K = 5;
  const host = rng.normals(B * w).map((v) => Math.max(0, v));
  const pre = be.tensor(host, [B, w]);
  const c = cfgFor("batchtopk", 4, w, { k: K });
  const v = getFusedSae("batchtopk");
  const codes = be.codes(B, w, v.trainCapacity(c, B));
  v.trainActivation({ backend: be, cfg: c, rows: B, pre, out: codes, scratch: be.zeros([B]) });
  const r = await readCodes(be, codes);
  assert.equal(r.idx.length, K * B);
  const sorted = Array.from(host).sort((a, b) => b - a);
  const thr = sorted[K * B - 1];
  let count = 0;
  for (let b = 0; b < B; b++) {
    let last = -1;
    for (let e = r.rowPtr[b]; e < r.rowPtr[b + 1]; e++) {
      assert.ok(r.idx[e] > last, "ascending latent order");
      last = r.idx[e];
      assert.equal(r.val[e], host[b * w + r.idx[e]]);
      assert.ok(r.val[e] >= thr);
      count++;
    }
  }
  assert.equal(count, K * B);
  // Rows are not limited to K: BatchTopK distributes K·B over the batch.
  const perRow = Array.from({ length: B }, (_, b) => r.rowPtr[b + 1] - r.rowPtr[b]);
  assert.ok(perRow.some((n) => n !== K));
});

Deno.test("BatchTopK activation: ties at the threshold are kept; few positives keep all positives", async () => {
  const be = new CpuBackend();
  const B = 4, w = 6, K = 1; // K·B = 4
  // values: 3, 2, then four 1s (tie at the 4th largest), rest 0/negative-free zeros
  const host = new Float32Array(B * w);
  host[0] = 3, host[7] = 2, host[2] = 1, host[9] = 1, host[14] = 1, host[20] = 1;
  const c = cfgFor("batchtopk", 2, w, { k: K });
  const v = getFusedSae("batchtopk");
  const codes = be.codes(B, w, v.trainCapacity(c, B));
  v.trainActivation({
    backend: be,
    cfg: c,
    rows: B,
    pre: be.tensor(host, [B, w]),
    out: codes,
    scratch: be.zeros([B]),
  });
  const r = await readCodes(be, codes);
  assert.equal(r.idx.length, 6, "2 above + all 4 tied values");
  // Only 2 positive values but K·B = 4: keep the positives only.
  const sparse = new Float32Array(B * w);
  sparse[1] = 0.5, sparse[13] = 0.25;
  v.trainActivation({
    backend: be,
    cfg: c,
    rows: B,
    pre: be.tensor(sparse, [B, w]),
    out: codes,
    scratch: be.zeros([B]),
  });
  const r2 = await readCodes(be, codes);
  assert.deepEqual(Array.from(r2.val), [0.5, 0.25]);
});

Deno.test("TopK / ReLU / threshold inference activations", async () => {
  const be = new CpuBackend();
  const rng = new Rng(11);
  const B = 5, w = 12;
  const host = rng.normals(B * w).map((x) => Math.max(0, x));
  const pre = be.tensor(host, [B, w]);
  // TopK: K per row.
  const ct = cfgFor("topk", 3, w, { k: 3 });
  const codes = be.codes(B, w, B * w);
  getFusedSae("topk").trainActivation({
    backend: be,
    cfg: ct,
    rows: B,
    pre,
    out: codes,
    scratch: be.zeros([B]),
  });
  let r = await readCodes(be, codes);
  for (let b = 0; b < B; b++) {
    const row = Array.from(host.slice(b * w, (b + 1) * w));
    const pos = row.filter((x) => x > 0).length;
    assert.equal(r.rowPtr[b + 1] - r.rowPtr[b], Math.min(3, pos));
    const top = row.slice().sort((a, c) => c - a)[2];
    for (let e = r.rowPtr[b]; e < r.rowPtr[b + 1]; e++) assert.ok(r.val[e] >= top);
  }
  // ReLU: every positive value.
  const cr = cfgFor("relu", 3, w);
  getFusedSae("relu").inferenceActivation({
    backend: be,
    cfg: cr,
    rows: B,
    pre,
    out: codes,
    scratch: be.zeros([B]),
    threshold: be.tensor(new Float32Array([0.7]), [1]),
    useThreshold: true,
  });
  r = await readCodes(be, codes);
  assert.equal(r.idx.length, host.filter((x) => x > 0).length);
  // BatchTopK inference: f·(f > θ), strict.
  const cb = cfgFor("batchtopk", 3, w, { k: 2 });
  const theta = host.filter((x) => x > 0).sort((a, c) => a - c)[3]; // an existing value: strict excludes it
  getFusedSae("batchtopk").inferenceActivation({
    backend: be,
    cfg: cb,
    rows: B,
    pre,
    out: codes,
    scratch: be.zeros([B]),
    threshold: be.tensor(new Float32Array([theta]), [1]),
    useThreshold: true,
  });
  r = await readCodes(be, codes);
  assert.equal(r.idx.length, host.filter((x) => x > theta).length);
  assert.ok(r.val.every((x) => x > theta));
});

Deno.test("threshold EMA: −1 before thresholdStartStep, set by the first update, then EMA of the min kept value", async () => {
  const be = new CpuBackend();
  const d = 6, w = 24, B = 10, K = 2;
  const cfg = cfgFor("batchtopk", d, w, { k: K, thresholdBeta: 0.9, deadAfterTokens: 1e9 });
  const rng = new Rng(5);
  const Wdec = getSae("batchtopk").initDecoder(cfg, rng);
  const eng = new SaeEngine(be, getSae("batchtopk"), cfg, {
    Wenc: Wdec.slice(),
    benc: new Float32Array(w),
    Wdec,
    bdec: new Float32Array(d),
  });
  const xs = [rng.normals(B * d), rng.normals(B * d), rng.normals(B * d)];
  const hp = (step: number) => ({ lr: 1e-2, step, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxNorm: 1 });
  const minKept = async (x: Float32Array) => {
    const p = await eng.readWeights();
    const pre = hostPre(x, B, d, w, p.Wenc, p.benc, p.bdec);
    return Array.from(pre).sort((a, b) => b - a)[K * B - 1];
  };
  eng.forwardBackward(xs[0], B, { updateThreshold: false, auxk: false });
  eng.optimizerStep(hp(1));
  assert.equal(await eng.readThreshold(), -1);
  const m1 = await minKept(xs[1]);
  assert.ok(m1 > 0);
  eng.forwardBackward(xs[1], B, { updateThreshold: true, auxk: false });
  eng.optimizerStep(hp(2));
  const t1 = await eng.readThreshold();
  assert.ok(Math.abs(t1 - m1) < 1e-5, `${t1} vs ${m1}`);
  const m2 = await minKept(xs[2]);
  eng.forwardBackward(xs[2], B, { updateThreshold: true, auxk: false });
  eng.optimizerStep(hp(3));
  const t2 = await eng.readThreshold();
  assert.ok(Math.abs(t2 - (0.9 * t1 + 0.1 * m2)) < 1e-5, `${t2} vs EMA ${0.9 * t1 + 0.1 * m2}`);
  eng.dispose();
});

Deno.test("Matryoshka loss equals a direct dense computation of the reference formula", async () => {
  const be = new CpuBackend();
  const d = 5, w = 32, B = 7, K = 3;
  const rng = new Rng(9);
  for (const lossWeighting of ["reference", "paper"] as const) {
    const cfg = cfgFor("matryoshka", d, w, { k: K, lossWeighting, deadAfterTokens: 1e9 });
    const Wdec = getSae("matryoshka").initDecoder(cfg, rng);
    const w0 = { Wenc: Wdec.slice(), benc: rng.normals(w, 0.1), Wdec, bdec: rng.normals(d, 0.1) };
    const eng = new SaeEngine(be, getSae("matryoshka"), cfg, w0);
    const x = rng.normals(B * d);
    eng.forwardBackward(x, B, { updateThreshold: false, auxk: false });
    const { loss } = await eng.readStats();
    // Reference: f = batch top-K·B of ReLU pre; x̂ accumulates groups; loss = mean_i(w_i·L_i).
    const pre = hostPre(x, B, d, w, w0.Wenc, w0.benc, w0.bdec);
    const thr = Array.from(pre).sort((a, b) => b - a)[K * B - 1];
    const f = pre.map((v) => (v >= thr && v > 0 ? v : 0));
    const bounds = [0, ...groupBounds(cfg.groupFractions, w)];
    const G = bounds.length - 1;
    const xr = new Float64Array(B * d);
    for (let b = 0; b < B; b++) for (let i = 0; i < d; i++) xr[b * d + i] = w0.bdec[i];
    const Ls: number[] = [];
    for (let g = 0; g < G; g++) {
      for (let b = 0; b < B; b++) {
        for (let j = bounds[g]; j < bounds[g + 1]; j++) {
          for (let i = 0; i < d; i++) xr[b * d + i] += f[b * w + j] * Wdec[j * d + i];
        }
      }
      let l = 0;
      for (let k = 0; k < B * d; k++) l += (x[k] - xr[k]) ** 2;
      Ls.push(l / B);
    }
    const expected = lossWeighting === "reference"
      ? Ls.reduce((a, l) => a + l * (1 / G), 0) / G
      : Ls.reduce((a, l) => a + l, 0);
    assert.ok(
      Math.abs(loss - expected) < 1e-5 * Math.max(1, expected),
      `${lossWeighting}: ${loss} vs ${expected}`,
    );
    eng.dispose();
  }
});

Deno.test("registerSae refuses an incomplete variant, also outside the CLI", async () => {
  const { registerSae } = await import("../src/sae/registry.ts");
  const { MonobenchError } = await import("../src/util/errors.ts");
  const { throws } = await import("node:assert/strict");
  throws(
    () => registerSae({ name: "half-done", description: "x", architecture: "topk", defaults: {} } as never),
    (e: unknown) => e instanceof MonobenchError && /hook groups\(\) is missing/.test(e.message),
  );
});
