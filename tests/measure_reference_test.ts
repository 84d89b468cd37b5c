/**
 * `deno task measure-reference` on the reference-layout folder made by real PyTorch
 * (fixtures/torch/reference: a BatchTopKSAE on layer −1 = "last" and a MatroyshkaBatchTopKSAE on
 * layer 11, d 8, width 32, k 4) with a manifest built here by the import code: the measured
 * numbers equal torch's reference maths (fixtures/torch/expected), the run writes reproduce's
 * report and paper diff, resumes, and refuses bad input with exit code 2 and one line.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { importManifest } from "../src/io/import.ts";
import { checkSchema, REPORT_SCHEMA, RESULT_SCHEMA } from "../src/run/schemas.ts";
import { runCli } from "../src/util/cli.ts";
import { main } from "../tasks/measure_reference.ts";

const FIX = new URL("../fixtures/torch/", import.meta.url).pathname;
const REF = join(FIX, "reference");
const MAT = join(REF, "matroyshka_batch_top_k_4_x4");
const BTK_RUN = "batch_top_k_4_x4/imagenet_train_activations_clip-vit-large-patch14-336_-1_post_projection_" +
  "batch_top_k_4_x4/trainer_0";
const MAT_RUN = "matroyshka_batch_top_k_4_x4/imagenet_train_activations_clip-vit-large-patch14-336_11_" +
  "post_mlp_residual_matroyshka_batch_top_k_4_x4/trainer_0";
const X = join(FIX, "expected", "x.npy"), EMB = join(FIX, "expected", "emb.npy");

interface Expect {
  threshold: number;
  l0: number;
  l0_relu: number;
  dead: number;
  fve_batchmean: number;
  ms: (number | null)[];
}
const EXP: { raw_ms: (number | null)[]; saes: Record<string, Expect> } = JSON.parse(
  await Deno.readTextFile(join(FIX, "expected", "expected.json")),
);

/** sha256 by WebCrypto (not the code under test). */
async function sha256File(path: string): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(path)));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function cli(args: string[]): Promise<{ code: number; err: string }> {
  const lines: string[] = [];
  const code = await runCli(() => main(args), { out: (l) => lines.push(l), err: (l) => lines.push(l) });
  return { code, err: lines.join("\n") };
}

let manifests = 0;

/** A manifest of the fixture's evaluation split under the given layer names, plus extra keys. */
async function manifest(
  dir: string,
  layers: Record<string, string>,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const path = join(dir, `m${++manifests}.json`);
  await importManifest({
    manifest: path,
    // measure-reference never opens the train split; import wants one.
    layers: Object.entries(layers).map(([layer, f]) => ({ layer, train: [f], eval: [f] })),
    similarity: [{ name: "dinov2", eval: [EMB] }],
  });
  if (Object.keys(extra).length) {
    const m = JSON.parse(await Deno.readTextFile(path));
    await Deno.writeTextFile(path, JSON.stringify({ ...m, ...extra }));
  }
  return path;
}

function checkMs(
  got: { mean: number; min: number; max: number; nanCount: number; curve: number[] },
  want: (number | null)[],
  what: string,
) {
  const v = want.filter((x): x is number => x !== null).sort((a, b) => b - a);
  assert.equal(got.nanCount, want.length - v.length, `${what} NaN count`);
  assert.ok(Math.abs(got.mean - v.reduce((a, b) => a + b, 0) / v.length) < 1e-6, `${what} mean`);
  assert.ok(Math.abs(got.max - v[0]) < 1e-5 && Math.abs(got.min - v[v.length - 1]) < 1e-5, `${what} range`);
  assert.equal(got.curve.length, v.length);
  got.curve.forEach((x, i) =>
    assert.ok(Math.abs(x - v[i]) < 1e-5, `${what} sorted score ${i}: ${x} vs ${v[i]}`)
  );
}

function oneLine(err: string) {
  assert.match(err, /(^|\n)monobench: [^\n]+(\nhint: [^\n]+)?$/);
  assert.doesNotMatch(err, /\n\s+at |unexpected error/);
}

Deno.test("measure-reference: every SAE of the folder matches torch; reproduce's report, diff and resume", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mb-mref-" });
  try {
    const m = await manifest(tmp, { last: X, "11": X });
    const out = join(tmp, "run");
    const r = await cli(["--sae-root", REF, "--data", m, "--backend", "cpu", "--out", out]);
    assert.equal(r.code, 0, r.err);
    for (const f of ["report.json", "results.csv", "report.md", "report.html", "run.json"]) {
      assert.ok((await Deno.stat(join(out, f))).size > 0, f);
    }
    const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
    checkSchema(REPORT_SCHEMA, report, "report.json");
    assert.deepEqual(report.cases.map((c: { id: string }) => c.id), [
      "batchtopk-last-x4-k4",
      "matryoshka-11-x4-k4",
    ]);
    for (
      const [id, name, run, layer] of [
        ["batchtopk-last-x4-k4", "batchtopk", BTK_RUN, "last"],
        ["matryoshka-11-x4-k4", "matryoshka", MAT_RUN, "11"],
      ]
    ) {
      const c = report.cases.find((x: { id: string }) => x.id === id);
      const e = EXP.saes[name];
      const stored = JSON.parse(await Deno.readTextFile(join(out, "cases", id, "seed-0", "result.json")));
      checkSchema(RESULT_SCHEMA, stored, id);
      assert.deepEqual(stored, c);
      assert.equal(c.layer, layer);
      assert.ok(
        Math.abs(c.l0 - e.l0) < 1e-9,
        `${id} L0 ${c.l0} vs torch ${e.l0} (no threshold: ${e.l0_relu})`,
      );
      assert.equal(c.deadCount, e.dead);
      assert.ok(Math.abs(c.fve.fve_batchmean - e.fve_batchmean) < 1e-5, `${id} FVE`);
      assert.ok(Math.abs(c.r2 - 100 * e.fve_batchmean) < 1e-3, `${id} R²`);
      checkMs(c.ms[0], e.ms, `${id} MS`);
      assert.equal(c.ms[0].encoder, "dinov2");
      const file = join(REF, run, "checkpoints", "ae_100000.pt");
      assert.equal(c.checkpoint, join(run, "checkpoints", "ae_100000.pt"));
      assert.equal(
        c.provenance.configHash,
        await sha256File(file),
        "the checkpoint's sha256 in the provenance",
      );
      assert.deepEqual(Object.keys(c.provenance.data).sort(), [`eval:${layer}`, "similarity:dinov2"]);
      const cfg = JSON.parse(await Deno.readTextFile(join(REF, run, "config.json"))).trainer;
      assert.equal(c.lr, cfg.lr);
      assert.equal(c.steps, 100_000);
      assert.equal(c.batchSize, 4096);
      assert.equal(c.deadTrain, null);
    }
    for (const l of report.layers) checkMs(l.ms[0], EXP.raw_ms, `raw ${l.layer}`);
    // No paper row has K = 4: only the raw neurons are compared, and random SAEs on random data are far off.
    assert.equal(report.diff.model, "clip-vit-l14-336");
    assert.ok(report.diff.rows.length > 0);
    for (const row of report.diff.rows) {
      assert.match(row.caseId, /^raw-(last|11)$/);
      assert.equal(row.status, "outside");
    }
    assert.deepEqual(report.run.config.reference, { saeRoot: "fixtures/torch/reference", step: 100_000 });
    assert.deepEqual(report.run.seeds, [0]);

    const again = await cli(["--sae-root", REF, "--data", m, "--backend", "cpu", "--out", out]);
    assert.equal(again.code, 0, again.err);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(join(out, "report.json"))).cases, report.cases);

    // Another checkpoint under the same case id is refused, or measured again on request.
    const path = join(out, "cases", "matryoshka-11-x4-k4", "seed-0", "result.json");
    const tampered = JSON.parse(await Deno.readTextFile(path));
    tampered.provenance.configHash = "0".repeat(64);
    tampered.l0 = 99;
    await Deno.writeTextFile(path, JSON.stringify(tampered));
    const refused = await cli(["--sae-root", REF, "--data", m, "--backend", "cpu", "--out", out]);
    assert.equal(refused.code, 2);
    assert.match(
      refused.err,
      /measured with another checkpoint: sha256 000000000000… there, e4bf7c6a18f7… now/,
    );
    oneLine(refused.err);
    const redo = await cli([
      "--sae-root",
      REF,
      "--data",
      m,
      "--backend",
      "cpu",
      "--out",
      out,
      "--retrain-mismatched",
    ]);
    assert.equal(redo.code, 0, redo.err);
    assert.ok(Math.abs(JSON.parse(await Deno.readTextFile(path)).l0 - EXP.saes.matryoshka.l0) < 1e-9);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("measure-reference: step 0 (threshold −1, a plain ReLU) and the final ae.pt give torch's numbers", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mb-mref-step-" });
  try {
    const m = await manifest(tmp, { "11": X });
    for (
      const [step, name, steps] of [["0", "matryoshka_step0", 0], [
        "final",
        "matryoshka_final",
        110_000,
      ]] as const
    ) {
      const out = join(tmp, `run-${step}`);
      const r = await cli(["--sae-root", MAT, "--data", m, "--backend", "cpu", "--step", step, "--out", out]);
      assert.equal(r.code, 0, r.err);
      const [c] = JSON.parse(await Deno.readTextFile(join(out, "report.json"))).cases;
      const e = EXP.saes[name];
      assert.ok(Math.abs(c.l0 - e.l0) < 1e-9, `step ${step}: L0 ${c.l0} vs torch ${e.l0}`);
      if (step === "0") assert.equal(e.l0, e.l0_relu, "threshold −1: the encode is a ReLU");
      else assert.ok(c.l0 < e.l0_relu, "the final threshold drops latents");
      checkMs(c.ms[0], e.ms, `step ${step} MS`);
      assert.equal(c.steps, steps);
    }
    // The same directory with another step is another run.
    const other = await cli([
      "--sae-root",
      MAT,
      "--data",
      m,
      "--backend",
      "cpu",
      "--step",
      "final",
      "--out",
      join(tmp, "run-0"),
    ]);
    assert.equal(other.code, 2);
    assert.match(other.err, /holds a run with other settings: run kind .*step 0\) there, .*step final\) now/);
    oneLine(other.err);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("measure-reference: bad input exits 2 with one line and a hint", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mb-mref-bad-" });
  try {
    const both = await manifest(tmp, { last: X, "11": X });
    const lastOnly = await manifest(tmp, { last: X });
    const narrow = await manifest(tmp, { last: EMB, "11": X });
    const siglip = await manifest(tmp, { last: X, "11": X }, { model: "siglip-so400m-14-384" });
    const empty = join(tmp, "empty");
    await Deno.mkdir(empty);
    const out = (n: string) => ["--out", join(tmp, `out-${n}`), "--backend", "cpu"];
    const cases: [string[], RegExp][] = [
      [["--data", both], /--sae-root DIR is required/],
      [["--sae-root", REF], /--data MANIFEST\.json is required/],
      [
        ["--sae-root", REF, "--data", both, "--step", "abc"],
        /--step must be a non-negative integer or "final"/,
      ],
      [
        ["--sae-root", REF, "--data", both, "--step", "final"],
        /no ae\.pt; it has checkpoints\/ae_100000\.pt/,
      ],
      [["--sae-root", empty, "--data", both], /no SAE folders/],
      [["--sae-root", join(tmp, "missing"), "--data", both], /folder not found/],
      [["--sae-root", REF, "--data", lastOnly], /trained on layer 11 .*has only last/],
      [["--sae-root", REF, "--data", narrow], /takes d = 8 inputs, but layer last .* has d = 6/],
      [
        ["--sae-root", REF, "--data", siglip],
        /holds activations of siglip-so400m-14-384, but experiment clip-vitl-main compares with clip-vit-l14-336/,
      ],
      [["--sae-root", REF, "--data", siglip, "--experiment", "siglip-so400m"], /no SAE to measure/],
      [
        ["--sae-root", REF, "--data", both, "--grid", "layers=99"],
        /unknown layers value "99"; valid values: last, 11/,
      ],
      [["--sae-root", REF, "--data", both, "--experiment", "nope"], /unknown experiment "nope"/],
      [["--sae-root", REF, "--data", both, "--bogus"], /Unknown option/i],
    ];
    for (const [i, [args, re]] of cases.entries()) {
      const r = await cli([...args, ...out(String(i))]);
      assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.err}`);
      assert.match(r.err, re, args.join(" "));
      oneLine(r.err);
    }
    // The entry point itself: a real process exits 2 with the one-line message.
    const p = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../tasks/measure_reference.ts", import.meta.url).pathname, "--data", both],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(p.code, 2);
    assert.match(new TextDecoder().decode(p.stderr), /^monobench: --sae-root DIR is required\nhint: /);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
