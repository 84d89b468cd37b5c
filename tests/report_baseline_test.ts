import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { join } from "node:path";
import { compareWithBaseline, formatBaselineSummary, loadBaseline } from "../src/report/baseline.ts";
import { syntheticCase, syntheticLayer, syntheticMs, syntheticReport } from "../src/report/synthetic.ts";
import type { Claim, Report } from "../src/report/types.ts";
import { writeReport } from "../src/report/writers.ts";
import type { CaseResult } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";

function claim(id: string, status: Claim["status"]): Claim {
  return { id, statement: id, ref: "x", status, evidence: "e" };
}

function report(
  tweak: (c: CaseResult) => CaseResult = (c) => c,
  claims = [claim("l0-near-k", "pass")],
): Report {
  const cases = [1, 4].map((eps) =>
    tweak(syntheticCase({
      layer: "last",
      sae: "matryoshka",
      expansion: eps,
      ms: [syntheticMs("labels", 0.3, 0.8), syntheticMs("inceptionv3", 0.2, 0.6)],
      r2: 70,
      l0: 20.5,
      deadFraction: 0.01,
    }))
  );
  return syntheticReport(cases, [syntheticLayer("last", [syntheticMs("labels", 0.1, 0.2)])], { claims });
}

Deno.test("baseline: identical reports have no regression", () => {
  const r = compareWithBaseline(report(), report());
  equal(r.regressions.length, 0);
  equal(r.improvements.length, 0);
  // 2 cases × (2 sources × 2 + r2 + l0 + dead) + 1 claim
  equal(r.compared, 2 * 7 + 1);
  ok(formatBaselineSummary(r).includes("0 regression(s)"));
});

Deno.test("baseline: regressions, improvements and tolerances", () => {
  const base = report();
  const cur = report(
    (c) =>
      c.expansion === 1
        ? {
          ...c,
          ms: [syntheticMs("labels", 0.25, 0.8), syntheticMs("inceptionv3", 0.2, 0.7)], // mean −.05; max +.1
          r2: 69.5, // −0.5: within 1 point
          l0: 23, // |L0−K| 0.5 → 3
          deadFraction: 0.2,
        }
        : { ...c, r2: 72 }, // +2 points
    [claim("l0-near-k", "fail")],
  );
  const r = compareWithBaseline(cur, base);
  const key = (f: { caseId: string; metric: string }) => `${f.caseId}:${f.metric}`;
  deepStrictEqual(r.regressions.map(key).sort(), [
    "l0-near-k:claim",
    "matryoshka-last-x1-k20:dead_fraction",
    "matryoshka-last-x1-k20:l0_drift",
    "matryoshka-last-x1-k20:ms_mean/labels",
  ]);
  deepStrictEqual(r.improvements.map(key).sort(), [
    "matryoshka-last-x1-k20:ms_max/inceptionv3",
    "matryoshka-last-x4-k20:r2",
  ]);
  const ms = r.regressions.find((f) => f.metric === "ms_mean/labels")!;
  ok(Math.abs(ms.delta! + 0.05) < 1e-12);
  const text = formatBaselineSummary(r);
  ok(text.includes("4 regression(s)") && text.includes("MS mean (labels) 0.3000 → 0.2500"), text);
  // looser tolerances absorb the metric regressions
  const loose = compareWithBaseline(cur, base, { msMean: 0.1, l0: 5, deadFraction: 0.5 });
  deepStrictEqual(loose.regressions.map(key), ["l0-near-k:claim"]);
});

Deno.test("baseline: missing case, missing metric, new case, different dataset", () => {
  const base = report();
  const cur = report();
  cur.cases = [
    { ...cur.cases[1], ms: [cur.cases[1].ms[0]] },
    syntheticCase({ layer: "11", sae: "topk", expansion: 1 }),
  ];
  cur.run = { ...cur.run, dataset: "other" };
  const r = compareWithBaseline(cur, base);
  const kinds = r.regressions.map((f) => `${f.kind}:${f.caseId}:${f.metric}`).sort();
  deepStrictEqual(kinds, [
    "metric:matryoshka-last-x4-k20:ms_max/inceptionv3",
    "metric:matryoshka-last-x4-k20:ms_mean/inceptionv3",
    "missing-case:matryoshka-last-x1-k20:case",
  ]);
  ok(r.warnings.some((w) => w.includes("dataset differs")));
  ok(r.warnings.some((w) => w.includes("topk-11-x1-k20")));
});

Deno.test("baseline: load from report.json; missing or malformed → MonobenchError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = report();
    r.cases[0].r2 = NaN; // stored as null, read back as "no number"
    await writeReport(dir, r, { formats: ["json"] });
    const b = await loadBaseline(join(dir, "report.json"));
    equal(b.cases.length, 2);
    equal(b.cases[0].r2, null);
    const cmp = compareWithBaseline(report(), b);
    equal(cmp.regressions.length, 0);
    await rejects(
      loadBaseline(join(dir, "nope.json")),
      (e) => e instanceof MonobenchError && /cannot read baseline/.test(e.message),
    );
    await Deno.writeTextFile(join(dir, "bad.json"), "{");
    await rejects(
      loadBaseline(join(dir, "bad.json")),
      (e) => e instanceof MonobenchError && /not valid JSON/.test(e.message),
    );
    await Deno.writeTextFile(join(dir, "arr.json"), "[]");
    await rejects(loadBaseline(join(dir, "arr.json")), MonobenchError);
    await Deno.writeTextFile(join(dir, "nocases.json"), JSON.stringify({ version: 1, run: {} }));
    await rejects(
      loadBaseline(join(dir, "nocases.json")),
      (e) => e instanceof MonobenchError && /cases/.test(e.message),
    );
    await Deno.writeTextFile(
      join(dir, "badcase.json"),
      JSON.stringify({ version: 1, run: {}, cases: [{ id: 3 }] }),
    );
    await rejects(
      loadBaseline(join(dir, "badcase.json")),
      (e) => e instanceof MonobenchError && /cases\[0\]/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
