import assert from "node:assert/strict";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu.ts";
import { writeStore } from "../src/data/store.ts";
import { importManifest } from "../src/io/import.ts";
import { msBrute, msScores, summarizeMs } from "../src/metrics/ms.ts";
import { reconMetrics } from "../src/metrics/recon.ts";
import { getSae } from "../src/sae/registry.ts";
import { resolveSaeConfig } from "../src/sae/config.ts";
import type { SaeParams } from "../src/sae/types.ts";
import "../src/sae/mod.ts";
import {
  encodeDataset,
  loadSae,
  plantedSparseData,
  saveSae,
  trainSae,
  writeSafetensors,
} from "../src/train/mod.ts";
import type { ActMatrix } from "../src/types.ts";
import { Rng } from "../src/util/rng.ts";
import { main } from "../tasks/measure.ts";

/** A float32 .npy file (format 1.0, C order), built by hand per the spec. */
function npy(n: number, d: number, vals: ArrayLike<number>): Uint8Array {
  let h = `{'descr': '<f4', 'fortran_order': False, 'shape': (${n}, ${d}), }`;
  h = h.padEnd(Math.ceil((10 + h.length + 1) / 64) * 64 - 10 - 1) + "\n";
  const out = new Uint8Array(10 + h.length + n * d * 4);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  const dv = new DataView(out.buffer);
  dv.setUint16(8, h.length, true);
  out.set(new TextEncoder().encode(h), 10);
  for (let i = 0; i < n * d; i++) dv.setFloat32(10 + h.length + 4 * i, vals[i], true);
  return out;
}

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "monobench-measure-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function capture() {
  const out: string[] = [], err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const c = capture();
  const code = await main(argv, c.io);
  return { code, out: c.out.join("\n"), err: c.err.join("\n") };
}

// deno-lint-ignore no-explicit-any
async function readJson(path: string): Promise<any> {
  return JSON.parse(await Deno.readTextFile(path));
}

const close = (a: number | null, b: number, tol: number, what: string) =>
  assert.ok(a !== null && Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

/**
 * Identity ReLU SAE on d inputs, width 2d: latent j = ReLU(x_j), latent d+j = ReLU(−x_j),
 * decoder rows e_j and −e_j, so x̂ = x exactly.
 */
function identitySae(d: number): SaeParams {
  const width = 2 * d;
  const Wenc = new Float32Array(width * d), Wdec = new Float32Array(width * d);
  for (let j = 0; j < d; j++) {
    Wenc[j * d + j] = 1;
    Wenc[(d + j) * d + j] = -1;
    Wdec[j * d + j] = 1;
    Wdec[(d + j) * d + j] = -1;
  }
  return {
    cfg: resolveSaeConfig(getSae("relu"), { variant: "relu", d, width }),
    Wenc,
    benc: new Float32Array(width),
    Wdec,
    bdec: new Float32Array(d),
    threshold: -1,
    normFactor: 1,
  };
}

Deno.test("measure: hand-built identity SAE — exact R², L0, dead latents; MS matches the brute-force oracle", async () => {
  await withTmp(async (dir) => {
    const n = 40, d = 4, rng = new Rng(11);
    const x = new Float32Array(n * d);
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < d; c++) x[r * d + c] = c === 0 ? Math.abs(rng.normal()) + 0.1 : rng.normal();
    }
    const embA = Float32Array.from({ length: n * 3 }, () => rng.normal());
    const embB = Float32Array.from({ length: n * 2 }, () => rng.normal() + 0.5);
    await saveSae(join(dir, "sae"), identitySae(d));
    await writeStore(join(dir, "acts"), x, n, d);
    await writeStore(join(dir, "embA"), embA, n, 3);
    await Deno.writeFile(join(dir, "embB.npy"), npy(n, 2, embB));

    const res = await run([
      "--sae",
      join(dir, "sae"),
      "--acts",
      join(dir, "acts"),
      "--similarity",
      `a=${join(dir, "embA")}`,
      "--similarity",
      `b=${join(dir, "embB.npy")}`,
      "--backend",
      "cpu",
      "--out",
      join(dir, "o", "m.json"),
      "--scores",
      join(dir, "o", "s.csv"),
    ]);
    assert.equal(res.code, 0, res.err);
    assert.match(res.out, /standard \(relu\) d=4 width=8/);
    assert.match(res.out, /R²\s+100\.00 %/);
    assert.match(res.out, /dead latents 1\/8/);

    const r = await readJson(join(dir, "o", "m.json"));
    assert.equal(r.format, "monobench-measure");
    assert.equal(r.backend, "cpu");
    assert.equal(r.useThreshold, true);
    assert.deepEqual([r.data.n, r.data.d], [n, d]);
    assert.equal(r.sae.architecture, "standard");
    close(r.r2, 100, 1e-9, "r2");
    close(r.fve.r2_global, 1, 1e-12, "r2_global");
    close(r.fve.fve_uncentered, 1, 1e-12, "fve_uncentered");
    assert.equal(r.l0, d, "exactly one of ReLU(x), ReLU(-x) is nonzero per input");
    assert.equal(r.deadCount, 1, "ReLU(-x_0) never fires: x_0 > 0");
    assert.equal(r.deadFraction, 1 / 8);

    // Oracle: the codes are [ReLU(x), ReLU(-x)]; msBrute is the reference pair loop.
    const codes = new Float32Array(n * 2 * d);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < d; c++) {
        codes[i * 2 * d + c] = Math.max(0, x[i * d + c]);
        codes[i * 2 * d + d + c] = Math.max(0, -x[i * d + c]);
      }
    }
    const dense = (data: Float32Array, cols: number): ActMatrix => ({ kind: "dense", n, cols, data });
    const csv = (await Deno.readTextFile(join(dir, "o", "s.csv"))).trim().split("\n");
    assert.equal(csv[0], "latent,fires,a,b");
    assert.equal(csv.length, 1 + 2 * d);
    for (const [si, [name, emb, D]] of ([["a", embA, 3], ["b", embB, 2]] as const).entries()) {
      const want = msBrute(dense(codes, 2 * d), emb, D);
      const wantRaw = summarizeMs(msBrute(dense(x, d), emb, D), name);
      const got = r.ms[si], raw = r.raw.ms[si];
      assert.equal(got.encoder, name);
      const ws = summarizeMs(want, name);
      close(got.mean, ws.mean, 1e-9, `${name} mean`);
      close(got.std, ws.std, 1e-9, `${name} std`);
      close(got.max, ws.max, 1e-9, `${name} max`);
      assert.equal(got.nanCount, 1);
      close(raw.mean, wantRaw.mean, 1e-9, `${name} raw mean`);
      assert.equal(raw.nanCount, 0);
      let above = 0, valid = 0;
      for (const v of want) if (!Number.isNaN(v)) (valid++, v > wantRaw.mean && above++);
      close(r.fracAboveRaw[name], above / valid, 1e-12, `${name} frac above raw`);
      for (let j = 0; j < 2 * d; j++) {
        const cells = csv[1 + j].split(",");
        assert.equal(cells[0], String(j));
        let fires = 0;
        for (let i = 0; i < n; i++) if (codes[i * 2 * d + j] !== 0) fires++;
        assert.equal(Number(cells[1]), fires);
        const v = Number(cells[2 + si]);
        if (Number.isNaN(want[j])) assert.equal(cells[2 + si], "NaN", `latent ${j}`);
        else close(v, want[j], 1e-9, `${name} latent ${j}`);
      }
    }

    // Errors: width mismatch, row mismatch, bad options.
    await writeStore(join(dir, "acts5"), new Float32Array(n * 5), n, 5);
    await writeStore(join(dir, "emb39"), embA.subarray(0, 39 * 3), 39, 3);
    const sae = ["--sae", join(dir, "sae"), "--backend", "cpu"];
    for (
      const [argv, re] of [
        [["--acts", join(dir, "acts5")], /takes d_in = 4 but the activations .*acts5 have D = 5/],
        [
          ["--acts", join(dir, "acts"), "--similarity", `a=${join(dir, "emb39")}`],
          /same images in the same order/,
        ],
        [["--acts", join(dir, "acts"), "--data", "m.json"], /either --data/],
        [["--acts", join(dir, "acts"), "--layer", "last"], /--layer goes with --data/],
        [["--acts", join(dir, "acts"), "--backend", "gpu"], /unknown backend "gpu"/],
        [["--acts", join(dir, "nope")], /--acts: not found/],
        [["--acts", join(dir, "acts"), "--similarity", "a"], /expected NAME=STORE/],
        [["--acts", join(dir, "acts"), "--recon-batch", "1"], /--recon-batch must be/],
      ] as [string[], RegExp][]
    ) {
      const e = await run([...sae, ...argv]);
      assert.equal(e.code, 2, argv.join(" "));
      assert.match(e.err, re);
    }
    const noSae = await run(["--acts", join(dir, "acts")]);
    assert.equal(noSae.code, 2);
    assert.match(noSae.err, /--sae is required/);
    // Without similarity sources, reconstruction metrics only.
    const bare = await run([...sae, "--acts", join(dir, "acts")]);
    assert.equal(bare.code, 0, bare.err);
    assert.match(bare.err, /MS is skipped/);
  });
});

Deno.test("measure: a trainSae checkpoint on an imported manifest; thresholded and --no-threshold", async () => {
  await withTmp(async (dir) => {
    const d = 8, nTrain = 240, nEval = 60;
    const { x } = plantedSparseData(nTrain + nEval, d, 16, 2, 3);
    const rng = new Rng(5);
    const emb = Float32Array.from({ length: nEval * 4 }, () => rng.normal());
    await Deno.writeFile(join(dir, "train.npy"), npy(nTrain, d, x.subarray(0, nTrain * d)));
    await Deno.writeFile(join(dir, "val.npy"), npy(nEval, d, x.subarray(nTrain * d)));
    await Deno.writeFile(join(dir, "emb.npy"), npy(nEval, 4, emb));
    const manifest = join(dir, "data.json");
    await importManifest({
      manifest,
      layers: [{ layer: "last", train: [join(dir, "train.npy")], eval: [join(dir, "val.npy")] }],
      similarity: [{ name: "emb", eval: [join(dir, "emb.npy")] }],
    });
    const be = new CpuBackend();
    const ck = join(dir, "sae");
    const trained = await trainSae(be, x.subarray(0, nTrain * d), {
      variant: "batchtopk",
      d,
      width: 32,
      k: 4,
      steps: 40,
      batchSize: 32,
      warmupSteps: 4,
      thresholdStartStep: 5,
      normBatches: 2,
    }, { checkpointDir: ck });
    assert.ok(trained.params.threshold > 0);

    const out = join(dir, "m.json");
    const res = await run(["--sae", ck, "--data", manifest, "--backend", "cpu", "--out", out]);
    assert.equal(res.code, 0, res.err);
    const r = await readJson(out);
    assert.equal(r.data.layer, "last");
    assert.equal(r.sae.variant, "batchtopk");
    assert.equal(r.sae.monobench, true);
    // Same numbers as the library calls the reproduce pipeline makes.
    const params = await loadSae(ck);
    const xe = x.slice(nTrain * d);
    const codes = await encodeDataset(be, params, xe);
    const rec = reconMetrics(xe, nEval, d, codes, params.Wdec, params.bdec);
    close(r.r2, rec.r2, 1e-12, "r2");
    assert.equal(r.l0, rec.l0);
    assert.equal(r.deadCount, rec.deadCount);
    const ms = summarizeMs(msScores(codes, emb, 4), "emb");
    close(r.ms[0].mean, ms.mean, 1e-12, "ms mean");
    assert.equal(r.ms[0].nanCount, ms.nanCount);

    const nt = await run([
      "--sae",
      ck,
      "--data",
      manifest,
      "--layer",
      "last",
      "--backend",
      "cpu",
      "--no-threshold",
    ]);
    assert.equal(nt.code, 0, nt.err);
    assert.match(nt.out, /training-activation encode/);
    const l0 = Number(/L0\s+([\d.]+)/.exec(nt.out)![1]);
    assert.ok(l0 > 0 && l0 <= 4, `batch top-4 L0 ${l0}`);

    const bad = await run(["--sae", ck, "--data", manifest, "--layer", "11", "--backend", "cpu"]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /layer "11" is not in/);
  });
});

Deno.test("measure: plain SAELens jumprelu checkpoint (apply_b_dec_to_input false) equals the folded SAE", async () => {
  await withTmp(async (dir) => {
    const d = 6, width = 12, n = 50, rng = new Rng(21);
    const rnd = (len: number, s = 1) => Float32Array.from({ length: len }, () => s * rng.normal());
    const Wenc = rnd(width * d), Wdec = rnd(width * d, 0.5), bdec = rnd(d, 0.3), benc = rnd(width, 0.2);
    const thr = 0.4;
    // SAELens: f = JumpReLU(x·W_enc + b_enc') with b_enc' = b_enc − W_enc·b_dec, i.e. the same as
    // our (x − b_dec)·W_enc + b_enc.
    const bencSl = new Float32Array(width);
    for (let j = 0; j < width; j++) {
      let s = benc[j];
      for (let i = 0; i < d; i++) s -= Wenc[j * d + i] * bdec[i];
      bencSl[j] = s;
    }
    const WencT = new Float32Array(d * width);
    for (let j = 0; j < width; j++) for (let i = 0; i < d; i++) WencT[i * width + j] = Wenc[j * d + i];
    const sl = join(dir, "saelens");
    await Deno.mkdir(sl);
    const cfg = {
      architecture: "jumprelu",
      d_in: d,
      d_sae: width,
      dtype: "float32",
      apply_b_dec_to_input: false,
      normalize_activations: "none",
      model_name: "clip-vit-large-patch14",
      hook_name: "blocks.22.hook_resid_post",
    };
    await Deno.writeTextFile(join(sl, "cfg.json"), JSON.stringify(cfg));
    await writeSafetensors(join(sl, "sae_weights.safetensors"), {
      W_enc: { shape: [d, width], data: WencT },
      b_enc: { shape: [width], data: bencSl },
      W_dec: { shape: [width, d], data: Wdec },
      b_dec: { shape: [d], data: bdec },
      threshold: { shape: [width], data: new Float32Array(width).fill(thr) },
    });
    const ours: SaeParams = {
      cfg: resolveSaeConfig(getSae("batchtopk"), { variant: "batchtopk", d, width, k: 4 }),
      Wenc,
      benc,
      Wdec,
      bdec,
      threshold: thr,
      normFactor: 1,
    };
    await saveSae(join(dir, "ours"), ours);
    const x = rnd(n * d);
    const emb = rnd(n * 3);
    await writeStore(join(dir, "acts"), x, n, d);
    await writeStore(join(dir, "emb"), emb, n, 3);
    const data = ["--acts", join(dir, "acts"), "--similarity", `e=${join(dir, "emb")}`, "--backend", "cpu"];

    const a = await run(["--sae", sl, ...data, "--out", join(dir, "a.json")]);
    assert.equal(a.code, 0, a.err);
    assert.match(a.out, /note: apply_b_dec_to_input = false: folded/);
    const b = await run(["--sae", join(dir, "ours"), ...data, "--out", join(dir, "b.json")]);
    assert.equal(b.code, 0, b.err);
    const ra = await readJson(join(dir, "a.json")), rb = await readJson(join(dir, "b.json"));
    assert.equal(ra.sae.monobench, false);
    assert.equal(ra.sae.architecture, "jumprelu");
    assert.deepEqual(ra.sae.origin, { model_name: cfg.model_name, hook_name: cfg.hook_name });
    close(ra.sae.threshold, thr, 1e-7, "threshold");
    assert.ok(rb.l0 > 0 && rb.l0 < width, `non-trivial sparsity (${rb.l0})`);
    assert.equal(ra.l0, rb.l0);
    assert.equal(ra.deadCount, rb.deadCount);
    close(ra.r2, rb.r2, 1e-5, "r2");
    close(ra.ms[0].mean, rb.ms[0].mean, 1e-5, "ms mean");
    close(ra.raw.ms[0].mean, rb.raw.ms[0].mean, 0, "raw ms");

    // --no-threshold makes no sense for a plain jumprelu SAE; unsupported normalisation is refused.
    const nt = await run(["--sae", sl, ...data, "--no-threshold"]);
    assert.equal(nt.code, 2);
    assert.match(nt.err, /--no-threshold needs a monobench BatchTopK\/Matryoshka checkpoint/);
    await Deno.writeTextFile(
      join(sl, "cfg.json"),
      JSON.stringify({ ...cfg, normalize_activations: "expected_average_only_in" }),
    );
    const nz = await run(["--sae", sl, ...data]);
    assert.equal(nz.code, 2);
    assert.match(nz.err, /normalize_activations = "expected_average_only_in" is not supported/);
    assert.match(nz.err, /^hint: /m);
  });
});

Deno.test("measure: CLI as a subprocess — exit code 2 and a one-line message for a missing checkpoint", async () => {
  await withTmp(async (dir) => {
    const p = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../tasks/measure.ts", import.meta.url).pathname,
        "--sae",
        join(dir, "nothing"),
        "--acts",
        join(dir, "acts"),
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(p.stderr);
    assert.equal(p.code, 2, stderr);
    assert.match(stderr, /^monobench: SAE checkpoint not found: .*nothing$/m);
    assert.match(stderr, /^hint: --sae takes a directory with cfg\.json/m);
    const help = await main(["--help"], capture().io);
    assert.equal(help, 0);
  });
});

Deno.test("measure: --sae-module registers a user architecture before its checkpoint is read", async () => {
  await withTmp(async (dir) => {
    const { trainSae, saveSae } = await import("../src/train/mod.ts");
    await import("../examples/jumprelu.ts");
    const rng = new Rng(11);
    const n = 64, d = 8;
    const x = rng.normals(n * d, 1);
    const trained = await trainSae(new CpuBackend(), x, {
      variant: "jumprelu",
      d,
      width: 16,
      steps: 6,
      batchSize: 32,
      warmupSteps: 1,
    });
    const saeDir = join(dir, "sae");
    await saveSae(saeDir, trained.params);
    await Deno.writeFile(join(dir, "acts.npy"), npy(n, d, x));
    const measure = (extra: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../tasks/measure.ts", import.meta.url).pathname,
          "--sae",
          saeDir,
          "--acts",
          join(dir, "acts.npy"),
          "--backend",
          "cpu",
          ...extra,
        ],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
    const without = await measure([]);
    const err = new TextDecoder().decode(without.stderr);
    assert.equal(without.code, 2, err);
    assert.match(err, /unknown SAE variant "jumprelu"/);
    const withModule = await measure([
      "--sae-module",
      new URL("../examples/jumprelu.ts", import.meta.url).pathname,
    ]);
    const out = new TextDecoder().decode(withModule.stdout);
    assert.equal(withModule.code, 0, new TextDecoder().decode(withModule.stderr));
    assert.match(out, /L0/);
    // Under `deno task` relative paths mean the caller's directory (INIT_CWD), not the repo's.
    const rel = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../tasks/measure.ts", import.meta.url).pathname, "--sae", "sae"]
        .concat(["--acts", "acts.npy", "--backend", "cpu", "--sae-module"])
        .concat([new URL("../examples/jumprelu.ts", import.meta.url).pathname]),
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", INIT_CWD: dir, npm_config_user_agent: "deno/2.9.6" },
    }).output();
    assert.equal(rel.code, 0, new TextDecoder().decode(rel.stderr));
  });
});
