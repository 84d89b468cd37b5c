/**
 * `deno task merge` on a small CPU configuration (two synthetic layers, 8 cases × 2 seeds split
 * three ways): the merged report.json has exactly the metrics of the unsharded run of the same
 * command (cases, aggregates, layers, claims, paper diff; training time aside), the merged
 * directory is a self-contained run directory, `--baseline` and `--summary` work as in reproduce,
 * and every refusal names what differs: missing and partial shards, other configs, code and
 * data, different duplicates, schema failures, other splits, non-shards and bad --out values.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { configHash } from "../src/run/config.ts";
import { mergeRuns } from "../src/run/merge.ts";
import { checkSchema, REPORT_SCHEMA } from "../src/run/schemas.ts";
import { planHash } from "../src/run/shard.ts";
import { writeSyntheticManifest } from "../src/run/synthetic.ts";
import { MonobenchError } from "../src/util/errors.ts";

const REPRODUCE = new URL("../tasks/reproduce.ts", import.meta.url).pathname;
const MERGE = new URL("../tasks/merge.ts", import.meta.url).pathname;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(script: string, args: string[]): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Two synthetic layers (d 24 and 32) sharing one label similarity source. */
async function twoLayerManifest(dir: string): Promise<string> {
  await writeSyntheticManifest(join(dir, "a"), { layer: "last", d: 32, nTrain: 256, nEval: 64, seed: 1 });
  await writeSyntheticManifest(join(dir, "b"), { layer: "23", d: 24, nTrain: 256, nEval: 64, seed: 2 });
  const path = join(dir, "manifest.json");
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      description: "two synthetic layers",
      model: "clip-vit-l14-336", // the paper diff then picks that model's rows: the merge must too
      layers: [
        { layer: "23", sourceLayer: "synthetic", train: "b/train", eval: "b/eval" },
        { layer: "last", sourceLayer: "synthetic", train: "a/train", eval: "a/eval" },
      ],
      similarity: [{ name: "labels", eval: "a/labels" }],
    }),
  );
  return path;
}

const runArgs = (manifest: string) => [
  "--preset",
  "smoke",
  "--grid",
  "from=paper layers=last,23 eps=1,2 k=20",
  "--backend",
  "cpu",
  "--data",
  manifest,
  "--steps",
  "12",
  "--batch",
  "32",
  "--seeds",
  "2",
];

// deno-lint-ignore no-explicit-any
type Json = any;

const readJson = async (p: string): Promise<Json> => JSON.parse(await Deno.readTextFile(p));
const writeJson = (p: string, v: unknown) => Deno.writeTextFile(p, JSON.stringify(v, null, 2));
const noTime = (xs: Json[]) => xs.map(({ trainSeconds: _t, ...rest }: Json) => rest);

async function copyDir(src: string, dst: string): Promise<void> {
  await Deno.mkdir(dst, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    const s = join(src, e.name), d = join(dst, e.name);
    if (e.isDirectory) await copyDir(s, d);
    else if (e.isFile) await Deno.copyFile(s, d);
  }
}

/** A result.json path of a shard directory (the first unit found). */
async function someResult(dir: string): Promise<string> {
  for await (const c of Deno.readDir(join(dir, "cases"))) {
    for await (const s of Deno.readDir(join(dir, "cases", c.name))) {
      return join(dir, "cases", c.name, s.name, "result.json");
    }
  }
  throw new Error(`no result in ${dir}`);
}

async function refused(f: () => Promise<unknown>, re: RegExp, what: string): Promise<void> {
  await assert.rejects(f, (e: unknown) => {
    assert.ok(e instanceof MonobenchError, `${what}: ${e}`);
    assert.match(e.message, re, `${what}: ${e.message}`);
    return true;
  });
}

Deno.test("merge: three shards merged equal the unsharded run; every refusal names what differs", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "mb-merge-" });
  try {
    const manifest = await twoLayerManifest(join(tmp, "data"));
    const args = runArgs(manifest);
    const full = join(tmp, "full"), shards = [1, 2, 3].map((i) => join(tmp, `shard-${i}`));
    const runs = await Promise.all([
      cli(REPRODUCE, [...args, "--out", full]),
      ...shards.map((d, i) =>
        cli(REPRODUCE, [...args, "--shard", `${i + 1}/3`, "--out", d, "--summary", `${d}-summary.md`])
      ),
    ]);
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    const fullReport = await readJson(join(full, "report.json"));
    assert.equal(fullReport.cases.length, 16);

    await t.step("each shard ran only its units and records its shard", async () => {
      const counts: number[] = [];
      for (const [i, d] of shards.entries()) {
        const rep = await readJson(join(d, "report.json"));
        checkSchema(REPORT_SCHEMA, rep, "shard report.json");
        assert.equal(rep.run.provenance.shard.spec, `${i + 1}/3`);
        assert.equal(rep.run.configHash, fullReport.run.configHash, "the shard is not in the config hash");
        assert.equal(rep.cases.length, rep.run.provenance.shard.units);
        counts.push(rep.cases.length);
        assert.equal((await readJson(join(d, "run.json"))).shard.index, i + 1);
      }
      assert.equal(counts.reduce((a, b) => a + b, 0), 16);
      // reproduce --summary: the shard, the claims table, no regression section without --baseline.
      const md = await Deno.readTextFile(`${shards[0]}-summary.md`);
      assert.match(md, /^## monobench: shard-1\n/);
      assert.match(md, /- shard 1\/3 of the selection/);
      assert.match(md, /### Claims: \d+ pass, \d+ fail, \d+ other/);
      assert.doesNotMatch(md, /Regression check/);
    });

    const merged = join(tmp, "merged"), summary = join(tmp, "summary.md");
    await t.step("the merged report has the unsharded run's metrics, exactly (cpu backend)", async () => {
      // Shards given out of order: the merge orders results as a single run does.
      const r = await cli(MERGE, [
        "--out",
        merged,
        "--baseline",
        join(full, "report.json"),
        "--summary",
        summary,
        shards[2],
        shards[0],
        shards[1],
      ]);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /merged 16 \(case, seed\) unit\(s\) of a 3-way split/);
      assert.match(r.stdout, /0 change\(s\) outside tolerance/);
      const m = await readJson(join(merged, "report.json"));
      checkSchema(REPORT_SCHEMA, m, "merged report.json");
      assert.deepEqual(noTime(m.cases), noTime(fullReport.cases));
      assert.deepEqual(noTime(m.aggregates), noTime(fullReport.aggregates));
      assert.deepEqual(m.layers, fullReport.layers);
      assert.deepEqual(m.claims, fullReport.claims);
      assert.deepEqual(m.diff, fullReport.diff);
      assert.equal(m.run.configHash, fullReport.run.configHash);
      assert.equal(m.run.provenance.shard, null);
      assert.equal(m.run.provenance.merge.units, 16);
      assert.deepEqual(m.run.provenance.merge.missing, []);
      const md = await Deno.readTextFile(summary);
      assert.match(md, /### Regression check: passed/);
      assert.match(md, /\| claim \| status \| criterion \| evidence \| paper \|/);
      assert.match(md, /merged from 3 shard directories of a 3-way split/);
    });

    await t.step("the merged directory is a self-contained, resumable run directory", async () => {
      const run = await readJson(join(merged, "run.json"));
      assert.equal(run.shard, null);
      const m = await readJson(join(merged, "report.json"));
      const cp = m.run.provenance.merge.checkpoints;
      assert.equal(cp.linked + cp.copied, 16);
      for (const c of m.cases) {
        const w = join(merged, c.checkpoint, "sae_weights.safetensors");
        const shard = shards.find((d) => {
          try {
            Deno.statSync(join(d, c.checkpoint));
            return true;
          } catch {
            return false;
          }
        })!;
        const a = await Deno.stat(w),
          b = await Deno.stat(join(shard, c.checkpoint, "sae_weights.safetensors"));
        assert.equal(a.size, b.size);
        if (cp.copied === 0) assert.equal(a.ino, b.ino, "hard link");
      }
      // A reproduce of the same command in the merged directory finds every unit done.
      const again = await cli(REPRODUCE, [...args, "--out", merged]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal((again.stderr.match(/already measured/g) ?? []).length, 16);
      // Merging again into the merged directory replaces it.
      const re = await mergeRuns({ out: merged, dirs: shards });
      assert.equal(re.info.units, 16);
    });

    await t.step("--baseline flags a worse run with exit 1 and lists it in the summary", async () => {
      const better = structuredClone(fullReport);
      for (const c of better.cases) c.r2 += 10;
      const bpath = join(tmp, "better.json");
      await writeJson(bpath, better);
      const out = join(tmp, "merged-reg"), sum = join(tmp, "reg.md");
      const r = await cli(MERGE, ["--out", out, "--baseline", bpath, "--summary", sum, ...shards]);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stdout, /16 regression\(s\)|regression/);
      const md = await Deno.readTextFile(sum);
      assert.match(md, /### Regression check: \*\*FAILED\*\*/);
      assert.match(md, /#### Regressions \(worse\)/);
      assert.match(md, /\| [\w-]+-k20 \| r2 \| [\d.]+ \| [\d.]+ \| -10\.0000 \|/);
    });

    const out = () => join(tmp, `m-${crypto.randomUUID().slice(0, 8)}`);
    const variant = async (name: string, from: string) => {
      const d = join(tmp, name);
      await copyDir(from, d);
      return d;
    };

    await t.step("missing and partial shards are named; --partial merges what is there", async () => {
      await refused(
        () => mergeRuns({ out: out(), dirs: [shards[0], shards[1]] }),
        /\d+ of 16 \(case, seed\) unit\(s\) missing: shard 3\/3 was not given: \d+ unit\(s\) \(e\.g\. /,
        "missing shard",
      );
      const part = await variant("partial-2", shards[1]);
      const gone = await someResult(part);
      await Deno.remove(gone);
      await refused(
        () => mergeRuns({ out: out(), dirs: [shards[0], part, shards[2]] }),
        /1 of 16 \(case, seed\) unit\(s\) missing: shard 2\/3 \(.*partial-2\) ran partially: 1 of its \d+ unit/,
        "partial shard",
      );
      const r = await mergeRuns({ out: out(), dirs: [shards[0], part, shards[2]], partial: true });
      assert.equal(r.info.units, 15);
      assert.equal(r.info.missing.length, 1);
      assert.equal(r.report.cases.length, 15);
      assert.ok(r.notices.some((n) => n.startsWith("--partial: 1 of 16")));
    });

    await t.step("other config, code or data is refused naming the field and the shards", async () => {
      const cfg = await variant("cfg-3", shards[2]);
      const run = await readJson(join(cfg, "run.json"));
      run.config.train.steps = 13;
      run.configHash = configHash(run.config);
      await writeJson(join(cfg, "run.json"), run);
      await refused(
        () => mergeRuns({ out: out(), dirs: [shards[0], shards[1], cfg] }),
        /different configs: --steps 12 in .*shard-1, 13 in .*cfg-3/,
        "config",
      );

      for (
        const [field, value, re] of [
          [
            "gitCommit",
            "f".repeat(40),
            /different code: git commit .* in .*shard-1.*; ffffffffffff… in .*code-gitCommit/,
          ],
          ["denoLock", "e".repeat(64), /different code: deno.lock hash/],
          ["monobench", "9.9.9", /different code: monobench version .*9\.9\.9 in .*code-monobench/],
          ["deno", "1.0.0", /different code: Deno version/],
        ] as const
      ) {
        const d = await variant(`code-${field}`, shards[1]);
        const p = await someResult(d);
        const r = await readJson(p);
        r.provenance[field] = value;
        await writeJson(p, r);
        await refused(() => mergeRuns({ out: out(), dirs: [shards[0], d, shards[2]] }), re, field);
      }

      const data = await variant("data-2", shards[1]);
      const p = await someResult(data);
      const r = await readJson(p);
      const role = Object.keys(r.provenance.data).find((k) => k.startsWith("similarity:"))!;
      r.provenance.data[role] = "d".repeat(64);
      await writeJson(p, r);
      // Another hash with the same rows (another CPU's low bits): merged, with a notice.
      const merged = await mergeRuns({ out: out(), dirs: [shards[0], data, shards[2]] });
      assert.ok(
        merged.notices.some((n) => n.startsWith(`data store ${role} hashes otherwise in some shards`)),
        merged.notices.join("\n"),
      );
      // Other rows too: refused.
      const rp = join(data, "report.json");
      const rep = await readJson(rp);
      rep.run.provenance.dataSketch[role][2] += 1;
      await writeJson(rp, rep);
      await refused(
        () => mergeRuns({ out: out(), dirs: [shards[0], data, shards[2]] }),
        new RegExp(`different data: store ${role} has hash .*dddddddddddd… in .*data-2`),
        "data",
      );
    });

    await t.step("duplicates: identical results are kept once; different ones are refused", async () => {
      // A unit of shard 1 also in a copy of shard 2.
      const p1 = await someResult(shards[0]);
      const rel = p1.slice(shards[0].length + 1, -"/result.json".length);
      const dup = await variant("dup-2", shards[1]);
      await copyDir(join(shards[0], rel), join(dup, rel));
      const rerun = await readJson(join(dup, rel, "result.json"));
      rerun.trainSeconds += 5; // training time is not a result
      await writeJson(join(dup, rel, "result.json"), rerun);
      const ok = await mergeRuns({ out: out(), dirs: [shards[0], dup, shards[2]] });
      assert.equal(ok.info.duplicates, 1);
      assert.equal(ok.info.units, 16);
      assert.ok(
        ok.notices.some((n) =>
          /1 \(case, seed\) unit\(s\) found in two shards with identical results/.test(n)
        ),
      );

      rerun.r2 += 0.5;
      await writeJson(join(dup, rel, "result.json"), rerun);
      await refused(
        () => mergeRuns({ out: out(), dirs: [shards[0], dup, shards[2]] }),
        /seed \d+ is in .*shard-1 and .*dup-2 with different results \(r2: /,
        "different duplicate",
      );
      // The same shard given twice, or one directory twice.
      const copy1 = await variant("copy-1", shards[0]);
      const twice = await mergeRuns({ out: out(), dirs: [shards[0], copy1, shards[1], shards[2]] });
      assert.ok(twice.notices.some((n) => /shard 1\/3 is given 2 times/.test(n)));
      await refused(
        () => mergeRuns({ out: out(), dirs: [shards[0], shards[0], shards[1], shards[2]] }),
        /is given twice/,
        "same dir twice",
      );
    });

    await t.step("schema failures, other splits, non-shards and bad --out are refused", async () => {
      const bad = await variant("schema-1", shards[0]);
      const p = await someResult(bad);
      const r = await readJson(p);
      r.r2 = "high";
      await writeJson(p, r);
      await refused(
        () => mergeRuns({ out: out(), dirs: [bad, shards[1], shards[2]] }),
        /result\.json.*r2/,
        "schema",
      );

      const model = await variant("model-2", shards[1]);
      const mrun = await readJson(join(model, "run.json"));
      mrun.shard.dataModel = "clip-vit-b32";
      await writeJson(join(model, "run.json"), mrun);
      await refused(
        () => mergeRuns({ out: out(), dirs: [shards[0], model, shards[2]] }),
        /different paper models: clip-vit-l14-336 in .*shard-1, clip-vit-b32 in .*model-2/,
        "model",
      );

      const split = await variant("split-2", shards[1]);
      const run = await readJson(join(split, "run.json"));
      run.shard.count = 2;
      run.shard.plan.count = 2;
      run.shard.index = 1;
      for (const u of run.shard.plan.units) u.shard = ((u.shard - 1) % 2) + 1;
      run.shard.planHash = planHash(run.shard.plan);
      await writeJson(join(split, "run.json"), run);
      await refused(
        () => mergeRuns({ out: out(), dirs: [shards[0], split] }),
        /different splits: into 3 shards in .*shard-1, into 2 in .*split-2/,
        "split",
      );

      await refused(
        () => mergeRuns({ out: out(), dirs: [full, ...shards] }),
        /full was run without --shard/,
        "whole",
      );
      await refused(
        () => mergeRuns({ out: out(), dirs: [join(tmp, "nope")] }),
        /does not exist/,
        "missing dir",
      );
      await refused(
        () => mergeRuns({ out: shards[0], dirs: shards }),
        /--out .* is the shard directory/,
        "out=shard",
      );
      await refused(
        () => mergeRuns({ out: full, dirs: shards }),
        /holds something other than an earlier merge/,
        "out=run",
      );

      const other = await variant("merged-other", merged);
      const orun = await readJson(join(other, "run.json"));
      orun.configHash = "0".repeat(64);
      await writeJson(join(other, "run.json"), orun);
      await refused(
        () => mergeRuns({ out: other, dirs: shards }),
        /holds the merge of a run with another config/,
        "out",
      );

      // Through the CLI: exit 2, one `monobench:` line and a hint, nothing written.
      const o = out();
      const c = await cli(MERGE, ["--out", o, shards[0], shards[1]]);
      assert.equal(c.code, 2, c.stderr);
      const lines = c.stderr.split("\n").filter((l) => l.startsWith("monobench: "));
      assert.equal(lines.length, 1, c.stderr);
      assert.match(lines[0], /shard 3\/3 was not given/);
      assert.match(c.stderr, /^hint: .*--partial/m);
      assert.doesNotMatch(c.stderr, /\n\s+at /);
      await assert.rejects(() => Deno.stat(o), Deno.errors.NotFound);
      const noOut = await cli(MERGE, [shards[0]]);
      assert.equal(noOut.code, 2);
      assert.match(noOut.stderr, /--out DIR is required/);
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
