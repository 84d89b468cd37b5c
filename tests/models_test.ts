/**
 * The example architectures (examples/jumprelu.ts, gated.ts, ms_penalty.ts), written on the tape:
 * losses and gradients against float64 host implementations of the papers' definitions, the tape
 * path against the fused BatchTopK path, training on every available backend, SAELens exports
 * (read back and encoded on the host with SAELens's formulas), resume, and the CLI.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import "../examples/jumprelu.ts";
import "../examples/gated.ts";
import "../examples/ms_penalty.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { BlasBackend } from "../src/backend/blas.ts";
import type { Backend } from "../src/backend/types.ts";
import { createWebGpuBackend } from "../src/backend/webgpu/backend.ts";
import { selectBackend } from "../src/backend/select.ts";
import { getSae, linearInitDecoder, resolveSaeConfig, type SaeConfig } from "../src/sae/mod.ts";
import { SaeEngine } from "../src/train/engine.ts";
import { encodeDataset, loadSae, plantedSparseData, readSafetensors, trainSae } from "../src/train/mod.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";

const cpu = new CpuBackend();

async function hasGpu(): Promise<boolean> {
  try {
    const gpu = (navigator as unknown as { gpu?: GPU }).gpu;
    return !!(gpu && await gpu.requestAdapter());
  } catch {
    return false;
  }
}
const HAS_GPU = await hasGpu();
const blas = BlasBackend.tryCreate();

function near(a: number, b: number, tol: number, what: string): void {
  assert.ok(Math.abs(a - b) <= tol * (1 + Math.abs(b)), `${what}: ${a} vs ${b}`);
}

type P64 = Record<string, Float64Array>;

/** z[b, j] = W_enc[j]·(x_b − b_dec) + bias[j] in float64. */
function pre(p: P64, x: Float32Array, B: number, d: number, w: number, bias: Float64Array): Float64Array {
  const z = new Float64Array(B * w);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < w; j++) {
      let s = bias[j];
      for (let i = 0; i < d; i++) s += (x[b * d + i] - p.b_dec[i]) * p.W_enc[j * d + i];
      z[b * w + j] = s;
    }
  }
  return z;
}

/** mean_b ||b_dec + Σ_j f[b, j] W_dec[j] − x_b||² and the residuals. */
function recon(
  f: Float64Array,
  Wdec: Float64Array,
  bdec: Float64Array,
  x: Float32Array,
  B: number,
  d: number,
  w: number,
) {
  const r = new Float64Array(B * d);
  let L = 0;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < d; i++) {
      let s = bdec[i];
      for (let j = 0; j < w; j++) s += f[b * w + j] * Wdec[j * d + i];
      r[b * d + i] = s - x[b * d + i];
      L += r[b * d + i] ** 2;
    }
  }
  return { L: L / B, r };
}

/** Gradients of the engine for `variant` at weights `p` on batch x. */
async function engineGrads(cfg: SaeConfig, p: P64, x: Float32Array, B: number) {
  const v = getSae(cfg.variant);
  const f32 = (a: Float64Array) => Float32Array.from(a);
  const names = Object.keys(p).filter((n) => !["W_enc", "W_dec", "b_dec", "b_enc", "b_gate"].includes(n));
  const w = {
    Wenc: f32(p.W_enc),
    benc: f32(p.b_enc ?? p.b_gate),
    Wdec: f32(p.W_dec),
    bdec: f32(p.b_dec),
    extra: Object.fromEntries(names.map((n) => [n, f32(p[n])])),
  };
  const eng = new SaeEngine(cpu, v, cfg, w);
  eng.forwardBackward(x, B, { updateThreshold: false, auxk: false });
  const g = await eng.readGrads(), s = await eng.readStats();
  eng.dispose();
  const grads: Record<string, Float32Array> = {
    W_enc: g.Wenc,
    [p.b_enc ? "b_enc" : "b_gate"]: g.benc,
    W_dec: g.Wdec,
    b_dec: g.bdec,
    ...g.extra,
  };
  return { grads, stats: s };
}

function fdCheck(
  what: string,
  p: P64,
  names: string[],
  grads: Record<string, Float32Array>,
  L: () => number,
  tol = 2e-3,
): void {
  for (const n of names) {
    const a = p[n];
    for (let k = 0; k < a.length; k++) {
      const old = a[k], h = 1e-6;
      a[k] = old + h;
      const up = L();
      a[k] = old - h;
      const dn = L();
      a[k] = old;
      const fd = (up - dn) / (2 * h);
      assert.ok(
        Math.abs(grads[n][k] - fd) <= tol * (1e-2 + Math.abs(fd)),
        `${what} d${n}[${k}]: ${grads[n][k]} vs ${fd}`,
      );
    }
  }
}

function randomParams(rng: Rng, cfg: SaeConfig, extra: Record<string, Float64Array>): P64 {
  const { d, width: w } = cfg;
  return {
    W_enc: Float64Array.from(rng.normals(w * d, 0.6)),
    W_dec: Float64Array.from(linearInitDecoder(cfg, rng)),
    b_dec: Float64Array.from(rng.normals(d, 0.1)),
    ...extra,
  };
}

const D = 6, W = 16, B = 8;

Deno.test("jumprelu: loss, exact gradients and the straight-through threshold gradient (float64 host)", async () => {
  const cfg = resolveSaeConfig(getSae("jumprelu"), {
    variant: "jumprelu",
    d: D,
    width: W,
    options: { l0: 0.3, bandwidth: 0.5, initThreshold: 0.1 },
  });
  const rng = new Rng(41);
  const x = rng.normals(B * D);
  const p = randomParams(rng, cfg, {
    b_enc: Float64Array.from(rng.normals(W, 0.2)),
    log_threshold: Float64Array.from(rng.uniforms(W, Math.log(0.05), Math.log(0.8))),
  });
  const eps = 0.5, lam = 0.3;
  const host = () => {
    const z = pre(p, x, B, D, W, p.b_enc);
    const th = p.log_threshold.map(Math.exp);
    const f = z.map((v, k) => v > th[k % W] ? v : 0);
    let l0 = 0;
    z.forEach((v, k) => l0 += v > th[k % W] ? 1 : 0);
    const { L, r } = recon(f, p.W_dec, p.b_dec, x, B, D, W);
    return { L, l0: lam * l0 / B, z, th, r };
  };
  const { grads, stats } = await engineGrads(cfg, p, x, B);
  const h0 = host();
  near(stats.loss, h0.L, 1e-5, "reconstruction loss");
  near(stats.penalty, h0.l0, 1e-6, "L0 penalty");
  // Parameters away from the jumps: true derivatives.
  fdCheck("jumprelu", p, ["W_enc", "b_enc", "W_dec", "b_dec"], grads, () => {
    const h = host();
    return h.L + h.l0;
  });
  // The threshold: the rectangle-kernel pseudo-derivatives, computed densely on the host.
  let inWindow = 0;
  for (let j = 0; j < W; j++) {
    const th = h0.th[j];
    let g = 0;
    for (let b = 0; b < B; b++) {
      const z = h0.z[b * W + j], rect = Math.abs((z - th) / eps) < 0.5 ? 1 : 0;
      inWindow += rect;
      let dLdf = 0;
      for (let i = 0; i < D; i++) dLdf += (2 / B) * h0.r[b * D + i] * p.W_dec[j * D + i];
      g += -(th / eps) * rect * dLdf - (lam / B) * (1 / eps) * rect;
    }
    near(grads.log_threshold[j], th * g, 1e-4, `dlog_threshold[${j}]`);
  }
  assert.ok(inWindow > 5, "the test exercises the window");
});

Deno.test("gated: loss and gradients (gate, magnitudes, L1, auxiliary loss through a frozen decoder)", async () => {
  const cfg = resolveSaeConfig(getSae("gated"), { variant: "gated", d: D, width: W, l1: 0.2 });
  const rng = new Rng(42);
  const x = rng.normals(B * D);
  const p = randomParams(rng, cfg, {
    b_gate: Float64Array.from(rng.normals(W, 0.3)),
    r_mag: Float64Array.from(rng.normals(W, 0.3)),
    b_mag: Float64Array.from(rng.normals(W, 0.3)),
  });
  const Wd0 = p.W_dec.slice(), bd0 = p.b_dec.slice();
  const host = () => {
    const zero = new Float64Array(W);
    const h = pre(p, x, B, D, W, zero);
    const f = new Float64Array(B * W), g = new Float64Array(B * W);
    let l1 = 0;
    h.forEach((v, k) => {
      const j = k % W, pg = v + p.b_gate[j];
      const mag = Math.max(0, v * Math.exp(p.r_mag[j]) + p.b_mag[j]);
      f[k] = pg > 0 ? mag : 0;
      g[k] = Math.max(0, pg);
      l1 += g[k];
    });
    return {
      L: recon(f, p.W_dec, p.b_dec, x, B, D, W).L,
      pen: 0.2 * l1 / B,
      aux: recon(g, Wd0, bd0, x, B, D, W).L,
    };
  };
  const { grads, stats } = await engineGrads(cfg, p, x, B);
  const h0 = host();
  near(stats.loss, h0.L, 1e-5, "loss");
  near(stats.penalty, h0.pen, 1e-5, "L1");
  near(stats.aux, h0.aux, 1e-5, "auxiliary reconstruction");
  fdCheck("gated", p, ["W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"], grads, () => {
    const h = host();
    return h.L + h.pen + h.aux;
  });
});

Deno.test("ms-penalty: the batch MS term equals the pairwise definition; gradients by finite differences", async () => {
  const mu = 0.7, k = 3;
  const cfg = resolveSaeConfig(getSae("ms-penalty"), {
    variant: "ms-penalty",
    d: D,
    width: W,
    k,
    auxkAlpha: 0,
    options: { ms: mu },
  });
  const rng = new Rng(43);
  const x = rng.normals(B * D);
  const p = randomParams(rng, cfg, { b_enc: Float64Array.from(rng.normals(W, 0.2)) });
  // The BatchTopK support at the starting point (kept fixed: a.e. constant near it).
  const z0 = pre(p, x, B, D, W, p.b_enc);
  const thr = Array.from(z0).sort((a, b) => b - a)[k * B - 1];
  const S = z0.map((v) => v > 0 && v >= thr ? 1 : 0);
  const e = new Float64Array(B * D);
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let i = 0; i < D; i++) n += x[b * D + i] ** 2;
    for (let i = 0; i < D; i++) e[b * D + i] = x[b * D + i] / Math.sqrt(n);
  }
  const host = () => {
    const z = pre(p, x, B, D, W, p.b_enc);
    const f = z.map((v, q) => S[q] ? v : 0);
    let sum = 0, n = 0;
    for (let j = 0; j < W; j++) {
      let num = 0, den = 0, u = 0;
      for (let b = 0; b < B; b++) {
        u += f[b * W + j];
        for (let c = b + 1; c < B; c++) {
          let cos = 0;
          for (let i = 0; i < D; i++) cos += e[b * D + i] * e[c * D + i];
          num += f[b * W + j] * f[c * W + j] * cos;
          den += f[b * W + j] * f[c * W + j];
        }
      }
      if (2 * den > 1e-6 * u * u) {
        sum += num / den;
        n++;
      }
    }
    return { L: recon(f, p.W_dec, p.b_dec, x, B, D, W).L, ms: mu * (1 - sum / Math.max(n, 1)), n };
  };
  const { grads, stats } = await engineGrads(cfg, p, x, B);
  const h0 = host();
  assert.ok(h0.n >= 3, "several latents fire on two or more samples");
  near(stats.loss, h0.L, 1e-5, "loss");
  near(stats.penalty, h0.ms, 1e-5, "MS penalty");
  fdCheck("ms-penalty", p, ["W_enc", "b_enc", "W_dec", "b_dec"], grads, () => {
    const h = host();
    return h.L + h.ms;
  });
});

const data = plantedSparseData(512, 12, 24, 3, 7);
const base = {
  d: 12,
  expansion: 4,
  k: 4,
  batchSize: 64,
  warmupSteps: 4,
  lr: "paper" as const,
  deadAfterTokens: 640,
  thresholdStartStep: 5,
};

Deno.test("ms-penalty with μ = 0 trains like the fused BatchTopK (tape path vs fused path, AuxK on)", async () => {
  const a = await trainSae(cpu, data.x, { variant: "batchtopk", ...base, steps: 60 }, { syncEvery: 10 });
  const b = await trainSae(cpu, data.x, { variant: "ms-penalty", options: { ms: 0 }, ...base, steps: 60 }, {
    syncEvery: 10,
  });
  assert.ok(a.history.some((h) => h.auxLoss > 0), "AuxK active");
  for (let i = 0; i < a.history.length; i++) {
    near(b.history[i].loss, a.history[i].loss, 1e-4, `loss at step ${a.history[i].step}`);
    near(b.history[i].auxLoss, a.history[i].auxLoss, 1e-4, `AuxK at step ${a.history[i].step}`);
    assert.equal(b.history[i].dead, a.history[i].dead, "dead latents");
  }
  near(b.params.threshold, a.params.threshold, 1e-4, "inference threshold");
});

async function trainOn(be: Backend, variant: string, steps: number, extra: Record<string, unknown> = {}) {
  return await trainSae(be, data.x, { variant, ...base, steps, ...extra }, { syncEvery: 5 });
}

const VARIANTS = ["jumprelu", "gated", "ms-penalty"];

Deno.test("examples train on the cpu backend: loss falls, codes are sparse, λ controls L0", async () => {
  for (const v of VARIANTS) {
    const r = await trainOn(cpu, v, 80);
    assert.ok(r.history.at(-1)!.loss < 0.5 * r.history[0].loss, `${v}: loss falls`);
    const codes = await encodeDataset(cpu, r.params, data.x.subarray(0, 100 * 12));
    assert.equal(codes.kind, "csr");
    if (codes.kind === "csr") {
      assert.ok(codes.val.every((a) => a > 0), `${v}: codes hold only active latents`);
      assert.ok(codes.rowPtr[100] / 100 < 48, `${v}: sparse`);
    }
  }
  const l0 = async (lam: number) => {
    const r = await trainOn(cpu, "jumprelu", 80, {
      options: { l0: lam, bandwidth: 0.01, initThreshold: 0.01 },
    });
    const c = await encodeDataset(cpu, r.params, data.x);
    return c.kind === "csr" ? c.rowPtr[c.n] / c.n : NaN;
  };
  const [lo, hi] = [await l0(0.001), await l0(0.1)];
  assert.ok(hi < lo, `a larger L0 coefficient gives fewer active latents (${hi} vs ${lo})`);
});

Deno.test({
  name: "examples train on webgpu like on the cpu backend",
  ignore: !HAS_GPU,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const gpu = await createWebGpuBackend("webgpu", { maxBindingBytes: 64 * 1024 });
    try {
      for (const v of VARIANTS) {
        const [c, g] = [await trainOn(cpu, v, 10), await trainOn(gpu, v, 10)];
        near(g.history[0].loss, c.history[0].loss, 1e-4, `${v}: first sync`);
        near(g.history.at(-1)!.loss, c.history.at(-1)!.loss, 0.02, `${v}: last sync`);
        const codes = await encodeDataset(gpu, g.params, data.x.subarray(0, 64 * 12));
        assert.equal(codes.kind, "csr");
      }
    } finally {
      gpu.destroy();
    }
  },
});

Deno.test({
  name: "examples train on the blas backend like on the cpu backend",
  ignore: blas === null,
  fn: async () => {
    for (const v of VARIANTS) {
      const [c, b] = [await trainOn(cpu, v, 10), await trainOn(blas!, v, 10)];
      near(b.history.at(-1)!.loss, c.history.at(-1)!.loss, 1e-3, `${v}: last sync`);
    }
  },
});

Deno.test({
  name: "examples train on the cpu-mt backend like on the cpu backend",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const mt = await selectBackend("cpu-mt", { threads: 2 });
    try {
      for (const v of VARIANTS) {
        const [c, m] = [await trainOn(cpu, v, 10), await trainOn(mt, v, 10)];
        near(m.history.at(-1)!.loss, c.history.at(-1)!.loss, 1e-3, `${v}: last sync`);
      }
    } finally {
      mt.destroy();
    }
  },
});

/** Host SAELens encode from the exported tensors (float64), for one sample. */
function saeLensEncode(
  arch: string,
  st: Record<string, Float32Array>,
  x: Float32Array,
  d: number,
  w: number,
) {
  const out = new Float64Array(w);
  for (let j = 0; j < w; j++) {
    let h = 0;
    for (let i = 0; i < d; i++) h += (x[i] - st.b_dec[i]) * st.W_enc[i * w + j];
    if (arch === "jumprelu") {
      const z = h + st.b_enc[j];
      out[j] = z > st.threshold[j] ? Math.max(z, 0) : 0;
    } else {
      const gate = h + st.b_gate[j] > 0 ? 1 : 0;
      out[j] = gate * Math.max(0, h * Math.exp(st.r_mag[j]) + st.b_mag[j]);
    }
  }
  return out;
}

Deno.test("checkpoints: SAELens exports (jumprelu natively, gated), read back and encoded as SAELens does", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const want = {
      jumprelu: ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"],
      gated: ["W_dec", "W_enc", "b_dec", "b_gate", "b_mag", "r_mag"],
      "ms-penalty": ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"],
    } as Record<string, string[]>;
    for (const v of VARIANTS) {
      const dir = join(tmp, v);
      const r = await trainSae(cpu, data.x, { variant: v, ...base, steps: 30 }, { checkpointDir: dir });
      const cfgJson = JSON.parse(await Deno.readTextFile(join(dir, "cfg.json")));
      const arch = v === "gated" ? "gated" : "jumprelu";
      assert.equal(cfgJson.architecture, arch);
      assert.equal(cfgJson.d_in, 12);
      const st = await readSafetensors(join(dir, "sae_weights.safetensors"));
      assert.deepEqual(Object.keys(st.tensors).sort(), want[v], `${v}: tensor names`);
      assert.deepEqual(st.tensors.W_enc.shape, [12, 48]);
      const T = Object.fromEntries(Object.entries(st.tensors).map(([n, t]) => [n, t.data as Float32Array]));
      if (v === "jumprelu") {
        const th = r.params.extra!.log_threshold.map(Math.exp);
        for (let j = 0; j < 48; j++) near(T.threshold[j], th[j], 1e-6, "per-latent threshold");
        assert.ok(new Set(T.threshold).size > 1, "thresholds are learned per latent");
      }
      // The checkpoint encodes like SAELens on the host, and loads back to the same encoder.
      const loaded = await loadSae(dir);
      const xs = data.x.subarray(0, 20 * 12);
      const [a, b] = [await encodeDataset(cpu, r.params, xs), await encodeDataset(cpu, loaded, xs)];
      assert.deepEqual(b, a, `${v}: reloaded checkpoint encodes identically`);
      if (a.kind !== "csr") throw new Error("csr expected");
      for (let s = 0; s < 20; s++) {
        const ref = saeLensEncode(arch, T, xs.subarray(s * 12, s * 12 + 12), 12, 48);
        const got = new Float64Array(48);
        for (let e = a.rowPtr[s]; e < a.rowPtr[s + 1]; e++) got[a.idx[e]] = a.val[e];
        if (v === "ms-penalty") continue; // scalar threshold: checked below via the broadcast tensor
        for (let j = 0; j < 48; j++) near(got[j], ref[j], 1e-5, `${v}: sample ${s} latent ${j}`);
      }
      if (v === "ms-penalty") assert.ok(T.threshold.every((t) => t === Math.max(r.params.threshold, 0)));
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("resume: a tape-based architecture resumes bit-identically on the cpu backend", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    for (const v of ["jumprelu", "gated"]) {
      const full = await trainOn(cpu, v, 30);
      const dir = join(tmp, v);
      let stop = false;
      await trainSae(cpu, data.x, { variant: v, ...base, steps: 30 }, {
        checkpointDir: dir,
        checkpointEvery: 10,
        syncEvery: 5,
        onProgress: (p) => {
          if (p.step === 25 && !stop) {
            stop = true;
            throw new Error("interrupted");
          }
        },
      }).catch((e) => assert.match(String(e), /interrupted/));
      const resumed = await trainSae(cpu, data.x, { variant: v, ...base, steps: 30 }, {
        resumeDir: dir,
        syncEvery: 5,
      });
      assert.equal(resumed.resumedFrom, 20);
      assert.deepEqual(resumed.params.Wenc, full.params.Wenc, `${v}: W_enc`);
      assert.deepEqual(resumed.params.extra, full.params.extra, `${v}: extra parameters`);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("bad options and malformed architectures are clear MonobenchErrors", () => {
  assert.throws(
    () =>
      resolveSaeConfig(getSae("jumprelu"), {
        variant: "jumprelu",
        d: 4,
        width: 8,
        options: { bandwidth: 0 },
      }),
    MonobenchError,
  );
  assert.throws(
    () =>
      resolveSaeConfig(getSae("ms-penalty"), { variant: "ms-penalty", d: 4, width: 8, options: { ms: -1 } }),
    MonobenchError,
  );
  const v = getSae("gated");
  const cfg = resolveSaeConfig(v, { variant: "gated", d: 4, width: 8 });
  const broken = { ...v, name: "broken", params: () => [] } as typeof v;
  assert.throws(
    () =>
      new SaeEngine(cpu, broken, cfg, {
        Wenc: new Float32Array(32),
        benc: new Float32Array(8),
        Wdec: new Float32Array(32),
        bdec: new Float32Array(4),
      }),
    MonobenchError,
  );
});

Deno.test("CLI: each example loads with --sae-module and joins the grid", async () => {
  const args = ["run", "-A", new URL("../tasks/reproduce.ts", import.meta.url).pathname];
  for (
    const [file, name] of [["jumprelu.ts", "jumprelu"], ["gated.ts", "gated"], [
      "ms_penalty.ts",
      "ms-penalty",
    ]]
  ) {
    args.push("--sae-module", new URL(`../examples/${file}`, import.meta.url).pathname, "--sae", name);
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...args, "--preset", "smoke", "--list"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  for (const name of ["jumprelu", "gated", "ms-penalty"]) assert.match(text, new RegExp(`${name}-last-x1`));
});
