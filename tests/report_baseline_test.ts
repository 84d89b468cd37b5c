import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import {
  baselineFailed,
  checkBaselineConfig,
  checkBaselineData,
  compareWithBaseline,
  formatBaselineSummary,
  loadBaseline,
} from "../src/report/baseline.ts";
import { syntheticCase, syntheticLayer, syntheticMs, syntheticReport } from "../src/report/synthetic.ts";
import type { Claim, Report } from "../src/report/types.ts";
import { writeReport } from "../src/report/writers.ts";
import { resolveConfig } from "../src/run/config.ts";
import type { CaseResult } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";

const H = (c: string) => c.repeat(64);

function claim(id: string, status: Claim["status"]): Claim {
  return { id, statement: id, ref: "x", status, evidence: "e" };
}

const resolved = await resolveConfig({ cli: { preset: "smoke", "train.steps": 40, out: "/nowhere/run" } });

/** A complete report (config, provenance: what report.json always carries) around cases. */
function full(
  cases: CaseResult[],
  claims = [claim("l0-near-k", "pass")],
  data = { "train:last": H("a") },
): Report {
  const seeds = [...new Set(cases.map((c) => c.seed))];
  const provenance = {
    monobench: "0.1.0",
    gitCommit: "unknown",
    denoLock: "unknown",
    deno: "2.9.6",
    backend: "cpu",
    device: "test",
    configHash: resolved.hash,
    data,
  };
  const r = syntheticReport(
    cases.map((c) => ({ ...c, provenance: { ...provenance, seed: c.seed } })),
    [syntheticLayer("last", [syntheticMs("labels", 0.1, 0.2)])],
    { claims },
  );
  r.version = 2;
  r.run = {
    ...r.run,
    seed: seeds[0],
    seeds,
    config: resolved.config as never,
    configHash: resolved.hash,
    provenance: { ...provenance, gitDirty: null, seeds },
  };
  return r;
}

/** Two cases (ε 1 and 4), `seeds` replicates each; `tweak` per replicate. */
function cases(seeds: number[], tweak: (c: CaseResult, seed: number) => Partial<CaseResult> = () => ({})) {
  return seeds.flatMap((seed) =>
    [1, 4].map((eps) => {
      const c = syntheticCase({
        layer: "last",
        sae: "matryoshka",
        expansion: eps,
        seed,
        ms: [syntheticMs("labels", 0.3, 0.8), syntheticMs("inceptionv3", 0.2, 0.6)],
        fracAboveRaw: { labels: 0.8 },
        r2: 70,
        l0: 20.5,
        deadFraction: 0.01,
      });
      return { ...c, ...tweak(c, seed) };
    })
  );
}

const key = (f: { caseId: string; metric: string }) => `${f.caseId}:${f.metric}`;

Deno.test("baseline: identical reports pass; the fixed tolerances of a single-seed baseline are stated", () => {
  const r = compareWithBaseline(full(cases([0])), full(cases([0])));
  equal(r.regressions.length + r.improvements.length, 0);
  ok(!baselineFailed(r));
  // 2 cases × (2 sources × MS mean/max + fraction above raw (labels) + R² + L0 + dead) + 1 claim
  equal(r.compared, 2 * 8 + 1);
  const text = formatBaselineSummary(r);
  ok(text.includes("0 change(s) outside tolerance"), text);
  ok(/tolerances: fixed \(MS mean ±0\.02.*one seed per case/.test(text), text);
});

Deno.test("baseline: two-sided — a change outside the tolerance fails in either direction", () => {
  const base = full(cases([0]));
  const cur = full(
    cases([0], (c) =>
      c.expansion === 1
        ? {
          ms: [syntheticMs("labels", 0.25, 0.8), syntheticMs("inceptionv3", 0.2, 0.7)], // mean −.05; max +.1
          r2: 69.5, // −0.5: within 1 point
          l0: 23, // further from K = 20 by 2.5
          deadFraction: 0.2,
        }
        : { r2: 72, l0: 19.1 } // R² +2 points; L0 −1.4, now 0.9 from K instead of 0.5: worse
    ),
    [claim("l0-near-k", "fail")],
  );
  const r = compareWithBaseline(cur, base);
  deepStrictEqual(r.regressions.map(key).sort(), [
    "l0-near-k:claim",
    "matryoshka-last-x1-k20:dead_fraction",
    "matryoshka-last-x1-k20:l0",
    "matryoshka-last-x1-k20:ms_mean/labels",
    "matryoshka-last-x4-k20:l0",
  ]);
  deepStrictEqual(r.improvements.map(key).sort(), [
    "matryoshka-last-x1-k20:ms_max/inceptionv3",
    "matryoshka-last-x4-k20:r2",
  ]);
  const ms = r.regressions.find((f) => f.metric === "ms_mean/labels")!;
  ok(Math.abs(ms.delta! + 0.05) < 1e-12);
  equal(ms.basis, "fixed");
  // Only improvements: still a failed check (a bug can look like an improvement).
  const onlyBetter = compareWithBaseline(full(cases([0], () => ({ r2: 90 }))), base);
  equal(onlyBetter.regressions.length, 0);
  equal(onlyBetter.improvements.length, 2);
  ok(baselineFailed(onlyBetter));
  // L0 moving towards K by more than the tolerance is a change for the better.
  const closer = compareWithBaseline(
    full(cases([0], () => ({ l0: 20 }))),
    full(cases([0], () => ({ l0: 21.5 }))),
  );
  deepStrictEqual(closer.improvements.map((x) => x.metric), ["l0", "l0"]);
  const text = formatBaselineSummary(r);
  ok(text.includes("5 regression(s) (worse), 2 improvement(s) (better)"), text);
  ok(text.includes("MS mean (labels) 0.3000 → 0.2500 (-0.0500, worse; tolerance ±0.0200, fixed)"), text);
  const loose = compareWithBaseline(cur, base, { msMean: 0.1, l0: 5, deadFraction: 0.5, msMax: 0.2, r2: 3 });
  deepStrictEqual(loose.regressions.map(key), ["l0-near-k:claim"]);
});

Deno.test("baseline: tolerances from the seed spread of a multi-seed baseline (hand-computed t-intervals)", () => {
  // Baseline R² over seeds 0, 1, 2: 70, 71, 72 (mean 71, s = 1); dead fraction 0 on every seed.
  const r2 = [70, 71, 72];
  const base = full(cases([0, 1, 2], (_c, s) => ({ r2: r2[s], deadFraction: 0 })));
  const t2 = 4.302652729749464; // t_{0.975, 2}
  // One current seed: tolerance t · s · √(1/3 + 1/1) = 4.9683.
  const inside = compareWithBaseline(full(cases([0], () => ({ r2: 71 + 4.9, deadFraction: 0 }))), base);
  equal(inside.regressions.length + inside.improvements.length, 0);
  const outside = compareWithBaseline(full(cases([0], () => ({ r2: 71 - 5.0, deadFraction: 0 }))), base);
  deepStrictEqual(outside.regressions.map(key), ["matryoshka-last-x1-k20:r2", "matryoshka-last-x4-k20:r2"]);
  const f = outside.regressions[0];
  ok(Math.abs(f.tolerance! - t2 * Math.sqrt(1 / 3 + 1)) < 1e-9, `${f.tolerance}`);
  equal(f.basis, "seed-spread");
  // Three current seeds: √(1/3 + 1/3); a shift of 3.6 is outside (3.513), 3.4 inside.
  const three = (d: number) => full(cases([0, 1, 2], (_c, s) => ({ r2: r2[s] + d, deadFraction: 0 })));
  equal(compareWithBaseline(three(3.4), base).improvements.length, 0);
  const up = compareWithBaseline(three(3.6), base);
  equal(up.improvements.length, 2);
  ok(Math.abs(up.improvements[0].tolerance! - t2 * Math.sqrt(2 / 3)) < 1e-9);
  // No spread (no dead latents on any seed): at least a tenth of the fixed tolerance (0.005).
  equal(
    compareWithBaseline(full(cases([0], () => ({ r2: 71, deadFraction: 0.004 }))), base).regressions.length,
    0,
  );
  const dead = compareWithBaseline(full(cases([0], () => ({ r2: 71, deadFraction: 0.01 }))), base);
  deepStrictEqual(dead.regressions.map((x) => x.metric), ["dead_fraction", "dead_fraction"]);
  ok(Math.abs(dead.regressions[0].tolerance! - 0.005) < 1e-12);
  const text = formatBaselineSummary(outside);
  ok(text.includes("tolerances: from the baseline's seed spread (95 % t-interval"), text);
  ok(text.includes("from the seed spread of 3 baseline seeds"), text);
  ok(outside.warnings.some((w) => w.startsWith("seeds differ")));
});

Deno.test("baseline: another config or other data is a refusal naming the field, not a warning", async () => {
  const base = full(cases([0]));
  const other = await resolveConfig({ cli: { preset: "smoke", "train.steps": 300, "train.batchSize": 32 } });
  throws(
    () => checkBaselineConfig(base, other.config, other.hash),
    (e) =>
      e instanceof MonobenchError &&
      /another config: --steps 40 in the baseline, 300 now; --batch 64 in the baseline, 32 now/.test(
        e.message,
      ),
  );
  const cur = full(cases([0]));
  cur.run = { ...cur.run, config: other.config as never, configHash: other.hash };
  throws(() => compareWithBaseline(cur, base), /another config: --steps 40 in the baseline, 300 now/);
  throws(
    () => checkBaselineData(base, { "train:last": H("b") }),
    /other data: store train:last has hash aaaaaaaaaaaa… in the baseline, bbbbbbbbbbbb… now/,
  );
  throws(() => checkBaselineData(base, { "train:11": H("a") }), /no activation store in common/);
  checkBaselineData(base, { "train:last": H("a"), "eval:last": H("c") });
});

Deno.test("baseline: a store hashed otherwise is compared when its rows agree (another CPU), refused when not", () => {
  const rows = [8, 3, 1.5, 2.5, 3.25, -0.5, 0.5, 0.25];
  const base = full(cases([0]));
  base.run.provenance!.dataSketch = { "train:last": rows };
  // The same rows to float32 rounding: accepted, with a note that names the store.
  const near = rows.map((v, i) => (i < 2 ? v : v * (1 + 3e-7)));
  const notes = checkBaselineData(base, { "train:last": H("b") }, { "train:last": near });
  equal(notes.length, 1);
  ok(/data store train:last hashes otherwise .* rows agree to 3\.0e-7/.test(notes[0]), notes[0]);
  // Another image in a sketched row, another shape, or no sketch on this side: refused.
  const far = rows.map((v, i) => (i === 2 ? v + 0.01 : v));
  throws(() => checkBaselineData(base, { "train:last": H("b") }, { "train:last": far }), /rows differ/);
  throws(
    () => checkBaselineData(base, { "train:last": H("b") }, { "train:last": [9, ...rows.slice(1)] }),
    /other data/,
  );
  throws(() => checkBaselineData(base, { "train:last": H("b") }), /other data: store train:last/);
  // compareWithBaseline carries the note as a warning.
  const cur = full(cases([0]), undefined, { "train:last": H("b") });
  cur.run.provenance!.dataSketch = { "train:last": near };
  ok(compareWithBaseline(cur, base).warnings.some((w) => w.startsWith("data store train:last")));
});

Deno.test("baseline: missing case, missing metric, new case; claim changes both ways", () => {
  const base = full(cases([0]), [claim("a", "pass"), claim("b", "fail"), claim("c", "pass")]);
  const cur = full(cases([0]), [claim("a", "fail"), claim("b", "pass"), claim("c", "unresolved")]);
  cur.cases = [
    { ...cur.cases[1], ms: [cur.cases[1].ms[0]] },
    { ...syntheticCase({ layer: "11", sae: "topk", expansion: 1 }), provenance: cur.cases[1].provenance },
  ];
  const r = compareWithBaseline(cur, base);
  deepStrictEqual(r.regressions.map((f) => `${f.kind}:${f.caseId}:${f.metric}`).sort(), [
    "claim:a:claim",
    "metric:matryoshka-last-x4-k20:ms_max/inceptionv3",
    "metric:matryoshka-last-x4-k20:ms_mean/inceptionv3",
    "missing-case:matryoshka-last-x1-k20:case",
  ]);
  deepStrictEqual(r.improvements.map(key), ["b:claim"]);
  ok(r.warnings.some((w) => w.includes("topk-11-x1-k20")));
  ok(r.warnings.some((w) => w === "claim c: pass → unresolved"));
});

Deno.test("baseline: loading checks version and schema; wrong types are errors, NaN round-trips", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = full(cases([0, 1]));
    r.cases[0].r2 = NaN; // stored as null, read back as NaN
    await writeReport(dir, r, { formats: ["json"] });
    const b = await loadBaseline(join(dir, "report.json"));
    equal(b.cases.length, 4);
    ok(Number.isNaN(b.cases[0].r2));
    equal(compareWithBaseline(full(cases([0, 1])), b).regressions.length, 0);
    const raw = JSON.parse(await Deno.readTextFile(join(dir, "report.json")));
    const write = async (name: string, obj: unknown) => {
      await Deno.writeTextFile(join(dir, name), typeof obj === "string" ? obj : JSON.stringify(obj));
      return join(dir, name);
    };
    const bad = async (obj: unknown, re: RegExp) => {
      await rejects(
        loadBaseline(await write("x.json", obj)),
        (e) => e instanceof MonobenchError && re.test(e.message),
        String(re),
      );
    };
    await rejects(loadBaseline(join(dir, "nope.json")), /cannot read baseline/);
    await bad("{", /not valid JSON/);
    await bad([], /not a JSON object/);
    await bad({ ...raw, version: 1 }, /report version 1; this monobench reads version 2/);
    await bad({ ...raw, version: 99 }, /report version 99/);
    await bad({ ...raw, version: "2" }, /report version "2"/);
    const wrong = structuredClone(raw);
    wrong.cases[1].r2 = "70";
    await bad(wrong, /\/cases\/1\/r2: expected number or null, got string "70"/);
    const noProv = structuredClone(raw);
    delete noProv.cases[0].provenance;
    await bad(noProv, /\/cases\/0: missing required property "provenance"/);
    const extra = structuredClone(raw);
    extra.cases[0].r2_typo = 1;
    await bad(extra, /\/cases\/0\/r2_typo: unknown property/);
    const noRun = structuredClone(raw);
    delete noRun.run.configHash;
    await bad(noRun, /\/run: missing required property "configHash"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
