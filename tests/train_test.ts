import assert from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";
import { getFusedSae, getSae, groupBounds, resolveSaeConfig, type SaeConfig } from "../src/sae/mod.ts";
import {
  BatchOrder,
  computeNormFactor,
  DataSource,
  encodeDataset,
  geometricMedian,
  lrFactor,
  plantedSparseData,
  reconstruct,
  recoveredFraction,
  resolveLr,
  SaeEngine,
  trainSae,
} from "../src/train/mod.ts";

function close(a: number, b: number, rel: number, what = "") {
  assert.ok(Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b)), `${what} ${a} vs ${b}`);
}

Deno.test('lr formulas: docs/REFERENCE.md "Learning rate" (code vs paper, exactly 5×)', () => {
  const table: [number, number, number][] = [
    [1024, 8.0e-4, 4.0e-3],
    [65536, 1.0e-4, 5.0e-4],
    [768, 9.24e-4, 4.62e-3],
    [49152, 1.15e-4, 5.77e-4],
  ];
  for (const [w, code, paper] of table) {
    close(resolveLr("code", w), code, 5e-3, `code lr ω=${w}`);
    close(resolveLr("paper", w), paper, 5e-3, `paper lr ω=${w}`);
    close(resolveLr("paper", w) / resolveLr("code", w), 5, 1e-12);
  }
  assert.equal(resolveLr(0.01, 64), 0.01);
  assert.throws(() => resolveLr(-1, 64), MonobenchError);
  assert.throws(() => resolveLr("fast" as unknown as number, 64), MonobenchError);
});

Deno.test("lr schedule: LambdaLR warmup from 0, constant, linear decay", () => {
  assert.equal(lrFactor(0, 100, 10, null), 0);
  assert.equal(lrFactor(5, 100, 10, null), 0.5);
  assert.equal(lrFactor(10, 100, 10, null), 1);
  assert.equal(lrFactor(99, 100, 10, null), 1);
  assert.equal(lrFactor(60, 100, 10, 50), 0.8);
  assert.equal(lrFactor(99, 100, 10, 50), 0.02);
  assert.equal(lrFactor(3, 100, 0, null), 1);
  // The paper's run: decay_start 109999 of 110000 steps → last update at factor 1.
  assert.equal(lrFactor(109_999, 110_000, 1000, 109_999), 1);
});

Deno.test("geometric median: Fermat point, robustness, optimality", () => {
  const tri = new Float32Array([0, 0, 1, 0, 0.5, Math.sqrt(3) / 2]);
  const m = geometricMedian(tri, 3, 2, { maxIter: 1000, tol: 1e-9 });
  assert.ok(Math.abs(m[0] - 0.5) < 1e-4 && Math.abs(m[1] - Math.sqrt(3) / 6) < 1e-4, `${m}`);
  // 9 points at the origin region and one far outlier: the median stays near the cluster.
  const rng = new Rng(1);
  const n = 50, d = 3;
  const pts = rng.normals(n * d, 0.1);
  for (let i = 0; i < d; i++) pts[(n - 1) * d + i] = 1000;
  const gm = geometricMedian(pts, n, d);
  assert.ok(Math.hypot(...gm) < 0.2, `median ${gm}`);
  // Optimality: Σ||p − m|| does not decrease in any small step.
  const obj = (c: ArrayLike<number>) => {
    let s = 0;
    for (let b = 0; b < n; b++) {
      let r = 0;
      for (let i = 0; i < d; i++) r += (pts[b * d + i] - c[i]) ** 2;
      s += Math.sqrt(r);
    }
    return s;
  };
  const base = obj(gm);
  for (let i = 0; i < d; i++) {
    for (const h of [1e-3, -1e-3]) {
      const c = Array.from(gm);
      c[i] += h;
      assert.ok(obj(c) >= base - 1e-6);
    }
  }
});

Deno.test("batch order: one shuffle cycled, partial last batch kept, optional reshuffle", () => {
  const o = new BatchOrder(10, 4, 3, false);
  assert.equal(o.numBatches, 3);
  const e0 = [0, 1, 2].map((s) => Array.from(o.batch(s).indices));
  assert.deepEqual(e0.map((b) => b.length), [4, 4, 2]);
  assert.deepEqual(e0.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual([3, 4, 5].map((s) => Array.from(o.batch(s).indices)), e0, "epoch 1 replays epoch 0");
  assert.equal(o.samplesAfter(4), 14);
  const r = new BatchOrder(10, 4, 3, true);
  assert.deepEqual([0, 1, 2].map((s) => Array.from(r.batch(s).indices)), e0, "same first epoch");
  const r1 = [3, 4, 5].map((s) => Array.from(r.batch(s).indices));
  assert.notDeepEqual(r1, e0);
  assert.deepEqual(r1.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

Deno.test("norm factor: sqrt(mean ||x||²) over batches", () => {
  const rng = new Rng(2);
  const n = 64, d = 5;
  const x = rng.normals(n * d, 3);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  const src = DataSource.from(x, d);
  close(computeNormFactor(src, 16, 0), Math.sqrt(s / n), 1e-6);
  // Only the first 2 batches: a subsample, different from the full mean but close.
  const f2 = computeNormFactor(src, 16, 0, 2);
  assert.ok(Math.abs(f2 - Math.sqrt(s / n)) / Math.sqrt(s / n) < 0.3);
});

/** Host loss with fixed supports (float64): recon over prefixes + penalty + AuxK with detached residual. */
function hostLoss(
  cfg: SaeConfig,
  p: { Wenc: Float64Array; benc: Float64Array; Wdec: Float64Array; bdec: Float64Array },
  x: Float32Array,
  B: number,
  S: Uint8Array,
  A: Uint8Array | null,
  eFixed: Float64Array | null,
  weights: number[],
  bounds: number[],
): number {
  const { d, width: w } = cfg;
  const pre = new Float64Array(B * w);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < w; j++) {
      if (!S[b * w + j] && !(A && A[b * w + j])) continue;
      let s = p.benc[j];
      for (let i = 0; i < d; i++) s += (x[b * d + i] - p.bdec[i]) * p.Wenc[j * d + i];
      pre[b * w + j] = s;
    }
  }
  let loss = 0;
  const xr = new Float64Array(B * d);
  for (let b = 0; b < B; b++) for (let i = 0; i < d; i++) xr[b * d + i] = p.bdec[i];
  const lo = [0, ...bounds];
  for (let g = 0; g < bounds.length; g++) {
    for (let b = 0; b < B; b++) {
      for (let j = lo[g]; j < lo[g + 1]; j++) {
        if (!S[b * w + j]) continue;
        for (let i = 0; i < d; i++) xr[b * d + i] += pre[b * w + j] * p.Wdec[j * d + i];
      }
    }
    let l = 0;
    for (let k = 0; k < B * d; k++) l += (x[k] - xr[k]) ** 2;
    loss += (weights[g] * l) / B;
  }
  if (cfg.l1 > 0) {
    for (let k = 0; k < B * w; k++) if (S[k]) loss += (cfg.l1 / B) * pre[k];
  }
  if (A && eFixed) {
    const mean = new Float64Array(d);
    for (let b = 0; b < B; b++) for (let i = 0; i < d; i++) mean[i] += eFixed[b * d + i] / B;
    let den = 0, num = 0;
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < d; i++) {
        den += (eFixed[b * d + i] - mean[i]) ** 2;
        let eh = 0;
        for (let j = 0; j < w; j++) if (A[b * w + j]) eh += pre[b * w + j] * p.Wdec[j * d + i];
        num += (eFixed[b * d + i] - eh) ** 2;
      }
    }
    loss += (cfg.auxkAlpha * num) / den;
  }
  return loss;
}

Deno.test("gradients of the whole loss vs finite differences (ReLU-L1, BatchTopK+AuxK, Matryoshka+AuxK)", async () => {
  const be = new CpuBackend();
  const d = 6, w = 16, B = 6;
  for (const variant of ["relu", "batchtopk", "matryoshka"]) {
    const rng = new Rng(21);
    const cfg = resolveSaeConfig(getSae(variant), {
      variant,
      d,
      width: w,
      k: 2,
      l1: variant === "relu" ? 0.1 : 0,
      auxkAlpha: variant === "relu" ? 0 : 0.5,
      deadAfterTokens: B, // every latent that does not fire in the batch is dead
      groupFractions: variant === "matryoshka" ? [0.25, 0.25, 0.5] : [1],
    });
    const v = getFusedSae(variant);
    const Wdec = v.initDecoder(cfg, rng);
    const w0 = { Wenc: rng.normals(w * d, 0.5), benc: rng.normals(w, 0.1), Wdec, bdec: rng.normals(d, 0.1) };
    const x = rng.normals(B * d);
    const eng = new SaeEngine(be, v, cfg, w0);
    eng.forwardBackward(x, B, { updateThreshold: false, auxk: cfg.auxkAlpha > 0 });
    const g = await eng.readGrads();
    const stats = await eng.readStats();
    eng.dispose();
    // Supports at θ0, recomputed on the host.
    const p64 = {
      Wenc: Float64Array.from(w0.Wenc),
      benc: Float64Array.from(w0.benc),
      Wdec: Float64Array.from(w0.Wdec),
      bdec: Float64Array.from(w0.bdec),
    };
    const pre = new Float64Array(B * w);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < w; j++) {
        let s = p64.benc[j];
        for (let i = 0; i < d; i++) s += (x[b * d + i] - p64.bdec[i]) * p64.Wenc[j * d + i];
        pre[b * w + j] = Math.max(0, s);
      }
    }
    const S = new Uint8Array(B * w);
    if (variant === "relu") { for (let k = 0; k < B * w; k++) S[k] = pre[k] > 0 ? 1 : 0; }
    else {
      const thr = Array.from(pre).sort((a, b) => b - a)[cfg.k * B - 1];
      for (let k = 0; k < B * w; k++) S[k] = pre[k] > 0 && pre[k] >= thr ? 1 : 0;
    }
    const bounds = v.groups(cfg), weights = v.reconWeights(cfg);
    let A: Uint8Array | null = null, eFixed: Float64Array | null = null;
    if (cfg.auxkAlpha > 0) {
      const dead = new Uint8Array(w).fill(1);
      for (let k = 0; k < B * w; k++) if (S[k]) dead[k % w] = 0;
      assert.ok(dead.some((z) => z), "some latent must be dead");
      const kAux = Math.floor(d / 2);
      A = new Uint8Array(B * w);
      for (let b = 0; b < B; b++) {
        const cand = [...Array(w).keys()].filter((j) => dead[j] && pre[b * w + j] > 0)
          .sort((i, j) => pre[b * w + j] - pre[b * w + i]).slice(0, kAux);
        for (const j of cand) A[b * w + j] = 1;
      }
      eFixed = new Float64Array(B * d);
      for (let b = 0; b < B; b++) {
        for (let i = 0; i < d; i++) {
          let xr = p64.bdec[i];
          for (let j = 0; j < w; j++) if (S[b * w + j]) xr += pre[b * w + j] * p64.Wdec[j * d + i];
          eFixed[b * d + i] = x[b * d + i] - xr;
        }
      }
    }
    const L = () => hostLoss(cfg, p64, x, B, S, A, eFixed, weights, bounds);
    const total = stats.loss + stats.aux + stats.penalty;
    close(total, L(), 1e-5, `${variant} loss`);
    if (cfg.auxkAlpha > 0) assert.ok(stats.aux > 0, "AuxK active");
    const h = 1e-5;
    let maxErr = 0;
    for (const name of ["Wenc", "benc", "Wdec", "bdec"] as const) {
      const P = p64[name], G = g[name];
      for (let k = 0; k < P.length; k++) {
        const old = P[k];
        P[k] = old + h;
        const up = L();
        P[k] = old - h;
        const dn = L();
        P[k] = old;
        const fd = (up - dn) / (2 * h);
        const err = Math.abs(fd - G[k]) / (1e-3 + Math.abs(fd));
        maxErr = Math.max(maxErr, err);
        assert.ok(err < 1e-3, `${variant} d${name}[${k}]: engine ${G[k]} vs finite difference ${fd}`);
      }
    }
  }
});

Deno.test("training on planted sparse data: loss decreases, directions recovered (BatchTopK, Matryoshka)", async () => {
  const d = 24, m = 48;
  const data = plantedSparseData(4096, d, m, 3, 1);
  for (const variant of ["batchtopk", "matryoshka"]) {
    const losses: number[] = [];
    const res = await trainSae(new CpuBackend(), data.x, {
      variant,
      d,
      width: 96,
      k: 3,
      steps: 800,
      batchSize: 256,
      warmupSteps: 50,
      thresholdStartStep: 100,
      deadAfterTokens: 50_000,
      seed: 1,
    }, { syncEvery: 20, onProgress: (p) => losses.push(p.loss) });
    assert.equal(losses.length, 40);
    assert.ok(losses[losses.length - 1] < 0.5 * losses[0], `${variant} losses ${losses}`);
    const rec = recoveredFraction(data.atoms, m, res.params.Wdec, 96, d);
    // Matryoshka's small prefix groups absorb shared structure, so it recovers fewer atoms 1:1.
    assert.ok(rec >= (variant === "batchtopk" ? 0.75 : 0.5), `${variant} recovered only ${rec}`);
    assert.ok(res.params.threshold > 0, "threshold updated");
    close(res.finalLoss, losses[losses.length - 1], 1e-12);
  }
});

Deno.test("training TopK and ReLU-L1: loss decreases; ReLU penalty reported", async () => {
  const d = 16, m = 32;
  const data = plantedSparseData(2048, d, m, 2, 2);
  for (const variant of ["topk", "relu"]) {
    const hist: { loss: number; penalty: number }[] = [];
    const res = await trainSae(new CpuBackend(), data.x, {
      variant,
      d,
      width: 64,
      k: 2,
      steps: 300,
      batchSize: 128,
      warmupSteps: 20,
      seed: 2,
    }, { syncEvery: 50, onProgress: (p) => hist.push(p) });
    assert.ok(hist[hist.length - 1].loss < 0.6 * hist[0].loss, `${variant}: ${hist.map((h) => h.loss)}`);
    if (variant === "relu") assert.ok(hist.every((h) => h.penalty > 0));
    else assert.ok(hist.every((h) => h.penalty === 0));
    assert.equal(res.params.threshold, -1);
  }
});

Deno.test("encodeDataset / reconstruct on raw data match the host computation (biases scaled by normFactor)", async () => {
  const d = 12, m = 24;
  const data = plantedSparseData(600, d, m, 2, 3, { offset: 2 });
  const be = new CpuBackend();
  const res = await trainSae(be, data.x, {
    variant: "batchtopk",
    d,
    width: 48,
    k: 2,
    steps: 120,
    batchSize: 100,
    warmupSteps: 10,
    thresholdStartStep: 20,
    seed: 4,
  });
  const p = res.params;
  assert.ok(res.normFactor > 1.5, "raw data is far from unit norm");
  assert.ok(p.threshold > 0);
  const acts = await encodeDataset(be, p, data.x, { batchSize: 64 });
  assert.equal(acts.kind, "csr");
  if (acts.kind !== "csr") return;
  assert.equal(acts.n, 600);
  assert.equal(acts.cols, 48);
  const xhat = await reconstruct(be, p, data.x, { batchSize: 128 });
  let nnz = 0, maxErr = 0, maxRecErr = 0;
  for (let b = 0; b < 600; b++) {
    const rec = Float64Array.from(p.bdec);
    const got = new Map<number, number>();
    for (let e = acts.rowPtr[b]; e < acts.rowPtr[b + 1]; e++) got.set(acts.idx[e], acts.val[e]);
    for (let j = 0; j < 48; j++) {
      let s = p.benc[j];
      for (let i = 0; i < d; i++) s += (data.x[b * d + i] - p.bdec[i]) * p.Wenc[j * d + i];
      const f = s > 0 && s > p.threshold ? s : 0;
      if (Math.abs(s - p.threshold) < 1e-4 * p.threshold) continue; // borderline: either is fine
      if (f > 0) {
        nnz++;
        assert.ok(got.has(j), `row ${b} latent ${j} missing`);
        maxErr = Math.max(maxErr, Math.abs(got.get(j)! - f) / f);
      } else assert.ok(!got.has(j), `row ${b} latent ${j} should be off`);
    }
    for (const [j, f] of got) for (let i = 0; i < d; i++) rec[i] += f * p.Wdec[j * d + i];
    for (let i = 0; i < d; i++) maxRecErr = Math.max(maxRecErr, Math.abs(rec[i] - xhat[b * d + i]));
  }
  assert.ok(maxErr < 1e-4, `value error ${maxErr}`);
  assert.ok(maxRecErr < 1e-4, `reconstruction error ${maxRecErr}`);
  assert.ok(nnz / 600 > 0.5, `L0 ${nnz / 600}`);
  // Without the threshold: batch top-K per batch → exactly K codes per row on average.
  const bt = await encodeDataset(be, p, data.x, { useThreshold: false, batchSize: 100 });
  if (bt.kind === "csr") assert.equal(bt.rowPtr[600], 2 * 600);
});

Deno.test("bad input: shapes, NaN/Inf, config errors", async () => {
  const be = new CpuBackend();
  const x = new Rng(1).normals(40 * 4);
  const cfg = { variant: "batchtopk", d: 4, width: 8, k: 2, steps: 10, batchSize: 8, warmupSteps: 2 };
  const rejects = (p: Promise<unknown>, re: RegExp) =>
    assert.rejects(p, (e: Error) => e instanceof MonobenchError && re.test(e.message));
  await rejects(trainSae(be, x, { ...cfg, d: undefined }), /needs the row length d/);
  await rejects(trainSae(be, x.subarray(0, 39), cfg), /not a non-empty \[n, 4\]/);
  const bad = x.slice();
  bad[17] = NaN;
  await rejects(trainSae(be, bad, cfg), /non-finite value NaN at row 4, column 1/);
  bad[17] = Infinity;
  await rejects(trainSae(be, bad, cfg), /non-finite value Infinity/);
  await rejects(
    trainSae(be, x, { ...cfg, variant: "nope" }),
    /unknown SAE variant "nope" \(known: batchtopk/,
  );
  await rejects(trainSae(be, x, { ...cfg, stepz: 3 } as typeof cfg), /unknown training config key "stepz"/);
  await rejects(trainSae(be, x, { ...cfg, warmupSteps: 10 }), /warmupSteps/);
  await rejects(trainSae(be, x, { ...cfg, k: 9 }), /k must be/);
  await rejects(trainSae(be, x, { ...cfg, lr: 0 }), /lr must be/);
  await rejects(trainSae(be, x, { ...cfg, width: undefined }), /width/);
  // Row sources: wrong d, wrong row lengths, NaN inside.
  const src = { n: 40, d: 4, rows: (s: number, c: number) => x.slice(s * 4, (s + c) * 4) };
  await rejects(trainSae(be, src, { ...cfg, d: 5 }), /config d=5 but the data has d=4/);
  await rejects(trainSae(be, { ...src, rows: () => new Float32Array(3) }, cfg), /returned 3 values/);
  await rejects(trainSae(be, { ...src, n: 0 }, cfg), /n must be a positive integer/);
  const nanSrc = {
    ...src,
    rows: (s: number, c: number) => (s === 7 ? new Float32Array(4).fill(NaN) : src.rows(s, c)),
  };
  await rejects(trainSae(be, nanSrc, cfg), /non-finite value NaN at row 7/);
  // The row-source path trains fine otherwise, equal to the array path.
  const a = await trainSae(be, x, cfg), b = await trainSae(be, src, { ...cfg, d: undefined });
  assert.deepEqual(a.params.Wdec, b.params.Wdec);
  assert.equal(a.params.threshold, -1, "no threshold update before thresholdStartStep (1000)");
  // Expansion instead of width.
  const e = await trainSae(be, x, { ...cfg, width: undefined, expansion: 2 });
  assert.equal(e.params.cfg.width, 8);
});

Deno.test("divergence: huge inputs give a clear error and the last good checkpoint survives", async () => {
  const be = new CpuBackend();
  const n = 64, d = 4;
  const x = new Rng(3).normals(n * d);
  // Finite but overflowing values from step 12 on (32 fingerprint reads, then 8 rows per step).
  const huge = x.slice();
  for (let i = 0; i < huge.length; i++) huge[i] *= 3e37;
  let calls = 0;
  const src = {
    n,
    d,
    rows: (s: number, c: number) => {
      calls++;
      return (calls > 32 + 12 * 8 ? huge : x).slice(s * d, (s + c) * d);
    },
  };
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      trainSae(be, src, {
        variant: "batchtopk",
        width: 8,
        k: 2,
        steps: 40,
        batchSize: 8,
        warmupSteps: 2,
        normalize: false,
        initBdec: "zero",
      }, { checkpointDir: `${dir}/ck`, checkpointEvery: 10, syncEvery: 5 }),
      (e: Error) => {
        assert.ok(e instanceof MonobenchError, String(e));
        assert.match(e.message, /diverged/);
        assert.match((e as MonobenchError).hint ?? "", /last good checkpoint \(step 10\)/);
        return true;
      },
    );
    const st = JSON.parse(await Deno.readTextFile(`${dir}/ck/state.json`));
    assert.equal(st.step, 10);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("groupBounds of the default Matryoshka config is what the engine uses", () => {
  const cfg = resolveSaeConfig(getSae("matryoshka"), { variant: "matryoshka", d: 8, width: 256 });
  assert.deepEqual(getFusedSae("matryoshka").groups(cfg), groupBounds(cfg.groupFractions, 256));
  assert.deepEqual(getFusedSae("matryoshka").groups(cfg), [16, 48, 112, 256]);
});
