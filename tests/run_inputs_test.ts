/**
 * `reproduce` given bad input, on a small synthetic manifest with the CPU backend: options the
 * data cannot satisfy, broken inputs (manifest, SAE module, edited results), changed settings and
 * incompatible baselines. Every bad input exits 2 with one `monobench:` line, never a stack trace,
 * and loses nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";

import { args, assertBadInput, cli, withTmp } from "./reproduce_cli.ts";

Deno.test("cli: options the data cannot satisfy and broken inputs are named, exit 2", async (t) => {
  await withTmp(async (tmp, manifest) => {
    const out = (n: string) => join(tmp, n);
    await t.step("--primary naming no similarity source", async () => {
      assertBadInput(
        await cli(args(manifest, out("p"), ["--primary", "dinov2"])),
        /--primary dinov2 names no similarity source of the data/,
        "--primary",
      );
    });
    await t.step("--batch larger than the data", async () => {
      assertBadInput(
        await cli(args(manifest, out("b"), ["--batch", "4096"])),
        /batch size 4096 is larger than the training data of layer last \(256 rows\)/,
        "--batch",
      );
    });
    await t.step("unknown keys in a manifest", async () => {
      const m = JSON.parse(await Deno.readTextFile(manifest));
      m.simliarity = m.similarity;
      const bad = join(tmp, "data", "bad.json");
      await Deno.writeTextFile(bad, JSON.stringify(m));
      assertBadInput(await cli(args(bad, out("m"))), /unknown key "simliarity"/, "manifest key");
    });
    await t.step("--n-eval beyond the embedded data", async () => {
      assertBadInput(
        await cli(["--preset", "smoke", "--n-eval", "100000", "--out", out("n")]),
        /--n-eval 100000 is more than the embedded data allows/,
        "--n-eval",
      );
    });
    await t.step("--compare naming no variant of the grid", async () => {
      assertBadInput(
        await cli(["--preset", "smoke", "--compare", "topk", "--list"]),
        /--compare: no case of variant "topk" in the selected grid/,
        "--compare",
      );
    });
    await t.step("--steps -1", async () => {
      assertBadInput(await cli(["--steps", "-1"]), /--steps must be an integer ≥ 1, got "-1"/, "--steps -1");
    });
    await t.step("--lanes 0", async () => {
      assertBadInput(
        await cli(args(manifest, out("l"), ["--lanes", "0"])),
        /--lanes must be "auto" or an integer/,
        "--lanes",
      );
    });
    await t.step("a user SAE module missing a hook", async () => {
      const mod = join(tmp, "broken.ts");
      await Deno.writeTextFile(
        mod,
        `import { registerSae } from ${
          JSON.stringify(new URL("../src/sae/registry.ts", import.meta.url).href)
        };
import { batchTopK } from ${JSON.stringify(new URL("../src/sae/batchtopk.ts", import.meta.url).href)};
const { trainActivation: _, ...rest } = batchTopK;
registerSae({ ...rest, name: "broken" } as never);
`,
      );
      assertBadInput(
        await cli(args(manifest, out("s"), ["--sae-module", mod, "--sae", "broken"])),
        /variant "broken" is incomplete: hook trainActivation\(\) is missing/,
        "SAE module",
      );
    });
  });
});

Deno.test("cli: changed settings, edited results and incompatible baselines are refused", async (t) => {
  await withTmp(async (tmp, manifest) => {
    const ok = join(tmp, "ok");
    const first = await cli(args(manifest, ok));
    assert.equal(first.code, 0, first.stderr);
    const report = JSON.parse(await Deno.readTextFile(join(ok, "report.json")));
    const base = join(tmp, "base.json");
    await Deno.copyFile(join(ok, "report.json"), base);

    await t.step("changed settings name the field in one short line", async () => {
      const out = join(tmp, "run");
      assert.equal((await cli(args(manifest, out))).code, 0);
      const other = await cli(args(manifest, out, ["--steps", "20"]));
      assertBadInput(other, /holds a run with other settings: --steps 12 there, 20 now/, "changed settings");
      assert.ok(other.stderr.length < 500, other.stderr);
      // rm run.json, then other settings and another seed: not silently reused.
      await Deno.remove(join(out, "run.json"));
      assertBadInput(
        await cli(args(manifest, out, ["--steps", "20", "--seed", "3"])),
        /not a monobench run directory/,
        "without run.json",
      );
    });
    await t.step(
      "a result.json with a wrong schema is exit 2, and --retrain-mismatched recomputes it",
      async () => {
        const rpath = join(ok, "cases", "matryoshka-last-x1-k20", "seed-0", "result.json");
        const j = JSON.parse(await Deno.readTextFile(rpath));
        j.ms = "none";
        await Deno.writeTextFile(rpath, JSON.stringify(j));
        assertBadInput(
          await cli(args(manifest, ok)),
          /result\.json does not match result\.schema\.json: \/ms: expected array/,
          "edited result",
        );
        const retrained = await cli(args(manifest, ok, ["--retrain-mismatched"]));
        assert.equal(retrained.code, 0, retrained.stderr);
      },
    );
    await t.step("a baseline of an unknown report version", async () => {
      const v7 = join(tmp, "v7.json");
      await Deno.writeTextFile(v7, JSON.stringify({ ...report, version: 7 }));
      assertBadInput(
        await cli(args(manifest, join(tmp, "x"), ["--baseline", v7])),
        /has report version 7; this monobench reads version 2/,
        "baseline version",
      );
    });
    await t.step("steps or batch other than the baseline's", async () => {
      assertBadInput(
        await cli(args(manifest, join(tmp, "y"), ["--steps", "20", "--baseline", base])),
        /the baseline was made with another config: --steps 12 in the baseline, 20 now/,
        "baseline steps",
      );
      assertBadInput(
        await cli(args(manifest, join(tmp, "z"), ["--batch", "16", "--baseline", base])),
        /--batch 32 in the baseline, 16 now/,
        "baseline batch",
      );
    });
    await t.step("the same setup passes; a better-looking result is a change too (exit 1)", async () => {
      assert.equal((await cli(args(manifest, join(tmp, "w"), ["--baseline", base]))).code, 0);
      const worse = structuredClone(report);
      for (const c of worse.cases) c.r2 -= 10;
      await Deno.writeTextFile(base, JSON.stringify(worse));
      const better = await cli(args(manifest, join(tmp, "w"), ["--baseline", base]));
      assert.equal(better.code, 1, better.stdout + better.stderr);
      assert.match(better.stdout, /2 improvement\(s\) \(better\)/);
      assert.match(better.stdout, /tolerances: fixed .* one seed per case/);
    });
  });
});
