/**
 * `deno task reproduce --experiment …` end to end: the SigLIP experiment on the embedded default
 * (its layer 16 reads the depth standing for CLIP's 17: the same store as the stored baseline's
 * "train:17") is diffed with Tables A4/A7 only; a run directory is bound to its experiment; and a
 * manifest lacking a layer the experiment needs, or of another model, is refused with exit 2.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeStore } from "../src/data/store.ts";
import { checkSchema, REPORT_SCHEMA } from "../src/run/schemas.ts";

const SCRIPT = new URL("../tasks/reproduce.ts", import.meta.url).pathname;
const BASELINE = new URL("../results/baseline/report.json", import.meta.url).pathname;

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

function oneLine(stderr: string) {
  assert.match(stderr, /(^|\n)monobench: [^\n]+\n(hint: [^\n]+\n)?$/);
  assert.doesNotMatch(stderr, /\n\s+at |unexpected error/);
}

Deno.test("reproduce --experiment siglip-so400m on the embedded default: SigLIP's names, Tables A4/A7", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mb-expcli-" });
  try {
    const list = await cli(["--experiment", "siglip-so400m", "--list"]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^40 case\(s\) × 3 seed\(s\): layers 11,16,21,last; eps 1,2,4,8,16;/);
    assert.match(list.stdout, /batchtopk-21-x16-k20 {2}\[siglip\]/);
    assert.match(list.stdout, /experiment +"siglip-so400m" +\(cli\)/);

    const out = join(tmp, "run"), cache = join(tmp, "cache");
    const args = [
      "--experiment",
      "siglip-so400m",
      "--preset",
      "smoke",
      "--grid",
      "from=paper layers=16 eps=1 sae=batchtopk",
      "--backend",
      "cpu",
      "--n-train",
      "200",
      "--n-eval",
      "100",
      "--steps",
      "10",
      "--batch",
      "32",
      "--cache",
      cache,
      "--out",
      out,
    ];
    const r = await cli(args);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
    checkSchema(REPORT_SCHEMA, report, "report.json");
    assert.deepEqual(report.cases.map((c: { id: string }) => c.id), ["batchtopk-16-x1-k20"]);
    const [c] = report.cases;
    assert.match(c.sourceLayer, /block_11_add/);
    const baseline = JSON.parse(await Deno.readTextFile(BASELINE));
    assert.equal(c.provenance.data["train:16"], baseline.run.provenance.data["train:17"], "CLIP 17's store");
    assert.deepEqual(report.run.config.experiment.map((e: { name: string }) => e.name), ["siglip-so400m"]);
    assert.notEqual(report.run.configHash, baseline.run.configHash);
    assert.equal(report.diff.model, "siglip-so400m-14-384");
    assert.deepEqual(report.diff.encoderMap, { "clip-vit-b32": "inceptionv3" });
    assert.ok(report.diff.rows.length >= 6);
    for (const row of report.diff.rows) {
      assert.ok(["Table A4", "Table A7"].includes(row.table), row.table);
      assert.equal(row.paperEncoder, "clip-vit-b32");
    }
    const rawMean = report.diff.rows.find((x: { caseId: string; metric: string }) =>
      x.caseId === "raw-16" && x.metric === "ms_mean"
    );
    assert.equal(rawMean.paper, 0.4809, "Table A4, No SAE, layer 16");
    assert.match(report.run.dataset, /layers 16 ← 17, 21 ← 22/);

    // The directory belongs to that experiment.
    const other = await cli(
      args.slice(2).map((
        a,
      ) => (a === "from=paper layers=16 eps=1 sae=batchtopk" ? "from=paper layers=17 eps=1" : a)),
    );
    assert.equal(other.code, 2, other.stderr);
    assert.match(
      other.stderr,
      /holds a run with other settings: --experiment siglip-so400m there, clip-vitl-main,k-ablation now/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("reproduce --experiment: unknown experiments and layers, a manifest lacking a layer or of another model: exit 2", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mb-expcli-bad-" });
  try {
    const st = async (name: string, d: number) => {
      const x = new Float32Array(40 * d).map((_, i) => Math.sin(i * 0.7 + d));
      await writeStore(join(tmp, name), x, 40, d);
      return join(tmp, name);
    };
    const [a, b, s] = [await st("a", 4), await st("b", 5), await st("s", 3)];
    const manifest = async (name: string, extra: Record<string, unknown>) => {
      const p = join(tmp, name);
      await Deno.writeTextFile(
        p,
        JSON.stringify({
          layers: [{ layer: "11", train: a, eval: a }, { layer: "last", train: b, eval: b }],
          similarity: [{ name: "clip-vit-b32", eval: s }],
          ...extra,
        }),
      );
      return p;
    };
    const sig = await manifest("sig.json", { model: "siglip-so400m-14-384" });
    const clip = await manifest("clip.json", { model: "clip-vit-l14-336" });
    const cases: [string[], RegExp][] = [
      [["--experiment", "nope"], /unknown experiment "nope"; experiments\/ has: clip-vitl-main/],
      [
        ["--experiment", "siglip-so400m", "--grid", "layers=17"],
        /unknown layers value "17"; valid values: 11, 16, 21, last/,
      ],
      [["--experiment", join(tmp, "missing.json")], /cannot read experiment file/],
      [
        ["--experiment", "siglip-so400m", "--data", sig],
        /experiment siglip-so400m needs layers 16, 21, but the data manifest .*sig\.json has only 11, last/,
      ],
      [
        ["--experiment", "siglip-so400m", "--data", clip, "--grid", "layers=11,last"],
        /holds activations of clip-vit-l14-336, but experiment siglip-so400m compares with siglip-so400m-14-384/,
      ],
      [
        ["--data", sig, "--grid", "layers=last"],
        /holds activations of siglip-so400m-14-384, but experiment clip-vitl-main/,
      ],
    ];
    for (const [i, [args, re]] of cases.entries()) {
      const r = await cli([...args, "--out", join(tmp, `out${i}`), "--backend", "cpu"]);
      assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, re, args.join(" "));
      oneLine(r.stderr);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
