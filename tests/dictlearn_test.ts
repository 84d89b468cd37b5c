/**
 * dictionary_learning checkpoints (src/io/dictlearn.ts), the reference folder walker
 * (src/io/reference_layout.ts) and `deno task measure --sae <ae.pt | trainer_0>`, against the
 * reference maths computed in PyTorch by fixtures/torch/make_fixtures.py.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu.ts";
import { loadDictLearningFile, loadDictLearningSae, trainerCheckpoint } from "../src/io/dictlearn.ts";
import { loadSaeForMeasure } from "../src/io/measure.ts";
import { decodeNpy } from "../src/io/npy.ts";
import { parseActsName, walkReferenceLayout } from "../src/io/reference_layout.ts";
import "../src/sae/mod.ts";
import { loadSae, saveSae } from "../src/train/checkpoint.ts";
import { readSafetensors } from "../src/train/safetensors.ts";
import { encodeDataset } from "../src/train/encode.ts";
import type { ActMatrix } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { main } from "../tasks/measure.ts";

const FIX = new URL("../fixtures/torch/", import.meta.url).pathname;
const REF = join(FIX, "reference");
const MODEL = "clip-vit-large-patch14-336";
const BTK_TRAINER = join(
  REF,
  "batch_top_k_4_x4",
  `imagenet_train_activations_${MODEL}_-1_post_projection_batch_top_k_4_x4`,
  "trainer_0",
);
const MAT_TRAINER = join(
  REF,
  "matroyshka_batch_top_k_4_x4",
  `imagenet_train_activations_${MODEL}_11_post_mlp_residual_matroyshka_batch_top_k_4_x4`,
  "trainer_0",
);
const PARTS = join(FIX, "parts");
const EMB = join(PARTS, "imagenet_val_embeddings_dinov2-base.pt");

interface SaeExpect {
  threshold: number;
  k: number;
  l0: number;
  l0_relu: number;
  dead: number;
  fve_batchmean: number;
  fve_relu: number;
  ms: (number | null)[];
  group_sizes?: number[];
}
const EXP: {
  n: number;
  d: number;
  width: number;
  raw_ms: (number | null)[];
  raw_ms_f16: (number | null)[];
  saes: Record<string, SaeExpect>;
} = JSON.parse(await Deno.readTextFile(join(FIX, "expected", "expected.json")));

const npy = async (name: string) => decodeNpy(await Deno.readFile(join(FIX, "expected", name)), name).data;
const X = await npy("x.npy");

const mbErr = (...res: RegExp[]) => (e: unknown) => {
  assert.ok(e instanceof MonobenchError, `expected MonobenchError, got ${e}`);
  for (const re of res) assert.match(`${e.message}\nhint: ${e.hint ?? ""}`, re);
  return true;
};

function dense(a: ActMatrix): Float32Array {
  if (a.kind === "dense") return a.data;
  const out = new Float32Array(a.n * a.cols);
  for (let r = 0; r < a.n; r++) {
    for (let t = a.rowPtr[r]; t < a.rowPtr[r + 1]; t++) out[r * a.cols + a.idx[t]] = a.val[t];
  }
  return out;
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    assert.ok(
      Math.abs(got[i] - want[i]) <= tol * Math.max(1, Math.abs(want[i])),
      `${what}[${i}]: ${got[i]} vs ${want[i]}`,
    );
  }
}

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "monobench-dictlearn-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("dictlearn: BatchTopK and Matryoshka ae.pt encode and decode as the reference does", async () => {
  const be = new CpuBackend();
  try {
    for (
      const [name, file] of [
        ["batchtopk", join(BTK_TRAINER, "checkpoints", "ae_100000.pt")],
        ["matryoshka", join(MAT_TRAINER, "checkpoints", "ae_100000.pt")],
      ] as const
    ) {
      const e = EXP.saes[name];
      const s = await loadDictLearningFile(file);
      assert.equal(s.variant, name);
      assert.equal(s.params.cfg.variant, name);
      assert.deepEqual([s.d, s.width, s.k, s.params.cfg.k], [EXP.d, EXP.width, e.k, e.k]);
      assert.equal(s.threshold, e.threshold, "the scalar threshold buffer, exactly");
      assert.equal(s.params.threshold, e.threshold);
      assert.ok(s.threshold > 0);
      assert.equal(s.step, 100000);
      assert.ok(s.config && s.configPath?.endsWith("trainer_0/config.json"));
      if (name === "matryoshka") {
        assert.deepEqual(s.groupSizes, e.group_sizes);
        assert.deepEqual(s.groupSizes, [2, 4, 8, 18]);
      }
      // Thresholded encode: f·(f > θ) on f = ReLU(W_enc(x − b_dec) + b_enc), as torch computed it.
      const codes = dense(await encodeDataset(be, s.params, X, { useThreshold: true }));
      const want = await npy(`${name}_codes.npy`);
      close(codes, want, 1e-5, `${name} codes`);
      assert.equal(
        codes.filter((v) => v !== 0).length,
        want.filter((v) => v !== 0).length,
        "same active set",
      );
      // Decode: W_dec·f + b_dec (float64 here, an independent reconstruction).
      const recon = new Float64Array(EXP.n * EXP.d);
      for (let r = 0; r < EXP.n; r++) {
        for (let i = 0; i < EXP.d; i++) {
          let v = s.params.bdec[i];
          for (let j = 0; j < EXP.width; j++) v += codes[r * EXP.width + j] * s.params.Wdec[j * EXP.d + i];
          recon[r * EXP.d + i] = v;
        }
      }
      close(recon, await npy(`${name}_recon.npy`), 1e-5, `${name} recon`);
    }
  } finally {
    be.destroy();
  }
});

Deno.test("dictlearn: a BatchTopK checkpoint can never be read as a plain ReLU SAE (SAELens PR #608)", async () => {
  // The fixture's threshold matters: ReLU would keep more latents (torch's own numbers).
  const e = EXP.saes.batchtopk;
  assert.ok(e.l0 < e.l0_relu && e.fve_batchmean !== e.fve_relu);
  // Measured through the CLI from the trainer folder: the thresholded L0, not ReLU's.
  await withTmp(async (dir) => {
    const out = join(dir, "m.json");
    const r = await run([
      "--sae",
      BTK_TRAINER,
      "--acts",
      join(PARTS, "f32"),
      "--backend",
      "cpu",
      "--out",
      out,
    ]);
    assert.equal(r.code, 0, r.err);
    const rep = JSON.parse(await Deno.readTextFile(out));
    assert.equal(rep.sae.architecture, "BatchTopKSAE");
    assert.equal(rep.sae.variant, "batchtopk");
    assert.equal(rep.sae.threshold, e.threshold);
    assert.ok(Math.abs(rep.l0 - e.l0) < 1e-9, `L0 ${rep.l0} vs torch ${e.l0} (ReLU would give ${e.l0_relu})`);
  });
  // Without its threshold (or k) the state dict is refused, not loaded as ReLU.
  for (const f of ["missing_threshold.pt", "missing_k.pt"]) {
    const p = join(FIX, "bad", f);
    await assert.rejects(
      loadDictLearningFile(p),
      mbErr(/BatchTopKSAE state dict without (threshold|k)/, /PR #608/),
    );
    await assert.rejects(loadSaeForMeasure(p), mbErr(/without/));
    const r = await run(["--sae", p, "--acts", join(PARTS, "f32")]);
    assert.equal(r.code, 2);
    assert.match(r.err, /^monobench: .*without (threshold|k)\nhint: .*plain ReLU SAE/);
  }
  // And there is no switch to ask for ReLU semantics.
  const r = await run(["--sae", BTK_TRAINER, "--variant", "relu", "--acts", join(PARTS, "f32")]);
  assert.equal(r.code, 2);
  assert.match(r.err, /Unknown option '--variant'/);
  // Re-exported as a monobench / SAELens checkpoint, the threshold survives: jumprelu with θ.
  await withTmp(async (dir) => {
    const s = await loadDictLearningSae(BTK_TRAINER);
    await saveSae(join(dir, "sae"), s.params);
    const cfg = JSON.parse(await Deno.readTextFile(join(dir, "sae", "cfg.json")));
    assert.equal(cfg.architecture, "jumprelu");
    const st = await readSafetensors(join(dir, "sae", "sae_weights.safetensors"));
    assert.ok(Array.from(st.tensors.threshold.data as Float32Array).every((v) => v === e.threshold));
    const back = await loadSae(join(dir, "sae"));
    assert.equal(back.threshold, e.threshold);
    const be = new CpuBackend();
    try {
      close(dense(await encodeDataset(be, back, X)), await npy("batchtopk_codes.npy"), 1e-5, "re-exported");
    } finally {
      be.destroy();
    }
  });
});

Deno.test("dictlearn: trainer folders pick checkpoints/ae_<step>.pt (default 100000) or ae.pt", async () => {
  assert.match(await trainerCheckpoint(MAT_TRAINER), /checkpoints\/ae_100000\.pt$/);
  assert.match(await trainerCheckpoint(MAT_TRAINER, 0), /checkpoints\/ae_0\.pt$/);
  assert.match(await trainerCheckpoint(MAT_TRAINER, "final"), /trainer_0\/ae\.pt$/);
  await assert.rejects(
    trainerCheckpoint(MAT_TRAINER, 5),
    mbErr(
      /no checkpoints\/ae_5\.pt; it has ae\.pt \(final\), checkpoints\/ae_0\.pt, checkpoints\/ae_100000\.pt/,
      /--step/,
    ),
  );
  await assert.rejects(
    trainerCheckpoint(BTK_TRAINER, "final"),
    mbErr(/no ae\.pt; it has checkpoints\/ae_100000\.pt/),
  );
  // ae_0.pt was saved before any threshold update: θ = −1, the encode is exactly ReLU.
  const s0 = await loadDictLearningSae(MAT_TRAINER, { step: 0 });
  assert.equal(s0.threshold, -1);
  assert.ok(s0.notes.some((n) => /plain ReLU/.test(n)));
  const e0 = EXP.saes.matryoshka_step0, ef = EXP.saes.matryoshka_final;
  assert.equal(e0.l0, e0.l0_relu);
  const sf = await loadDictLearningSae(MAT_TRAINER, { step: "final" });
  assert.equal(sf.threshold, ef.threshold);
  assert.equal(sf.step, null);
  const be = new CpuBackend();
  try {
    for (const [s, e] of [[s0, e0], [sf, ef]] as const) {
      const codes = dense(await encodeDataset(be, s.params, X));
      const l0 = codes.filter((v) => v !== 0).length / EXP.n;
      assert.ok(Math.abs(l0 - e.l0) < 1e-9, `${s.file}: L0 ${l0} vs ${e.l0}`);
    }
  } finally {
    be.destroy();
  }
  await assert.rejects(
    loadDictLearningSae(join(MAT_TRAINER, "ae.pt"), { step: 0 }),
    mbErr(/give the folder/),
  );
  await assert.rejects(loadDictLearningSae(join(REF, "nope")), mbErr(/SAE checkpoint not found/));
});

Deno.test("dictlearn: malformed state dicts and mismatched configs are refused", async () => {
  const bad = (f: string) => join(FIX, "bad", f);
  assert.equal((await loadDictLearningFile(bad("ok_batchtopk.pt"), { configPath: null })).width, 8);
  await assert.rejects(
    loadDictLearningFile(bad("wrong_shape.pt")),
    mbErr(/encoder\.bias\]: tensor of shape \[7\] float32: expected shape \[8\]/),
  );
  await assert.rejects(
    loadDictLearningFile(bad("nan_weight.pt")),
    mbErr(/decoder\.weight\]: .*non-finite value NaN at row 1, column 3/),
  );
  await assert.rejects(
    loadDictLearningFile(bad("unknown_key.pt")),
    mbErr(/not a BatchTopKSAE state dict: unexpected log_threshold/),
  );
  await assert.rejects(
    loadDictLearningFile(bad("autoencoder.pt")),
    mbErr(/dictionary_learning AutoEncoder \(ReLU \+ L1\)/),
  );
  await assert.rejects(
    loadDictLearningFile(bad("float_k.pt")),
    mbErr(/\[k\]: tensor of shape \[\] float32: expected an integer/),
  );
  await assert.rejects(
    loadDictLearningFile(join(FIX, "tensors", "f32.pt")),
    mbErr(/expected a state dict of tensors, found a single tensor/),
  );
  await assert.rejects(
    loadDictLearningFile(join(FIX, "tensors", "dict.pt")),
    mbErr(/not a dictionary_learning BatchTopKSAE \/ MatroyshkaBatchTopKSAE state dict \(keys: w, w_t/),
  );
  await assert.rejects(loadDictLearningFile(join(FIX, "tensors", "legacy.pt")), mbErr(/legacy/));
  await withTmp(async (dir) => {
    const t = join(dir, "trainer_0");
    await Deno.mkdir(join(t, "checkpoints"), { recursive: true });
    await Deno.copyFile(
      join(MAT_TRAINER, "checkpoints", "ae_100000.pt"),
      join(t, "checkpoints", "ae_100000.pt"),
    );
    const cfg = JSON.parse(await Deno.readTextFile(join(MAT_TRAINER, "config.json")));
    cfg.trainer.k = 5;
    await Deno.writeTextFile(join(t, "config.json"), JSON.stringify(cfg));
    await assert.rejects(loadDictLearningSae(t), mbErr(/k is 4 but .*config\.json says 5/, /different runs/));
    cfg.trainer.k = 4;
    cfg.trainer.group_sizes = [4, 4, 8, 16];
    await Deno.writeTextFile(join(t, "config.json"), JSON.stringify(cfg));
    await assert.rejects(
      loadDictLearningSae(t),
      mbErr(/group_sizes is \[2,4,8,18\] but .*says \[4,4,8,16\]/),
    );
    await Deno.writeTextFile(join(t, "config.json"), "{not json");
    await assert.rejects(loadDictLearningSae(t), mbErr(/config\.json: malformed JSON/));
    await Deno.remove(join(t, "config.json"));
    assert.equal((await loadDictLearningSae(t)).config, null, "config.json is optional");
    const bytes = await Deno.readFile(join(t, "checkpoints", "ae_100000.pt"));
    await Deno.writeFile(join(t, "checkpoints", "ae_100000.pt"), bytes.subarray(0, bytes.length - 100));
    await assert.rejects(loadDictLearningSae(t), mbErr(/ae_100000\.pt: not a complete ZIP archive/));
  });
});

Deno.test("reference layout: every SAE of a checkpoints folder, with its names parsed and checked", async () => {
  const { saes, skipped } = await walkReferenceLayout(REF);
  assert.deepEqual(skipped, []);
  assert.deepEqual(
    saes.map((
      s,
    ) => [s.saeModel, s.variant, s.k, s.expansion, s.step, s.sourceLayer, s.model, s.attachmentPoint]),
    [
      ["batch_top_k", "batchtopk", 4, 4, 100000, "last", MODEL, "post_projection"],
      ["matroyshka_batch_top_k", "matryoshka", 4, 4, 100000, "11", MODEL, "post_mlp_residual"],
    ],
  );
  assert.equal(saes[0].trainerDir, BTK_TRAINER);
  assert.equal(saes[1].acts, `imagenet_train_activations_${MODEL}_11_post_mlp_residual`);
  assert.equal(saes[1].dataset, "imagenet");
  assert.equal(saes[1].sae.threshold, EXP.saes.matryoshka.threshold);
  assert.deepEqual(saes[1].sae.groupSizes, [2, 4, 8, 18]);
  // One SAE folder as the root; another step.
  const one = await walkReferenceLayout(join(REF, "matroyshka_batch_top_k_4_x4"), { step: 0 });
  assert.equal(one.saes.length, 1);
  assert.equal(one.saes[0].sae.threshold, -1);
  await assert.rejects(walkReferenceLayout(REF, { step: "final" }), mbErr(/batch_top_k_4_x4.*no ae\.pt/));
  assert.deepEqual(parseActsName("my_acts"), {
    sourceLayer: "my_acts",
    model: null,
    dataset: null,
    attachmentPoint: null,
  });
  assert.equal(
    parseActsName(`inat_val_activations_siglip-so400m-patch14-384_16_post_mlp_residual`).sourceLayer,
    "16",
  );

  await withTmp(async (dir) => {
    const copy = async (from: string, to: string) => {
      await Deno.mkdir(to, { recursive: true });
      for await (const e of Deno.readDir(from)) {
        if (e.isDirectory) await copy(join(from, e.name), join(to, e.name));
        else await Deno.copyFile(join(from, e.name), join(to, e.name));
      }
    };
    await copy(REF, join(dir, "ck"));
    await Deno.writeTextFile(join(dir, "ck", "README.md"), "weights\n");
    await Deno.mkdir(join(dir, "ck", ".cache"));
    await Deno.mkdir(join(dir, "ck", "notes"));
    assert.deepEqual((await walkReferenceLayout(join(dir, "ck"))).skipped, ["README.md", "notes"]);
    // Ambiguous: two trainers in one run.
    const run = join(
      dir,
      "ck",
      "batch_top_k_4_x4",
      `imagenet_train_activations_${MODEL}_-1_post_projection_batch_top_k_4_x4`,
    );
    await Deno.mkdir(join(run, "trainer_1"));
    await assert.rejects(
      walkReferenceLayout(join(dir, "ck")),
      mbErr(/trainer_0, trainer_1: several trainers in one run are ambiguous/),
    );
    await Deno.remove(join(run, "trainer_1"));
    // A run in the wrong SAE folder; names that disagree with the checkpoint.
    await Deno.rename(join(dir, "ck", "batch_top_k_4_x4"), join(dir, "ck", "batch_top_k_4_x8"));
    await assert.rejects(
      walkReferenceLayout(join(dir, "ck")),
      mbErr(/expected a folder named <activations>_batch_top_k_4_x8/),
    );
    await Deno.rename(run.replace("batch_top_k_4_x4/", "batch_top_k_4_x8/"), run.replace(/_4_x4/g, "_4_x8"));
    await assert.rejects(
      walkReferenceLayout(join(dir, "ck")),
      mbErr(/says expansion ×8 of d = 8, i\.e\. width 64 but the checkpoint has 32/),
    );
    await Deno.remove(join(dir, "ck", "batch_top_k_4_x8"), { recursive: true });
    // A corrupt checkpoint is named.
    const mat = join(dir, "ck", "matroyshka_batch_top_k_4_x4");
    const f = join(
      mat,
      `imagenet_train_activations_${MODEL}_11_post_mlp_residual_matroyshka_batch_top_k_4_x4`,
      "trainer_0",
      "checkpoints",
      "ae_100000.pt",
    );
    await Deno.writeFile(f, new Uint8Array(100));
    await assert.rejects(
      walkReferenceLayout(join(dir, "ck")),
      mbErr(/ae_100000\.pt: not a torch\.save file/),
    );
    await Deno.remove(mat, { recursive: true });
    await assert.rejects(walkReferenceLayout(join(dir, "ck")), mbErr(/no SAE folders/));
    await assert.rejects(walkReferenceLayout(join(dir, "none")), mbErr(/folder not found/));
  });
});

Deno.test("measure CLI: reference parts + embeddings .pt, numbers equal the torch reference maths", async () => {
  await withTmp(async (dir) => {
    for (
      const [name, sae, step] of [["matryoshka", MAT_TRAINER, []], ["matryoshka_final", MAT_TRAINER, [
        "--step",
        "final",
      ]], ["batchtopk", join(BTK_TRAINER, "checkpoints", "ae_100000.pt"), []]] as const
    ) {
      const e = EXP.saes[name];
      const out = join(dir, `${name}.json`), scores = join(dir, `${name}.csv`);
      const r = await run([
        "--sae",
        sae,
        ...step,
        "--acts",
        join(PARTS, "f32"),
        "--similarity",
        `dinov2=${EMB}`,
        "--backend",
        "cpu",
        "--out",
        out,
        "--scores",
        scores,
      ]);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /MatroyshkaBatchTopKSAE \(matryoshka\)|BatchTopKSAE \(batchtopk\)/);
      const rep = JSON.parse(await Deno.readTextFile(out));
      assert.equal(rep.data.n, EXP.n);
      assert.ok(Math.abs(rep.l0 - e.l0) < 1e-9, `${name} L0`);
      assert.equal(rep.deadCount, e.dead);
      assert.ok(
        Math.abs(rep.fve.fve_batchmean - e.fve_batchmean) < 1e-5,
        `${name} FVE ${rep.fve.fve_batchmean} vs ${e.fve_batchmean}`,
      );
      const lines = (await Deno.readTextFile(scores)).trim().split("\n").slice(1);
      const ms = lines.map((l) => Number(l.split(",")[2]));
      assert.equal(ms.length, EXP.width);
      for (let j = 0; j < EXP.width; j++) {
        const want = e.ms[j];
        if (want === null) assert.ok(Number.isNaN(ms[j]), `${name} latent ${j} NaN`);
        else assert.ok(Math.abs(ms[j] - want) < 1e-5, `${name} MS latent ${j}: ${ms[j]} vs ${want}`);
      }
      const raw = EXP.raw_ms.filter((v): v is number => v !== null);
      assert.ok(Math.abs(rep.raw.ms[0].mean - raw.reduce((a, b) => a + b, 0) / raw.length) < 1e-6);
    }
    // float16 parts, taken by a glob: the raw-neuron MS of the float16-rounded activations.
    const r = await run([
      "--sae",
      MAT_TRAINER,
      "--acts",
      join(PARTS, "f16"),
      "--similarity",
      `dinov2=${EMB}`,
      "--backend",
      "cpu",
      "--out",
      join(dir, "f16.json"),
    ]);
    assert.equal(r.code, 0, r.err);
    const raw16 = EXP.raw_ms_f16.filter((v): v is number => v !== null);
    const rep = JSON.parse(await Deno.readTextFile(join(dir, "f16.json")));
    assert.ok(Math.abs(rep.raw.ms[0].mean - raw16.reduce((a, b) => a + b, 0) / raw16.length) < 1e-6);
    // Bad options / inputs: exit 2 with one line and a hint.
    for (
      const [argv, re] of [
        [
          ["--sae", MAT_TRAINER, "--step", "x", "--acts", join(PARTS, "f32")],
          /--step must be a checkpoint step/,
        ],
        [["--sae", MAT_TRAINER, "--step", "7", "--acts", join(PARTS, "f32")], /no checkpoints\/ae_7\.pt/],
        [["--sae", MAT_TRAINER, "--acts", join(FIX, "tensors", "legacy.pt")], /legacy/],
        [
          ["--sae", MAT_TRAINER, "--acts", join(FIX, "tensors", "f16.pt")],
          /takes d_in = 8 but the activations .* have D = 7/,
        ],
        [[
          "--sae",
          BTK_TRAINER,
          "--acts",
          join(PARTS, "f32"),
          "--similarity",
          `e=${join(FIX, "tensors", "f32.pt")}`,
        ], /has 6 rows but the activations .* have 64/],
      ] as const
    ) {
      const res = await run([...argv]);
      assert.equal(res.code, 2, `${argv.join(" ")}: ${res.err}`);
      assert.match(res.err, re);
      assert.match(res.err, /(^|\n)monobench: [^\n]+(\nhint: [^\n]+)?$/);
      assert.doesNotMatch(res.err, /\n\s+at |unexpected error/);
    }
  });
});
