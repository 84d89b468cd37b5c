/**
 * Run directories and provenance, in process on a small synthetic manifest with the CPU backend:
 * the lock (held, stale, recycled pid, other host), where a run may write, temp leftovers, the
 * changed-settings refusal, per-seed layout and reuse only on equal provenance (backend, config,
 * data, schema-valid results), store verification, disk-full errors and bit-identical resume.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu.ts";
import { type BenchCase, selectCases } from "../src/grid/cases.ts";
import type { Progress } from "../src/report/progress.ts";
import { resolveConfig } from "../src/run/config.ts";
import { manifestData, type RunData, verifyRunData } from "../src/run/data.ts";
import { acquireRunLock, LOCK_FILE } from "../src/run/lock.ts";
import { checkRunnable, type PipelineOptions, runPipeline } from "../src/run/pipeline.ts";
import { softwareInfo } from "../src/run/provenance.ts";
import { BASELINE_DIR, cleanTempLeftovers, openRunDir } from "../src/run/rundir.ts";
import { checkSchema, RESULT_SCHEMA } from "../src/run/schemas.ts";
import { writeSyntheticManifest } from "../src/run/synthetic.ts";
import type { CaseResult } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { REPO_ROOT } from "../src/util/paths.ts";

async function withTmp(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mb-rundir-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function mbError(re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof MonobenchError, `expected a MonobenchError, got ${e}`);
    assert.match(e.message, re);
    return true;
  };
}

/** A CPU backend that reports itself as another device (the same numbers, another provenance). */
class OtherCpu extends CpuBackend {
  override readonly name = "cpu-other";
  override readonly description: string = "another CPU";
}

/** Progress stand-in collecting log lines; `onStep` may throw to interrupt training. */
function quietProgress(lines: string[], onStep?: (step: number) => void): Progress {
  return {
    log: (m: string) => lines.push(m),
    beginCase: () => {},
    setPhase: () => {},
    step: (s: number) => onStep?.(s),
    endCase: () => {},
    skipCase: () => {},
    start: () => {},
    finish: () => {},
  } as unknown as Progress;
}

interface Setup {
  tmp: string;
  manifest: string;
  cases: BenchCase[];
  data: RunData;
}

async function setup(tmp: string): Promise<Setup> {
  const manifest = await writeSyntheticManifest(join(tmp, "data"));
  const { cases } = selectCases("smoke", { grid: "eps=1" });
  return { tmp, manifest, cases, data: await manifestData(manifest) };
}

async function options(
  s: Setup,
  out: string,
  extra: { seeds?: number[]; steps?: number; retrain?: boolean; backend?: CpuBackend; log?: string[] } = {},
): Promise<PipelineOptions> {
  const r = await resolveConfig({
    cli: {
      preset: "smoke",
      "data.source": s.manifest,
      "train.steps": extra.steps ?? 12,
      "train.batchSize": 32,
      seeds: extra.seeds ?? [0],
      out,
      retrainMismatched: extra.retrain ?? false,
    },
  });
  return {
    backend: extra.backend ?? new CpuBackend(),
    data: s.data,
    outDir: out,
    config: r.config,
    configHash: r.hash,
    software: await softwareInfo(),
    progress: quietProgress(extra.log ?? []),
  };
}

const byKey = (rs: CaseResult[]) => new Map(rs.map((r) => [`${r.id}|${r.seed}`, r]));

Deno.test("lock: a second holder is refused naming the first; stale and recycled-pid locks are taken over", async () => {
  await withTmp(async (tmp) => {
    const lock = await acquireRunLock(tmp, { command: "reproduce --out x" });
    const info = JSON.parse(await Deno.readTextFile(join(tmp, LOCK_FILE)));
    assert.equal(info.pid, Deno.pid);
    assert.equal(info.command, "reproduce --out x");
    await assert.rejects(
      acquireRunLock(tmp, { command: "other" }),
      mbError(new RegExp(`in use by another monobench run \\(pid ${Deno.pid} on .*reproduce --out x\\)`)),
    );
    await lock.release();
    await assert.rejects(Deno.stat(join(tmp, LOCK_FILE)), Deno.errors.NotFound);

    // A lock of a process that has exited is stale.
    const child = new Deno.Command("true").spawn();
    await child.status;
    const stale = { ...info, pid: child.pid, procStart: null, token: "t-stale" };
    await Deno.writeTextFile(join(tmp, LOCK_FILE), JSON.stringify(stale));
    const notices: string[] = [];
    const l2 = await acquireRunLock(tmp, { command: "c2", onNotice: (m) => notices.push(m) });
    assert.match(notices.join("\n"), new RegExp(`took over the stale lock .*pid ${child.pid}`));
    assert.equal(JSON.parse(await Deno.readTextFile(join(tmp, LOCK_FILE))).token, l2.info.token);
    await l2.release();

    if (Deno.build.os === "linux") {
      // A live pid with another start time is a recycled pid: stale too.
      const sleeper = new Deno.Command("sleep", { args: ["5"] }).spawn();
      try {
        await Deno.writeTextFile(
          join(tmp, LOCK_FILE),
          JSON.stringify({ ...info, pid: sleeper.pid, procStart: "1", token: "t-recycled" }),
        );
        const l3 = await acquireRunLock(tmp, { command: "c3" });
        await l3.release();
        // …while the same live process with its own start time holds the lock.
        const own = Deno.readTextFileSync(`/proc/${sleeper.pid}/stat`);
        const start = own.slice(own.lastIndexOf(")") + 2).split(" ")[19];
        await Deno.writeTextFile(
          join(tmp, LOCK_FILE),
          JSON.stringify({ ...info, pid: sleeper.pid, procStart: start, token: "t-live" }),
        );
        await assert.rejects(
          acquireRunLock(tmp, { command: "c4" }),
          mbError(/in use by another monobench run/),
        );
      } finally {
        sleeper.kill("SIGKILL");
        await sleeper.status;
      }
    }
    // Another host's lock cannot be judged: refused, with the way out in the hint.
    await Deno.writeTextFile(
      join(tmp, LOCK_FILE),
      JSON.stringify({ ...info, hostname: "elsewhere", token: "x" }),
    );
    await assert.rejects(acquireRunLock(tmp, { command: "c5" }), (e) => {
      assert.ok(e instanceof MonobenchError && /on elsewhere/.test(e.message) && /delete/.test(e.hint ?? ""));
      return true;
    });
    await Deno.writeTextFile(join(tmp, LOCK_FILE), "garbage");
    await assert.rejects(acquireRunLock(tmp, { command: "c6" }), mbError(/is not a monobench lock/));
  });
});

Deno.test("run dir: refuses the baseline, the repository, non-run directories and old run files", async () => {
  await withTmp(async (tmp) => {
    const open = async (out: string, cli: Record<string, unknown> = {}) =>
      openRunDir({ resolved: await resolveConfig({ cli: { preset: "smoke", out, ...cli } }), command: "t" });
    const baselineBefore = await Deno.readTextFile(join(BASELINE_DIR, "report.json"));
    await assert.rejects(open(BASELINE_DIR), mbError(/is the stored baseline directory/));
    await assert.rejects(open(join(BASELINE_DIR, "sub")), mbError(/is inside the stored baseline directory/));
    await Deno.mkdir(join(tmp, "b"));
    await assert.rejects(
      open(join(tmp, "b"), { baseline: join(tmp, "b", "report.json") }),
      mbError(/the directory of --baseline/),
    );
    await assert.rejects(open(REPO_ROOT), mbError(/is the repository or a directory above it/));
    await assert.rejects(open("/"), mbError(/is the repository or a directory above it/));
    assert.equal(await Deno.readTextFile(join(BASELINE_DIR, "report.json")), baselineBefore);

    // A directory with other content (e.g. a copied report) is not taken over.
    const other = join(tmp, "other");
    await Deno.mkdir(other);
    await Deno.writeTextFile(join(other, "report.json"), "{}");
    await assert.rejects(
      open(other),
      mbError(/is not empty and is not a monobench run directory .*report\.json/),
    );
    assert.equal(await Deno.readTextFile(join(other, "report.json")), "{}");
    await assert.rejects(Deno.stat(join(other, LOCK_FILE)), Deno.errors.NotFound);

    // A parent that is a file: a clear error before anything else.
    await Deno.writeTextFile(join(tmp, "file"), "x");
    await assert.rejects(
      open(join(tmp, "file", "run")),
      mbError(/--out .* exists and is not a directory|cannot create/),
    );

    // A directory holding only a dead run's lock and temp files counts as empty.
    const leftover = join(tmp, "leftover");
    await Deno.mkdir(leftover);
    await Deno.writeTextFile(
      join(leftover, LOCK_FILE),
      JSON.stringify({ pid: 2 ** 22 + 12345, hostname: Deno.hostname(), token: "dead", procStart: null }),
    );
    await Deno.writeTextFile(join(leftover, ".report.json.1.2.3.tmp"), "partial");
    const log: string[] = [];
    const rd = await openRunDir({
      resolved: await resolveConfig({ cli: { preset: "smoke", out: leftover } }),
      command: "t",
      log: (m) => log.push(m),
    });
    await rd.close();
    assert.match(log.join("\n"), /took over the stale lock/);
    assert.match(log.join("\n"), /removed 1 temp leftover/);

    // run.json of an older version.
    const old = join(tmp, "old");
    await Deno.mkdir(old);
    await Deno.writeTextFile(join(old, "run.json"), JSON.stringify({ startedAt: "x", meta: { seed: 0 } }));
    await assert.rejects(open(old), mbError(/older monobench version/));
  });
});

Deno.test("run dir: other settings are refused naming the field; --retrain-mismatched accepts them", async () => {
  await withTmp(async (tmp) => {
    const out = join(tmp, "run");
    const open = async (steps: number, retrain = false) =>
      openRunDir({
        resolved: await resolveConfig({
          cli: { preset: "smoke", out, "train.steps": steps, retrainMismatched: retrain },
        }),
        command: "t",
      });
    await (await open(600)).close();
    const again = await open(600);
    assert.equal(again.resumed, true);
    await again.close();
    await assert.rejects(open(300), (e) => {
      assert.ok(e instanceof MonobenchError);
      assert.match(e.message, /holds a run with other settings: --steps 600 there, 300 now/);
      assert.ok(e.message.length < 300, `short: ${e.message}`);
      assert.match(e.hint ?? "", /--retrain-mismatched/);
      return true;
    });
    const r = await open(300, true);
    await r.close();
    assert.equal(JSON.parse(await Deno.readTextFile(join(out, "run.json"))).config.train.steps, 300);
  });
});

Deno.test("run dir: temp leftovers of interrupted writes are removed, checkpoints kept", async () => {
  await withTmp(async (tmp) => {
    const seed = join(tmp, "cases", "batchtopk-last-x1-k20", "seed-0");
    await Deno.mkdir(join(seed, "sae.tmp-4242-abc123"), { recursive: true });
    await Deno.mkdir(join(seed, "sae.prev"), { recursive: true });
    await Deno.mkdir(join(seed, "sae"), { recursive: true });
    await Deno.writeTextFile(join(seed, ".result.json.4242.1700000000000.0.tmp"), "{");
    await Deno.writeTextFile(join(tmp, ".report.json.1.2.3.tmp"), "{");
    assert.equal(await cleanTempLeftovers(tmp), 3);
    const left = [...Deno.readDirSync(seed)].map((e) => e.name).sort();
    assert.deepEqual(left, ["sae", "sae.prev"]);
  });
});

Deno.test("pipeline: one result per case and seed, reused only with equal provenance", async () => {
  await withTmp(async (tmp) => {
    const s = await setup(tmp);
    const out = join(tmp, "run");
    const log: string[] = [];
    const first = await runPipeline(s.cases, await options(s, out, { seeds: [0, 3], log }));
    assert.equal(first.cases.length, 4);
    assert.deepEqual(first.cases.map((c) => `${c.id}|${c.seed}`), [
      "batchtopk-last-x1-k20|0",
      "matryoshka-last-x1-k20|0",
      "batchtopk-last-x1-k20|3",
      "matryoshka-last-x1-k20|3",
    ]);
    for (const c of first.cases) {
      const path = join(out, "cases", c.id, `seed-${c.seed}`, "result.json");
      checkSchema(RESULT_SCHEMA, JSON.parse(await Deno.readTextFile(path)), path);
      assert.equal(c.checkpoint, join("cases", c.id, `seed-${c.seed}`, "sae"));
      assert.equal(c.provenance?.seed, c.seed);
      assert.equal(c.provenance?.backend, "cpu");
      assert.deepEqual(Object.keys(c.provenance!.data).sort(), [
        "eval:last",
        "similarity:labels",
        "train:last",
      ]);
    }
    // Independent init and data order per seed.
    const k = byKey(first.cases);
    assert.notEqual(k.get("batchtopk-last-x1-k20|0")!.finalLoss, k.get("batchtopk-last-x1-k20|3")!.finalLoss);

    // Same provenance: everything is reused as stored.
    const again = await runPipeline(s.cases, await options(s, out, { seeds: [0, 3], log }));
    assert.deepEqual(again.cases, first.cases);
    assert.equal(log.filter((l) => /already measured/.test(l)).length, 4);

    // Another seed list: the stored seeds are reused, the new one trained.
    const more = await runPipeline(s.cases, await options(s, out, { seeds: [3, 7] }));
    assert.deepEqual(more.cases.filter((c) => c.seed === 3), first.cases.filter((c) => c.seed === 3));

    // Another backend: refused before any work, naming the field; nothing changes on disk.
    const before = await Deno.readTextFile(
      join(out, "cases", "batchtopk-last-x1-k20", "seed-0", "result.json"),
    );
    await assert.rejects(
      runPipeline(s.cases, await options(s, out, { seeds: [0], backend: new OtherCpu() })),
      mbError(
        /made with another backend: cpu there, cpu-other now \(and 1 more case\/seed\(s\); fields that differ: backend, device\)/,
      ),
    );
    assert.equal(
      await Deno.readTextFile(join(out, "cases", "batchtopk-last-x1-k20", "seed-0", "result.json")),
      before,
    );
    // …or retrained on request.
    const re = await runPipeline(
      s.cases,
      await options(s, out, { seeds: [0], backend: new OtherCpu(), retrain: true }),
    );
    assert.ok(re.cases.every((c) => c.provenance?.backend === "cpu-other"));
    // The CPU backends compute the same numbers.
    assert.equal(re.cases[0].r2, first.cases[0].r2);
  });
});

Deno.test("pipeline: a result from other settings or data, or with a wrong schema, is not reused", async () => {
  await withTmp(async (tmp) => {
    const s = await setup(tmp);
    const a = join(tmp, "a"), b = join(tmp, "b");
    await runPipeline(s.cases, await options(s, a, { steps: 12 }));
    // A case left by a racing run with other steps (no run.json involved): the config hash differs.
    const rel = join("cases", "batchtopk-last-x1-k20", "seed-0");
    await Deno.mkdir(join(b, rel), { recursive: true });
    await Deno.copyFile(join(a, rel, "result.json"), join(b, rel, "result.json"));
    await assert.rejects(
      runPipeline(s.cases, await options(s, b, { steps: 20 })),
      mbError(/result\.json was made with another config hash/),
    );

    // Other data behind the same manifest path: the store hashes differ.
    const d2 = await writeSyntheticManifest(join(tmp, "data2"), { seed: 9 });
    const other = { ...s, data: await manifestData(d2) };
    await assert.rejects(
      runPipeline(s.cases, await options(other, a, { steps: 12 })),
      mbError(/another data store (eval|train):last/),
    );

    // A result.json with a wrong type is an error naming the file and field, not an empty cell…
    const path = join(a, rel, "result.json");
    const j = JSON.parse(await Deno.readTextFile(path));
    j.r2 = "81.9";
    await Deno.writeTextFile(path, JSON.stringify(j));
    await assert.rejects(
      runPipeline(s.cases, await options(s, a, { steps: 12 })),
      mbError(
        /result\.json does not match result\.schema\.json: \/r2: expected number or null, got string "81\.9"/,
      ),
    );
    // …and --retrain-mismatched recomputes it.
    const fixed = await runPipeline(s.cases, await options(s, a, { steps: 12, retrain: true }));
    assert.equal(typeof fixed.cases[0].r2, "number");
  });
});

Deno.test("data: a same-size edit of a store shard is caught when the run opens its data", async () => {
  await withTmp(async (tmp) => {
    const s = await setup(tmp);
    await verifyRunData(s.data);
    const shard = join(tmp, "data", "train", "shard-00000.bin");
    const bytes = await Deno.readFile(shard);
    bytes[100] ^= 0x01;
    await Deno.writeFile(shard, bytes);
    const edited = await manifestData(s.manifest); // sizes and header are fine
    await assert.rejects(
      verifyRunData(edited),
      mbError(/data store train:last: activation store .*content hash mismatch/),
    );
  });
});

Deno.test("pipeline: a batch larger than the data is refused", async () => {
  await withTmp(async (tmp) => {
    const s = await setup(tmp);
    const o = await options(s, join(tmp, "run"));
    const big = { ...o, config: { ...o.config, train: { ...o.config.train, batchSize: 512 } } };
    assert.throws(
      () => checkRunnable(s.cases, big.config, s.data),
      mbError(/batch size 512 is larger than the training data of layer last \(256 rows\)/),
    );
  });
});

Deno.test("pipeline: interrupted training resumes bit-identically; disk full is a clear error", async () => {
  await withTmp(async (tmp) => {
    const s = await setup(tmp);
    const one = s.cases.slice(0, 1);
    const ref = await runPipeline(one, await options(s, join(tmp, "ref"), { steps: 20 }));

    // Interrupt after the checkpoint at step 8 (checkpoints every 20 % = 4 steps).
    const out = join(tmp, "run");
    const o = await options(s, out, { steps: 20 });
    o.progress = quietProgress([], (step) => {
      if (step >= 10) throw new Error("interrupted");
    });
    await assert.rejects(runPipeline(one, o), /interrupted/);
    const seedDir = join(out, "cases", one[0].id, "seed-0");
    assert.ok((await Deno.stat(join(seedDir, "provenance.json"))).isFile);
    // Resuming with another backend is refused: the checkpoint's provenance differs.
    await assert.rejects(
      runPipeline(one, await options(s, out, { steps: 20, backend: new OtherCpu() })),
      mbError(/checkpoint in .* was trained with another backend: cpu there, cpu-other now/),
    );
    const log: string[] = [];
    const resumed = await runPipeline(one, await options(s, out, { steps: 20, log }));
    const strip = (c: CaseResult) => ({ ...c, trainSeconds: 0 });
    assert.deepEqual(resumed.cases.map(strip), ref.cases.map(strip));

    // Disk full while the checkpoint is written: one clear MonobenchError, the case resumes later.
    const full = join(tmp, "full");
    const realWrite = Deno.writeFile;
    let enospc: Error | null = null;
    try {
      Deno.writeFileSync("/dev/full", new Uint8Array(8));
    } catch (e) {
      enospc = e as Error;
    }
    if (enospc === null) return; // no /dev/full on this system
    Deno.writeFile = ((path: string | URL, data: Uint8Array, opt?: Deno.WriteFileOptions) => {
      if (String(path).includes(".tmp-")) return Promise.reject(enospc);
      return realWrite(path, data as Uint8Array<ArrayBuffer>, opt);
    }) as typeof Deno.writeFile;
    try {
      await assert.rejects(runPipeline(one, await options(s, full, { steps: 20 })), (e) => {
        assert.ok(e instanceof MonobenchError, `got ${e}`);
        assert.match(e.message, /cannot write its checkpoint .*No space left on device/);
        assert.match(e.hint ?? "", /free disk space/);
        return true;
      });
    } finally {
      Deno.writeFile = realWrite;
    }
    const after = await runPipeline(one, await options(s, full, { steps: 20 }));
    assert.deepEqual(after.cases.map(strip), ref.cases.map(strip));
  });
});
