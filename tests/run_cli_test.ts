/**
 * `reproduce` as a careless or hurried user runs it, on a small synthetic manifest with the CPU
 * backend: concurrent runs on one directory, kill -9 and resume, bad --out values. Every refusal
 * exits 2 with one `monobench:` line and a hint, never a stack trace, and loses nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { BASELINE_DIR } from "../src/run/rundir.ts";

import { args, assertBadInput, cli, SCRIPT, withTmp } from "./reproduce_cli.ts";

async function waitFor(path: string, ms = 20000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    try {
      await Deno.stat(path);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  throw new Error(`${path} did not appear`);
}

async function tempLeftovers(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.name.endsWith(".tmp") || /\.tmp-/.test(e.name)) found.push(join(d, e.name));
      else if (e.isDirectory) await walk(join(d, e.name));
    }
  };
  await walk(dir);
  return found;
}

Deno.test("cli: three runs on one --out — one works, the others exit 2 at once naming it; no leftovers", async () => {
  await withTmp(async (tmp, manifest) => {
    const out = join(tmp, "run");
    const spawn = () =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", SCRIPT, ...args(manifest, out, ["--steps", "400", "--seeds", "2"])],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).spawn();
    const first = spawn();
    await waitFor(join(out, "run.lock"));
    const [b, c] = await Promise.all([spawn().output(), spawn().output()]);
    const dec = new TextDecoder();
    for (const r of [b, c]) {
      assertBadInput(
        { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) },
        new RegExp(`is in use by another monobench run \\(pid ${first.pid} on `),
        "second run",
      );
    }
    const a = await first.output();
    assert.equal(a.code, 0, dec.decode(a.stderr));
    assert.deepEqual(await tempLeftovers(out), []);
    await assert.rejects(Deno.stat(join(out, "run.lock")), Deno.errors.NotFound, "the lock is released");
  });
});

Deno.test("cli: Ctrl-C and kill -9 mid-run, then the same command resumes to identical numbers", async () => {
  await withTmp(async (tmp, manifest) => {
    const out = join(tmp, "run"), ref = join(tmp, "ref");
    const a = args(manifest, out, ["--steps", "400"]);
    const start = () =>
      new Deno.Command(Deno.execPath(), { args: ["run", "-A", SCRIPT, ...a], stdout: "null", stderr: "null" })
        .spawn();
    // Ctrl-C: exit 130, the lock is released.
    const p1 = start();
    await waitFor(join(out, "cases", "batchtopk-last-x1-k20", "seed-0", "sae", "cfg.json"));
    p1.kill("SIGINT");
    assert.equal((await p1.status).code, 130);
    await assert.rejects(Deno.stat(join(out, "run.lock")), Deno.errors.NotFound, "Ctrl-C releases the lock");
    // kill -9: the lock stays behind, stale.
    const p2 = start();
    const t0 = Date.now();
    while (Date.now() - t0 < 20000) {
      const held = await Deno.readTextFile(join(out, "run.lock")).then((t) => JSON.parse(t).pid, () => null);
      if (held === p2.pid) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    p2.kill("SIGKILL");
    await p2.status;
    const r = await cli(a);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /took over the stale lock of a run that is no longer running \(pid \d+/);
    assert.match(r.stderr, /train \(resumed\)|already measured/);
    assert.deepEqual(await tempLeftovers(out), []);
    const whole = await cli(args(manifest, ref, ["--steps", "400"]));
    assert.equal(whole.code, 0, whole.stderr);
    const strip = (c: Record<string, unknown>) => ({ ...c, trainSeconds: 0 });
    const cases = async (d: string) =>
      JSON.parse(await Deno.readTextFile(join(d, "report.json"))).cases.map(strip);
    assert.deepEqual(
      await cases(out),
      await cases(ref),
      "identical numbers after Ctrl-C, kill -9 and resume",
    );
  });
});

Deno.test("cli: --out must be a new, empty or monobench run directory, never the baseline", async (t) => {
  await withTmp(async (tmp, manifest) => {
    const baseline = await Deno.readTextFile(join(BASELINE_DIR, "report.json"));
    await t.step('--out ""', async () => {
      assertBadInput(await cli(args(manifest, "")), /--out must name a directory/, '--out ""');
    });
    await t.step("--out results/baseline", async () => {
      assertBadInput(
        await cli(args(manifest, BASELINE_DIR)),
        /is the stored baseline directory/,
        "baseline dir",
      );
      assertBadInput(
        await cli(args(manifest, "results/baseline"), join(BASELINE_DIR, "..", "..")),
        /is the stored baseline directory/,
        "relative baseline dir from the repository root",
      );
      assert.equal(await Deno.readTextFile(join(BASELINE_DIR, "report.json")), baseline);
    });
    await t.step("an existing directory that is not a run", async () => {
      const mine = join(tmp, "mine");
      await Deno.mkdir(mine);
      await Deno.writeTextFile(join(mine, "report.html"), "my file");
      assertBadInput(
        await cli(args(manifest, mine)),
        /is not empty and is not a monobench run directory/,
        "foreign dir",
      );
      assert.equal(await Deno.readTextFile(join(mine, "report.html")), "my file");
    });
    await t.step("an unwritable --out is found before the data is prepared", async () => {
      await Deno.writeTextFile(join(tmp, "file"), "x");
      const r = await cli(["--preset", "smoke", "--backend", "cpu", "--out", join(tmp, "file", "run")]);
      assertBadInput(r, /not a directory|cannot create the run directory/, "unwritable --out");
      assert.doesNotMatch(r.stderr, /data: /, "no data preparation first");
    });
    await t.step("a relative --out resolves against the caller's directory", async () => {
      const ok = await cli(args(manifest, "rel-run"), tmp);
      assert.equal(ok.code, 0, ok.stderr);
      assert.ok((await Deno.stat(join(tmp, "rel-run", "report.json"))).isFile);
    });
  });
});
