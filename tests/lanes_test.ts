/**
 * Lanes (src/run/lanes.ts): units trained side by side in workers give the numbers a sequential
 * run on the same backend gives, in run order, with the same files; an error in a lane is one
 * MonobenchError and leaves finished units reusable; `auto` picks lanes only for small units on
 * CPU backends.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { selectBackend } from "../src/backend/select.ts";
import { selectCases } from "../src/grid/cases.ts";
import { resolveConfig } from "../src/run/config.ts";
import { manifestData } from "../src/run/data.ts";
import { autoLanes, LANE_MAX_BATCH_WIDTH, parseLanes, resolveLanes } from "../src/run/lanes.ts";
import { type CaseProgress, type PipelineOptions, runPipeline } from "../src/run/pipeline.ts";
import { softwareInfo } from "../src/run/provenance.ts";
import { writeSyntheticManifest } from "../src/run/synthetic.ts";
import { listSaes } from "../src/sae/registry.ts";
import "../src/sae/mod.ts";
import type { CaseResult } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";

async function withTmp(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mb-lanes-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Progress stand-in that records which cases began and ended. */
function recorder(): CaseProgress & { begun: number[]; ended: number[]; lines: string[] } {
  const r = {
    begun: [] as number[],
    ended: [] as number[],
    lines: [] as string[],
    log: (m: string) => void r.lines.push(m),
    beginCase: (i: number) => void r.begun.push(i),
    setPhase: () => {},
    step: () => {},
    endCase: (_s?: string, i?: number) => void r.ended.push(i ?? -1),
    skipCase: () => {},
  };
  return r;
}

async function options(
  manifest: string,
  out: string,
  backendName: "cpu" | "cpu-mt",
  extra: { saeModules?: string[]; lanes?: number } = {},
): Promise<PipelineOptions & { progress: ReturnType<typeof recorder> }> {
  const r = await resolveConfig({
    cli: {
      preset: "smoke",
      "data.source": manifest,
      "train.steps": 12,
      "train.batchSize": 32,
      seeds: [0, 1],
      out,
      saeModules: extra.saeModules ?? [],
    },
  });
  return {
    backend: await selectBackend(backendName, { threads: 1 }),
    data: await manifestData(manifest),
    outDir: out,
    config: r.config,
    configHash: r.hash,
    software: await softwareInfo(),
    progress: recorder(),
    lanes: extra.lanes ? { count: extra.lanes, backend: { name: backendName, threads: 1 } } : undefined,
  };
}

/** A result without its wall-clock time. */
const timeless = (r: CaseResult) => ({ ...r, trainSeconds: 0 });

for (const backendName of ["cpu", "cpu-mt"] as const) {
  Deno.test(`lanes: two ${backendName} lanes give the sequential run's results, in run order`, async () => {
    await withTmp(async (tmp) => {
      const manifest = await writeSyntheticManifest(join(tmp, "data"));
      const { cases } = selectCases("smoke", { grid: "eps=1,2" });
      const seqOpts = await options(manifest, join(tmp, "seq"), backendName);
      const seq = await runPipeline(cases, seqOpts);
      seqOpts.backend.destroy();

      const opts = await options(manifest, join(tmp, "lanes"), backendName, { lanes: 2 });
      const partial: number[] = [];
      const par = await runPipeline(cases, {
        ...opts,
        onCase: (done) => void partial.push(done.length),
      });
      opts.backend.destroy();
      assert.equal(par.cases.length, 8);
      assert.deepEqual(
        par.cases.map((c) => `${c.id}|${c.seed}`),
        seq.cases.map((c) => `${c.id}|${c.seed}`),
      );
      // Same numbers, same provenance (the device is the lane backend's, not the lane count).
      assert.deepEqual(par.cases.map(timeless), seq.cases.map(timeless));
      assert.deepEqual(partial, [1, 2, 3, 4, 5, 6, 7, 8]);
      assert.deepEqual([...opts.progress.begun].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8]);
      assert.deepEqual([...opts.progress.ended].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8]);
      // The files are a sequential run's: a sequential rerun reuses every unit.
      const again = await options(manifest, join(tmp, "lanes"), backendName);
      const reused = await runPipeline(cases, again);
      again.backend.destroy();
      assert.deepEqual(reused.cases, par.cases);
      assert.equal(again.progress.lines.filter((l) => /already measured/.test(l)).length, 8);
    });
  });
}

Deno.test("lanes: an error in a lane is the run's MonobenchError; finished units are kept", async () => {
  await withTmp(async (tmp) => {
    const manifest = await writeSyntheticManifest(join(tmp, "data"));
    const mod = join(tmp, "flaky.ts");
    const url = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
    await Deno.writeTextFile(
      mod,
      `import { registerSae } from ${url("../src/sae/registry.ts")};
import { batchTopK } from ${url("../src/sae/batchtopk.ts")};
import { MonobenchError } from ${url("../src/util/errors.ts")};
registerSae({
  ...batchTopK,
  name: "flaky",
  initDecoder(cfg, rng) {
    if (cfg.width === 2 * cfg.d) throw new MonobenchError("flaky cannot start at x2", "use x1");
    return batchTopK.initDecoder(cfg, rng);
  },
});
`,
    );
    await import(new URL(`file://${mod}`).href);
    const { cases } = selectCases("smoke", { grid: "eps=1,2", extraSaes: ["flaky"], knownSaes: listSaes() });
    const out = join(tmp, "run");
    const opts = await options(manifest, out, "cpu", { saeModules: [mod], lanes: 2 });
    await assert.rejects(runPipeline(cases, opts), (e: unknown) => {
      assert.ok(e instanceof MonobenchError, `a MonobenchError, got ${e}`);
      assert.equal(e.message, "flaky cannot start at x2");
      assert.equal(e.hint, "use x1");
      return true;
    });
    opts.backend.destroy();
    // Whatever finished before the error is on disk and reused by the next run.
    const done = opts.progress.ended.length;
    assert.ok(done >= 1, `some units finished (${done})`);
    const fine = cases.filter((c) => c.sae !== "flaky");
    const next = await options(manifest, out, "cpu", { lanes: 2 });
    const r = await runPipeline(fine, next);
    next.backend.destroy();
    assert.equal(r.cases.length, fine.length * 2);
    assert.ok(next.progress.lines.some((l) => /already measured/.test(l)));
  });
});

Deno.test("lanes: auto uses one lane per thread only for small units on CPU backends", () => {
  assert.equal(autoLanes("cpu-mt", 2, 159, 512, 5120), 2);
  assert.equal(autoLanes("cpu", 8, 159, 512, 5120), 8);
  assert.equal(autoLanes("cpu-mt", 8, 3, 512, 5120), 3);
  assert.equal(autoLanes("cpu-mt", 2, 63, 4096, 768 * 64), 1);
  assert.equal(autoLanes("cpu-mt", 2, 10, 1, LANE_MAX_BATCH_WIDTH), 2);
  assert.equal(autoLanes("cpu-mt", 2, 10, 1, LANE_MAX_BATCH_WIDTH + 1), 1);
  assert.equal(autoLanes("cpu-mt", 1, 159, 512, 5120), 1);
  for (const gpu of ["webgpu", "dawn", "blas"]) assert.equal(autoLanes(gpu, 16, 159, 512, 5120), 1);
  // Each lane gets its share of the threads; never more lanes than units.
  assert.deepEqual(resolveLanes(null, "cpu-mt", 2, 159, 512, 5120), {
    count: 2,
    backend: { name: "cpu-mt", threads: 1 },
  });
  assert.deepEqual(resolveLanes(2, "cpu-mt", 8, 159, 4096, 49152), {
    count: 2,
    backend: { name: "cpu-mt", threads: 4 },
  });
  assert.deepEqual(resolveLanes(4, "cpu", 2, 3, 512, 5120), {
    count: 3,
    backend: { name: "cpu", threads: 1 },
  });
  assert.equal(resolveLanes(null, "webgpu", 16, 159, 512, 5120).count, 1);
  assert.throws(
    () => resolveLanes(2, "webgpu", 16, 159, 512, 5120),
    (e: unknown) =>
      e instanceof MonobenchError && /--lanes 2: the webgpu backend/.test(e.message) &&
      /cpu-mt/.test(e.hint ?? ""),
  );
  assert.equal(parseLanes("auto"), null);
  assert.equal(parseLanes(" 3 "), 3);
  for (const bad of ["0", "-1", "1.5", "", "x", "257"]) {
    assert.throws(
      () => parseLanes(bad),
      (e: unknown) => e instanceof MonobenchError && /--lanes/.test(e.message),
    );
  }
});
