import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import {
  DEFAULT_TOLERANCES,
  diffAgainstPaper,
  diffCounts,
  loadTolerances,
  mergeTolerances,
  resolveEncoderMap,
} from "../src/report/diff.ts";
import { loadFixtures } from "../src/report/fixtures.ts";
import { paperAsResults, syntheticCase, syntheticLayer, syntheticMs } from "../src/report/synthetic.ts";
import { MonobenchError } from "../src/util/errors.ts";

const fx = await loadFixtures();

Deno.test("diff: the paper's own numbers are all within tolerance, delta 0", () => {
  const { cases, layers } = paperAsResults(fx);
  equal(cases.length, 63);
  const d = diffAgainstPaper(cases, layers, fx);
  deepStrictEqual(d.encoderMap, { dinov2: "dinov2" });
  const n = diffCounts(d);
  equal(n.outside, 0);
  equal(n.missing, 0);
  // 63 cases × (max, min, mean, r2, l0) + 5 layers × (max, min, mean)
  equal(d.rows.length, 63 * 5 + 5 * 3);
  for (const r of d.rows) equal(r.delta, 0);
  // duplicates resolved by table priority: Table 1a (not A5/A11) for the best MS
  const best = d.rows.find((r) => r.caseId === "matryoshka-last-x1-k20" && r.metric === "ms_max")!;
  equal(best.table, "Table 1a");
  const k1 = d.rows.find((r) => r.caseId === "matryoshka-last-x1-k1" && r.metric === "r2")!;
  equal(k1.table, "Table A11");
  equal(k1.paper, 31.3);
  ok(k1.ref.includes("arXiv 2504.02821"));
});

Deno.test("diff: embedded-default source mapping, tolerances, missing", () => {
  const c = syntheticCase({
    layer: "last",
    sae: "matryoshka",
    expansion: 4,
    ms: [syntheticMs("labels", 0.5, 0.99, 0.1), syntheticMs("inceptionv3", 0.26, 0.5, -0.02)],
    r2: 80,
    l0: 19.5,
  });
  const noMs = syntheticCase({ layer: "11", sae: "batchtopk", expansion: 1, ms: [], r2: NaN });
  const user = syntheticCase({
    layer: "last",
    sae: "topk",
    expansion: 4,
    ms: [syntheticMs("inceptionv3", 0.2, 0.5)],
  });
  const raw = syntheticLayer("last", [
    syntheticMs("inceptionv3", 0.05, 0.3, 0),
    syntheticMs("labels", 0.1, 0.2),
  ]);
  const d = diffAgainstPaper([c, noMs, user], [raw], fx);
  deepStrictEqual(d.encoderMap, { dinov2: "inceptionv3" });
  ok(d.note.includes("Informative only"));
  const row = (id: string, metric: string) => d.rows.find((r) => r.caseId === id && r.metric === metric)!;
  // matryoshka-last-x4: paper mean .23 (Table A2), ours .26 → within 0.05
  const mean = row(c.id, "ms_mean");
  equal(mean.table, "Table A2");
  equal(mean.source, "inceptionv3");
  equal(mean.paperEncoder, "dinov2");
  ok(Math.abs(mean.delta! - 0.03) < 1e-9);
  equal(mean.status, "within");
  // best: paper .89, ours .5 → outside 0.15
  equal(row(c.id, "ms_max").status, "outside");
  // R²: paper 74.1, ours 80 → outside 5 points
  equal(row(c.id, "r2").paper, 74.1);
  equal(row(c.id, "r2").status, "outside");
  equal(row(c.id, "l0").status, "within");
  // a case without MS for the mapped source and NaN R² → missing
  equal(row(noMs.id, "ms_mean").status, "missing");
  equal(row(noMs.id, "ms_mean").ours, null);
  equal(row(noMs.id, "r2").status, "missing");
  equal(row(noMs.id, "l0").status, "within");
  // a user SAE has no paper counterpart
  ok(!d.rows.some((r) => r.caseId === user.id));
  // raw neurons: ms rows only, from Table 1a / A5 / A2
  const rawRows = d.rows.filter((r) => r.caseId === "raw-last");
  deepStrictEqual(rawRows.map((r) => r.metric).sort(), ["ms_max", "ms_mean", "ms_min"]);
  // the CLIP-B/32 tables are unused unless mapped
  ok(!d.rows.some((r) => r.paperEncoder === "clip-vit-b32"));

  // explicit map: labels ↔ clip-vit-b32 as well; tolerance override
  const d2 = diffAgainstPaper([c], [raw], fx, {
    encoderMap: { dinov2: "inceptionv3", "clip-vit-b32": "labels" },
    tolerances: { ms_max: 0.5 },
  });
  const clipMean = d2.rows.find((r) =>
    r.caseId === c.id && r.metric === "ms_mean" && r.paperEncoder === "clip-vit-b32"
  )!;
  equal(clipMean.table, "Table A3");
  equal(clipMean.paper, 0.62);
  equal(clipMean.source, "labels");
  equal(d2.tolerances.ms_max, 0.5);
  equal(
    d2.rows.find((r) => r.caseId === c.id && r.metric === "ms_max" && r.paperEncoder === "dinov2")!.status,
    "within",
  );
  // primary source designation
  deepStrictEqual(resolveEncoderMap(["labels", "inceptionv3"], { primarySource: "labels" }), {
    dinov2: "labels",
  });
  deepStrictEqual(resolveEncoderMap(["labels"]), {});
});

Deno.test("diff: tolerance validation and JSON override file", async () => {
  deepStrictEqual(mergeTolerances({}), { ...DEFAULT_TOLERANCES });
  throws(
    () => mergeTolerances({ bogus: 1 } as never),
    (e) => e instanceof MonobenchError && /unknown metric "bogus"/.test(e.message),
  );
  throws(() => mergeTolerances({ r2: -1 }), MonobenchError);
  const dir = await Deno.makeTempDir();
  try {
    const p = join(dir, "tol.json");
    await Deno.writeTextFile(p, JSON.stringify({ ms_mean: 0.2, l0: 3 }));
    deepStrictEqual(await loadTolerances(p), { ms_mean: 0.2, l0: 3 });
    await Deno.writeTextFile(p, "{ms_mean: 0.2");
    await rejects(loadTolerances(p), (e) => e instanceof MonobenchError && /not valid JSON/.test(e.message));
    await Deno.writeTextFile(p, JSON.stringify({ ms_mean: "big" }));
    await rejects(
      loadTolerances(p),
      (e) => e instanceof MonobenchError && /tol\.json.*ms_mean/.test(e.message),
    );
    await rejects(loadTolerances(join(dir, "none.json")), MonobenchError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("diff: seed replicates are averaged, with n and the 95 % t-interval", () => {
  const reps = [74, 75, 79].map((r2, seed) =>
    syntheticCase({
      layer: "last",
      sae: "batchtopk",
      expansion: 4,
      seed,
      r2,
      l0: seed === 1 ? NaN : 19.9,
      ms: [syntheticMs("inceptionv3", 0.2 + seed / 100, 0.8)],
    })
  );
  const d = diffAgainstPaper(reps, [], fx);
  const r2 = d.rows.filter((r) => r.metric === "r2");
  equal(r2.length, 1); // one row per case, not per seed
  equal(r2[0].ours, 76);
  equal(r2[0].n, 3);
  // mean 76, s = √7, t_{0.975,2} = 4.3027 (closed form for df = 2)
  const half = (0.95 / Math.sqrt(2 * 0.975 * 0.025)) * Math.sqrt(7) / Math.sqrt(3);
  ok(Math.abs(r2[0].oursCi95![0] - (76 - half)) < 1e-9 && Math.abs(r2[0].oursCi95![1] - (76 + half)) < 1e-9);
  equal(r2[0].paper, 77.1); // Table A9 Blast ×4
  ok(Math.abs(r2[0].delta! - (76 - 77.1)) < 1e-12);
  const l0 = d.rows.find((r) => r.metric === "l0")!;
  equal(l0.n, 2); // the NaN replicate is left out
  equal(l0.ours, 19.9);
  const ms = d.rows.find((r) => r.metric === "ms_mean")!;
  ok(Math.abs(ms.ours! - 0.21) < 1e-12 && ms.source === "inceptionv3");
  // a single seed: n = 1, no interval
  const one = diffAgainstPaper(reps.slice(0, 1), [], fx).rows.find((r) => r.metric === "r2")!;
  equal(one.n, 1);
  equal(one.oursCi95, undefined);
});
