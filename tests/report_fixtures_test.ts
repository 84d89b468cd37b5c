import { equal, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { type FixtureRow, loadFixtures, parseFixtureCsv } from "../src/report/fixtures.ts";
import { MonobenchError } from "../src/util/errors.ts";

const rows = await loadFixtures();

function cell(table: string, q: Partial<FixtureRow>): FixtureRow {
  const hits = rows.filter((r) =>
    r.table === table &&
    Object.entries(q).every(([k, v]) => (r as unknown as Record<string, unknown>)[k] === v)
  );
  equal(hits.length, 1, `${table} ${JSON.stringify(q)}: ${hits.length} matches`);
  return hits[0];
}

Deno.test("fixtures: every published table with its row count", () => {
  const counts: Record<string, number> = {};
  for (const r of rows) counts[r.table] = (counts[r.table] ?? 0) + 1;
  const expected: Record<string, number> = {
    "Table 1a": 65,
    "Table 1b": 12,
    "Table A1a": 28,
    "Table A1b": 15,
    "Table A2": 65,
    "Table A3": 65,
    "Table A4": 52,
    "Table A5": 130,
    "Table A6": 130,
    "Table A7": 104,
    "Table A8": 20,
    "Table A9": 65,
    "Table A10": 65,
    "Table A11": 23,
    "Table 2": 12,
    "Table 3": 6,
  };
  for (const [t, n] of Object.entries(expected)) equal(counts[t], n, t);
  equal(Object.keys(counts).length, Object.keys(expected).length);
  for (const r of rows) ok(r.ref.startsWith(r.table + " (camera-ready; arXiv 2504.02821 v3)"), r.ref);
  // every SAE row of the grid tables has K = 20; every No SAE row has no ε/K
  for (const r of rows) {
    if (r.sae === "none") ok(r.expansion === null && r.k === null);
    if (["Table 1a", "Table A2", "Table A9", "Table A10"].includes(r.table) && r.sae !== "none") {
      equal(r.k, 20);
    }
  }
});

Deno.test("fixtures: spot checks against the published tables", () => {
  const clip = "clip-vit-l14-336";
  equal(cell("Table 1a", { sae: "batchtopk", layer: "23", expansion: 1 }).value, 0.73);
  equal(cell("Table 1a", { sae: "matryoshka", layer: "11", expansion: 16 }).value, 0.89);
  equal(cell("Table 1a", { sae: "none", layer: "last" }).value, 0.01);
  equal(cell("Table A5", { metric: "ms_min", sae: "matryoshka", layer: "17", expansion: 64 }).value, -0.14);
  equal(cell("Table A5", { metric: "ms_max", sae: "matryoshka", layer: "22", expansion: 16 }).value, 1.0);
  const a2 = cell("Table A2", { sae: "matryoshka", layer: "last", expansion: 4 });
  equal(a2.value, 0.23);
  equal(a2.std, 0.19);
  equal(a2.similarityEncoder, "dinov2");
  equal(cell("Table A2", { sae: "none", layer: "17" }).std, 0.0004);
  equal(cell("Table A3", { sae: "none", layer: "11" }).value, 0.4837);
  equal(cell("Table A3", { sae: "batchtopk", layer: "17", expansion: 8 }).std, 0.05);
  equal(cell("Table A4", { sae: "batchtopk", layer: "16", expansion: 1 }).value, 0.51);
  equal(cell("Table A6", { metric: "ms_min", sae: "batchtopk", layer: "23", expansion: 64 }).value, 0.08);
  equal(cell("Table A6", { metric: "ms_max", sae: "matryoshka", layer: "17", expansion: 1 }).value, 0.94);
  equal(cell("Table A7", { metric: "ms_max", sae: "matryoshka", layer: "11", expansion: 4 }).value, 0.77);
  equal(cell("Table A7", { metric: "ms_max", sae: "none", layer: "21" }).value, 0.54);
  equal(cell("Table A9", { sae: "batchtopk", layer: "last", expansion: 64 }).value, 79.1);
  equal(cell("Table A9", { sae: "matryoshka", layer: "23", expansion: 1 }).value, 63.9);
  equal(cell("Table A9", { sae: "matryoshka", layer: "last", expansion: 1, model: clip }).value, 66.8);
  equal(cell("Table A10", { sae: "matryoshka", layer: "23", expansion: 64 }).value, 25.1);
  equal(cell("Table A10", { sae: "none", layer: "last" }).value, 768);
  equal(cell("Table A11", { metric: "r2", k: 1 }).value, 31.3);
  equal(cell("Table A11", { metric: "ms_mean", k: 1 }).std, 0.2);
  equal(cell("Table A11", { metric: "ms_min", k: 1 }).value, -0.03);
  equal(cell("Table A11", { metric: "l0", k: 50 }).value, 50.1);
  equal(cell("Table A11", { metric: "r2", k: 20 }).expansion, 1);
  equal(cell("Table 1b", { model: "aimv2-l14-224", expansion: 1 }).value, 0.59);
  equal(cell("Table 1b", { model: "webssl-mae-300m-14-224", expansion: 4 }).value, 0.92);
  equal(cell("Table A1a", { metric: "pairs", condition: "dinov2 MS distance 0.0-0.1" }).value, 177);
  equal(
    cell("Table A1a", {
      metric: "alignment_score",
      similarityEncoder: "clip-vit-b32",
      condition: "dinov2 MS distance 0.2-0.3",
    }).value,
    0.74,
  );
  equal(cell("Table A1b", { metric: "pairs", condition: "clip-vit-b32 MS distance 0.4-0.5" }).value, 95);
  equal(cell("Table A8", { metric: "ms_max", condition: "inat level 3" }).value, 0.69);
  equal(cell("Table A8", { metric: "ms_min", condition: "inat level 4" }).value, -0.05);
  equal(cell("Table 2", { metric: "suppression_unrelated_kept", condition: "method=diffmean" }).value, 38.7);
  equal(cell("Table 2", { metric: "insertion_prompt_followed", condition: "method=sae" }).value, 85.8);
  const t3 = cell("Table 3", { condition: "steering=on; imagenet (1000 images x 10 neurons)" });
  equal(t3.value, 0.263);
  equal(t3.std, 0.037);
});

Deno.test("fixtures: Table 1a equals Table A5's best values", () => {
  const a = rows.filter((r) => r.table === "Table 1a");
  for (const r of a) {
    const b = rows.find((x) =>
      x.table === "Table A5" && x.metric === "ms_max" && x.sae === r.sae && x.layer === r.layer &&
      x.expansion === r.expansion
    );
    ok(b, `${r.sae} ${r.layer} ${r.expansion}`);
    equal(b.value, r.value);
  }
});

Deno.test("fixtures: malformed input names file and line", async () => {
  const H = "table,ref,model,similarity_encoder,metric,sae,layer,expansion,k,condition,value,std,note\n";
  const good = "T,T (x),m,,r2,batchtopk,11,1,20,,70.1,,\n";
  equal(parseFixtureCsv(H + good, "a.csv").length, 1);
  equal(parseFixtureCsv(H + good + good, "a.csv")[1].line, 3);
  throws(
    () => parseFixtureCsv(H + good + "T,T (x),m,,r2,batchtopk,11,1,20,,abc,,\n", "bad.csv"),
    (e) => e instanceof MonobenchError && /bad\.csv:3: column "value": "abc" is not a number/.test(e.message),
  );
  throws(
    () => parseFixtureCsv(H + "T,T (x),m,,r2,batchtopk,11,x1,20,,1,,\n", "bad.csv"),
    (e) => e instanceof MonobenchError && /bad\.csv:2: column "expansion"/.test(e.message),
  );
  throws(
    () => parseFixtureCsv(H + "T,T (x),m,,r2,batchtopk,11,1,20,,,,\n", "bad.csv"),
    (e) => e instanceof MonobenchError && /bad\.csv:2: column "value" is empty/.test(e.message),
  );
  throws(
    () => parseFixtureCsv(H.replace("note", "notes") + good, "cols.csv"),
    (e) => e instanceof MonobenchError && /cols\.csv:1: unknown column "notes"/.test(e.message),
  );
  throws(
    () => parseFixtureCsv(H + good + "T,T (x),m,,r2\n", "short.csv"),
    (e) => e instanceof MonobenchError && /short\.csv:3: malformed CSV/.test(e.message),
  );
  throws(
    () => parseFixtureCsv(H + 'T,"unterminated,m\n', "q.csv"),
    (e) => e instanceof MonobenchError && /q\.csv.*malformed CSV/.test(e.message),
  );
  const dir = await Deno.makeTempDir();
  try {
    await rejects(loadFixtures(join(dir, "nope")), MonobenchError);
    await rejects(loadFixtures(dir), (e) => e instanceof MonobenchError && /no fixture CSV/.test(e.message));
    await Deno.writeTextFile(join(dir, "t.csv"), H + good + "T,T (x),m,,r2,batchtopk,11,1,20,,NaN,,\n");
    await rejects(loadFixtures(dir), (e) => e instanceof MonobenchError && /t\.csv:3/.test(e.message));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
