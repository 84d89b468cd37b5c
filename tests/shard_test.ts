/**
 * `--shard i/n`: the spec is parsed strictly (bad specs are one-line errors, exit 2); the split
 * puts every (case, seed) unit in exactly one shard, is independent of the order cases are listed
 * in, and balances the estimated cost within Graham's LPT bound of the optimum (brute force on
 * small instances); `--list` shows a shard's units, and the three shards of a split list every
 * unit once; a run directory keeps the shard it was started as.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { EMBEDDED_DEFAULTS, EMBEDDED_LAYERS } from "../src/data/embedded.ts";
import { type BenchCase, getPreset } from "../src/grid/cases.ts";
import { resolveConfig } from "../src/run/config.ts";
import { openRunDir } from "../src/run/rundir.ts";
import {
  assignLpt,
  costBasis,
  EMBEDDED_DEFAULT_NEVAL,
  EMBEDDED_LAYER_DIMS,
  parseShardRecord,
  parseShardSpec,
  planShards,
  shardLoads,
  shardRecord,
  unitKey,
  unitsOfShard,
} from "../src/run/shard.ts";
import { writeSyntheticManifest } from "../src/run/synthetic.ts";
import { runCli } from "../src/util/cli.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";
import { main as reproduce } from "../tasks/reproduce.ts";

Deno.test("shard spec: i/n with 1 ≤ i ≤ n; anything else names the value", () => {
  assert.deepEqual(parseShardSpec("2/3"), { index: 2, count: 3 });
  assert.deepEqual(parseShardSpec(" 1 / 1 "), { index: 1, count: 1 });
  assert.deepEqual(parseShardSpec("07/10"), { index: 7, count: 10 });
  const bad: [string, RegExp][] = [
    ["0/2", /numbered from 1, not 0/],
    ["3/2", /shard 3 of 2 does not exist/],
    ["1/0", /shard count must be at least 1/],
    ["a/b", /"a\/b" is not of the form i\/n/],
    ["", /not of the form/],
    ["1/2/3", /not of the form/],
    ["-1/2", /not of the form/],
    ["1.5/2", /not of the form/],
    ["2", /not of the form/],
    ["1/20000", /at most 10000 shards/],
  ];
  for (const [s, re] of bad) {
    assert.throws(
      () => parseShardSpec(s),
      (e: unknown) => e instanceof MonobenchError && re.test(e.message),
      s,
    );
  }
  // The hint spells out the 0-based array index conversion.
  try {
    parseShardSpec("0/4");
  } catch (e) {
    assert.match((e as MonobenchError).hint ?? "", /SLURM_ARRAY_TASK_ID\+1/);
  }
});

Deno.test("LPT: a hand-worked split; ties go by key, then to the lowest shard", () => {
  // 7 → 1; 5 → 2; 4 → 2 (5 < 7); 3 → 1 (7 < 9); 3 → 2 (9 < 10); 2 → 1 (10 < 12): loads 12 / 12.
  const items = [7, 5, 4, 3, 3, 2].map((s, i) => ({ key: [`u${i}`], seconds: s }));
  assert.deepEqual(assignLpt(items, 2), [1, 2, 2, 1, 2, 1]);
  // Equal costs: by key ("a" < "b" < "c"), each to the emptiest, lowest shard first.
  const eq = ["c", "a", "b"].map((k) => ({ key: [k], seconds: 1 }));
  assert.deepEqual(assignLpt(eq, 2), [1, 1, 2]);
  // Numeric key parts compare as numbers (seed 10 after seed 9).
  const seeds = [10, 9].map((s) => ({ key: ["x", s], seconds: 1 }));
  assert.deepEqual(assignLpt(seeds, 2), [2, 1]);
});

/** The optimal makespan by brute force over every assignment. */
function optimum(costs: number[], m: number): number {
  let best = Infinity;
  const load = new Array<number>(m).fill(0);
  const go = (i: number) => {
    if (Math.max(...load) >= best) return;
    if (i === costs.length) {
      best = Math.max(...load);
      return;
    }
    for (let s = 0; s < m; s++) {
      load[s] += costs[i];
      go(i + 1);
      load[s] -= costs[i];
    }
  };
  go(0);
  return best;
}

Deno.test("LPT: within Graham's 4/3 − 1/(3m) of the brute-force optimum on random instances", () => {
  const rng = new Rng(7);
  for (let trial = 0; trial < 30; trial++) {
    const n = 5 + rng.int(5), m = 2 + rng.int(2);
    const costs = Array.from({ length: n }, () => 1 + rng.int(20));
    const shards = assignLpt(costs.map((s, i) => ({ key: [i], seconds: s })), m);
    const load = new Array<number>(m).fill(0);
    shards.forEach((s, i) => (load[s - 1] += costs[i]));
    const opt = optimum(costs, m);
    assert.ok(
      Math.max(...load) <= (4 / 3 - 1 / (3 * m)) * opt + 1e-9,
      `costs ${costs} on ${m}: ${load} vs ${opt}`,
    );
  }
});

function defaultPlan(count: number, cases?: BenchCase[]) {
  const p = getPreset("default");
  const seeds = [0, 1, 2];
  const config = { backend: "auto", data: { source: "embedded", nTrain: null, nEval: 2000 }, train: p.hyper };
  // deno-lint-ignore no-explicit-any
  const basis = costBasis(config as any, p.cases);
  return planShards(cases ?? p.cases, seeds, count, basis);
}

Deno.test("split: every unit of the default preset in exactly one shard, balanced, order-independent", () => {
  const plan = defaultPlan(4);
  assert.equal(plan.units.length, 53 * 3);
  const keys = plan.units.map((u) => unitKey(u.id, u.seed));
  assert.equal(new Set(keys).size, keys.length);
  const perShard = [1, 2, 3, 4].map((i) => unitsOfShard(plan, i).map((u) => unitKey(u.id, u.seed)));
  assert.deepEqual(perShard.flat().sort(), [...keys].sort(), "the shards partition the units");
  // Seeds of one case may go to different shards; units keep run order (seed by seed) within a shard.
  for (const units of [1, 2, 3, 4].map((i) => unitsOfShard(plan, i))) {
    const pos = units.map((u) => plan.units.indexOf(u));
    assert.deepEqual(pos, [...pos].sort((a, b) => a - b));
  }
  // Balance against the lower bound max(mean, largest unit); LPT stays within 4/3 of the optimum.
  const loads = shardLoads(plan);
  const total = loads.reduce((a, b) => a + b, 0);
  const lower = Math.max(total / 4, ...plan.units.map((u) => u.seconds));
  assert.ok(Math.max(...loads) <= lower * (4 / 3), `loads ${loads.map((x) => x.toFixed(1))}, lower ${lower}`);
  assert.ok(Math.max(...loads) <= lower * 1.05, `default preset: within 5 % of the bound (${loads})`);
  // Listing the cases in another order gives the same shard for every unit.
  const shuffled = [...getPreset("default").cases];
  const rng = new Rng(3);
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
  }
  const again = defaultPlan(4, shuffled);
  const where = new Map(plan.units.map((u) => [unitKey(u.id, u.seed), u.shard]));
  for (const u of again.units) assert.equal(u.shard, where.get(unitKey(u.id, u.seed)), u.id);
  // As many shards as units: one each; more is refused.
  const n = plan.units.length;
  assert.deepEqual(shardLoads(defaultPlan(n)).map((x) => x > 0), new Array(n).fill(true));
  assert.throws(() => defaultPlan(n + 1), /only 159 \(case, seed\) unit\(s\)/);
});

Deno.test("split: the embedded layer widths and evaluation size match the embedded default", () => {
  assert.deepEqual(Object.keys(EMBEDDED_LAYER_DIMS).sort(), EMBEDDED_LAYERS.map((l) => l.layer).sort());
  assert.equal(EMBEDDED_DEFAULT_NEVAL, EMBEDDED_DEFAULTS.nEval);
});

Deno.test("split: a shard record round-trips; a tampered plan is refused", () => {
  const plan = defaultPlan(3);
  const rec = shardRecord(plan, { index: 2, count: 3 });
  assert.deepEqual(parseShardRecord(JSON.parse(JSON.stringify(rec)), "run.json"), rec);
  const bad = structuredClone(rec);
  bad.plan.units[0].shard = bad.plan.units[0].shard === 1 ? 2 : 1;
  assert.throws(() => parseShardRecord(bad, "run.json"), /does not match its hash/);
  assert.equal(parseShardRecord(null, "run.json"), null);
});

/** Run reproduce in-process with `--list`, capturing what it prints. */
async function list(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [], err: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  try {
    const code = await runCli(() => reproduce([...args, "--list"]), {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
    });
    return { code, out, err };
  } finally {
    console.log = log;
  }
}

Deno.test("reproduce --shard: bad specs exit 2 with one line; --list shows each shard's units with cost", async () => {
  for (const spec of ["0/2", "3/2", "1/0", "a/b"]) {
    const r = await list(["--preset", "smoke", "--shard", spec]);
    assert.equal(r.code, 2, spec);
    assert.equal(r.err.filter((l) => l.startsWith("monobench: ")).length, 1, `${spec}: ${r.err}`);
    assert.match(r.err[0], /^monobench: --shard /);
  }
  // The three shards of the smoke preset × 2 seeds list every unit exactly once.
  const seen: string[] = [];
  for (const i of [1, 2, 3]) {
    const r = await list(["--preset", "smoke", "--seeds", "2", "--shard", `${i}/3`]);
    assert.equal(r.code, 0, r.err.join("\n"));
    assert.match(r.out[0], new RegExp(`^shard ${i}/3: \\d+ of 8 \\(case, seed\\) unit\\(s\\), estimated`));
    for (const l of r.out) {
      const m = /^ {2}(\S+) {2}seed (\d+) {2}~[\d.]+ (s|min|h)$/.exec(l);
      if (m) seen.push(`${m[1]}|${m[2]}`);
    }
  }
  const smoke = getPreset("smoke").cases.map((c) => c.id);
  assert.deepEqual(seen.sort(), [0, 1].flatMap((s) => smoke.map((id) => `${id}|${s}`)).sort());
  const withBaseline = await list([
    "--preset",
    "smoke",
    "--shard",
    "1/2",
    "--baseline",
    "results/baseline/report.json",
  ]);
  assert.equal(withBaseline.code, 2);
  assert.match(withBaseline.err[0], /--baseline compares a whole run/);
  assert.match(withBaseline.err[1], /deno task merge --baseline/);
  const tooMany = await list(["--preset", "smoke", "--shard", "9/9"]);
  assert.equal(tooMany.code, 2);
  assert.match(tooMany.err[0], /only 4 \(case, seed\) unit\(s\)/);
});

Deno.test("reproduce --shard on a manifest: costs from the stores' widths", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mb-shard-" });
  try {
    const manifest = await writeSyntheticManifest(join(dir, "data"), { d: 48 });
    const r = await list(["--preset", "smoke", "--data", manifest, "--backend", "cpu", "--shard", "1/2"]);
    assert.equal(r.code, 0, r.err.join("\n"));
    assert.match(r.out[0], /^shard 1\/2: 2 of 4 .*cost profile cpu-mt/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run dir: a shard's directory is refused for another shard or the whole run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mb-shard-dir-" });
  try {
    const out = join(dir, "run");
    const resolved = await resolveConfig({ cli: { preset: "smoke", out }, cwd: dir });
    const plan = defaultPlan(3);
    const open = (index: number | null) =>
      openRunDir({
        resolved,
        command: "test",
        shard: index === null ? null : shardRecord(plan, { index, count: 3 }),
      });
    await (await open(2)).close();
    const stored = JSON.parse(await Deno.readTextFile(join(out, "run.json")));
    assert.equal(stored.shard.index, 2);
    await (await open(2)).close(); // the same shard resumes
    await assert.rejects(() => open(1), /holds shard 2\/3; this run is shard 1\/3/);
    await assert.rejects(() => open(null), /holds shard 2\/3; this run is the whole selection/);
    const whole = join(dir, "whole");
    const r2 = await resolveConfig({ cli: { preset: "smoke", out: whole }, cwd: dir });
    await (await openRunDir({ resolved: r2, command: "test" })).close();
    await assert.rejects(
      () => openRunDir({ resolved: r2, command: "test", shard: shardRecord(plan, { index: 1, count: 3 }) }),
      /holds the whole selection \(no --shard\); this run is shard 1\/3/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
